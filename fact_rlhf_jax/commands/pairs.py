"""`fact-rlhf pairs`: on-policy preference pairs for DPO, labelled by a reward model.

  fact-rlhf pairs --policy P --reward RM --prompts PPO.json --samples K --out PREFS.json [--image-folder D]

Samples K responses per prompt with the policy (a training workdir, llava-hf or original-LLaVA directory),
scores them with the reward-model workdir RM, and writes the best and the worst of each prompt as a
preference record (`output_1`, `output_2`, `preference`, `reward_1`, `reward_2`) to PREFS.json, the format
`fact-rlhf train --config configs/dpo/...` reads. Rerunning continues where a run stopped. Round r of
iterative DPO: pairs from the round r-1 policy, then DPO starting from it (`--config.init.model`).
Details: `fact_rlhf_jax/pairs.py`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", required=True, help="policy: training workdir, llava-hf or original-LLaVA dir")
    p.add_argument("--vision-tower", default=None, help="local CLIP dir for an original-LLaVA --policy")
    p.add_argument("--lora", default=None, help="PEFT LoRA adapter applied to a llava-hf / original-LLaVA --policy")
    p.add_argument("--reward", required=True, help="reward-model training workdir")
    p.add_argument("--captions", default=None, help="image_to_caption.json (default: the reward model's)")
    p.add_argument("--prompts", required=True, help="PPO prompt JSON / JSONL (conversations, captions, caption_type)")
    p.add_argument("--image-folder", default="", help="folder the prompts' `image` fields are relative to")
    p.add_argument("--samples", type=int, required=True, help="responses sampled per prompt (K >= 2)")
    p.add_argument("--out", required=True, help="preference JSON to write (progress in OUT.progress.jsonl)")
    p.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (PPO's rollouts: 1.0)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=896, help="response length limit (PPO's: 896)")
    p.add_argument("--conv-mode", default="vicuna_v1", choices=("vicuna_v1", "llava_v1"),
                   help="prompt template; vicuna_v1 is what the SFT, reward and DPO stages train with")
    p.add_argument("--batch-size", type=int, default=8, help="sampler and reward-model rows per call")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=0, help="only the first N prompts (0: all)")
    p.add_argument("--min-margin", type=float, default=0.0,
                   help="keep a pair only when best - worst reward exceeds this")
    p.add_argument("--keep-truncated", action="store_true",
                   help="also pair responses that hit --max-new-tokens without stopping")
    p.add_argument("--strict", action="store_true", help="stop at the first unusable prompt record")


def run(args: argparse.Namespace) -> int:
    from fact_rlhf_jax.inference import ChatModel
    from fact_rlhf_jax.pairs import PairSettings, make_pairs, reward_model_scorer
    from fact_rlhf_jax.scoring import RewardModel

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.samples < 2:
        raise SystemExit(f"--samples {args.samples}: a pair needs at least 2 samples per prompt")
    settings = PairSettings(samples=args.samples, temperature=args.temperature, top_p=args.top_p,
                            max_new_tokens=args.max_new_tokens, conv_mode=args.conv_mode, seed=args.seed,
                            keep_truncated=args.keep_truncated, min_margin=args.min_margin, limit=args.limit,
                            strict=args.strict)
    chat = ChatModel.load(args.policy, vision_tower=args.vision_tower, lora=args.lora, batch_size=args.batch_size,
                          seed=args.seed)
    reward_model = RewardModel.load(args.reward, captions=args.captions, batch_size=args.batch_size)
    summary = make_pairs(chat, reward_model_scorer(reward_model), args.prompts, args.out, settings, image_folder=args.image_folder)
    print(f"{summary['pairs']} pairs from {summary['prompts']} prompts ({summary['new']} new) -> {args.out}; "
          f"no pair: {json.dumps(summary['skipped'])}", file=sys.stderr)
    return 0
