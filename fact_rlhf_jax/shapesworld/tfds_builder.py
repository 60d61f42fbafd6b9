"""ShapesWorld through the project's generic tfds array_record builder
(`fact_rlhf_jax.data.tfds_data`, dataset "llava_sft"): one prepared dataset per conversation file
(`sft`, `pretrain`, `preference`, `ppo_prompts`) under `<world_dir>/tfds/<config>/`, read back with
`as_data_source()` (no TensorFlow needed) through the same record source the input pipeline uses.
Each example keeps the whole record (preference and PPO fields included) and the PNG bytes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CONFIG_FILES = {"sft": "sft.json", "pretrain": "pretrain.json", "preference": "preference.json", "ppo_prompts": "ppo_prompts.json"}


def prepare(world_dir: str | Path, config: str = "sft", data_dir: str | Path | None = None) -> str:
    """Build (once) the array_record dataset of one config; returns the prepared dataset dir (a
    valid `path` for the data loader's sources). `data_dir` defaults to `<world_dir>/tfds/<config>`."""
    from fact_rlhf_jax.data import tfds_data

    if config not in CONFIG_FILES:
        raise ValueError(f"ShapesWorld tfds config must be one of {sorted(CONFIG_FILES)}, got {config!r}")
    world = Path(world_dir)
    data_dir = world / "tfds" / config if data_dir is None else Path(data_dir)
    return tfds_data.prepare(json_path=str(world / CONFIG_FILES[config]), image_folder=str(world / "images"), data_dir=str(data_dir))


def load_records(world_dir: str | Path, config: str = "sft", data_dir: str | Path | None = None) -> list[tuple[dict, np.ndarray]]:
    """(LLaVA record, image uint8 [H, W, 3]) for every example of a config, read through
    `data.sources.open_source` from the prepared dataset, in the order of the source file."""
    from fact_rlhf_jax.data import sources, tfds_data

    source = sources.open_source(sources.SourceSpec(prepare(world_dir, config, data_dir)))
    out = []
    for i in range(len(source)):
        rec = source.record(i)
        image = np.asarray(source.load_image(rec).convert("RGB"))
        rec = {k: v for k, v in rec.items() if k != tfds_data.IMAGE_BYTES_KEY}
        out.append((rec, image))
    return out
