"""`fact-rlhf shapesworld --out DIR [--images N --seed S --noise P]`: write the ShapesWorld data sets."""

from __future__ import annotations

import argparse
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="output directory (created if missing)")
    parser.add_argument("--images", type=int, default=1000, help="number of training images (default 1000)")
    parser.add_argument("--eval-images", type=int, default=None, help="held-out images for POPE/MMHal (default max(8, images/4))")
    parser.add_argument("--seed", type=int, default=0, help="world seed; the same seed writes byte-identical files")
    parser.add_argument("--noise", type=float, default=0.1, help="share of SFT descriptions with an invented object (default 0.1)")
    parser.add_argument("--label-noise", type=float, default=None, help="share of flipped preference labels (default: --noise)")
    parser.add_argument("--image-size", type=int, default=64, help="image side in pixels (default 64)")
    parser.add_argument("--tfds", action="store_true", help="also build the tfds array_record datasets under OUT/tfds")
    parser.add_argument("--vocab-size", type=int, default=2048, help="tokenizer pieces, specials and bytes included (default 2048)")


def run(args: argparse.Namespace) -> int:
    from fact_rlhf_jax.shapesworld import write_world

    paths = write_world(
        args.out,
        num_images=args.images,
        seed=args.seed,
        noise=args.noise,
        image_size=args.image_size,
        num_eval_images=args.eval_images,
        label_noise=args.label_noise,
        vocab_size=args.vocab_size,
    )
    if args.tfds:
        from fact_rlhf_jax.shapesworld.tfds_builder import CONFIG_FILES, prepare

        for config in CONFIG_FILES:
            prepare(args.out, config)
    world = json.loads(paths["world"].read_text())
    print(f"ShapesWorld written to {args.out}")
    for name, count in world["counts"].items():
        print(f"  {name}: {count}")
    return 0
