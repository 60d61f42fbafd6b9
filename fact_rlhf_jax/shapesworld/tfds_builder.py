"""A tfds array_record builder over a written ShapesWorld, read back with `as_data_source()`
(random access, no TensorFlow needed).

One builder config per conversation file: `sft`, `pretrain`, `preference`, `ppo_prompts`. Each
example holds the record's `id`, `image_file`, the decoded `image` (uint8 [H, W, 3]),
`conversations` (JSON text) and the whole `record` (JSON text, so the preference and PPO fields
travel with it). `load_records` turns examples back into the LLaVA JSON records plus the image.
"""

from __future__ import annotations

import json
from pathlib import Path

import tensorflow_datasets as tfds

CONFIG_FILES = {"sft": "sft.json", "pretrain": "pretrain.json", "preference": "preference.json", "ppo_prompts": "ppo_prompts.json"}


class ShapesWorld(tfds.core.GeneratorBasedBuilder):
    """ShapesWorld conversations with their images (one split, `train`)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "First release."}
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name=name, description=f"ShapesWorld {file}") for name, file in CONFIG_FILES.items()]

    # tfds looks for a checksums file next to the builder's code through `importlib_resources`
    # (a backport that is not a dependency of this project) when the builder lives in a
    # package; this builder downloads nothing, so it has no code path to search.
    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls):
        return None

    def __init__(self, *, world_dir: str | Path, **kwargs):
        self._world_dir = Path(world_dir)
        super().__init__(**kwargs)

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(
            builder=self,
            description="ShapesWorld: procedurally generated shapes with LLaVA-style conversations.",
            features=tfds.features.FeaturesDict(
                {
                    "id": tfds.features.Text(),
                    "image_file": tfds.features.Text(),
                    "image": tfds.features.Image(shape=(None, None, 3), encoding_format="png"),
                    "conversations": tfds.features.Text(),
                    "record": tfds.features.Text(),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples(self._world_dir / CONFIG_FILES[self.builder_config.name])}

    def _generate_examples(self, path: Path):
        records = json.loads(path.read_text())
        for i, rec in enumerate(records):
            for field in ("id", "image", "conversations"):
                if field not in rec:
                    raise ValueError(f"{path}, record {rec.get('id', f'#{i}')!r}: missing field {field!r}")
            image = self._world_dir / "images" / rec["image"]
            yield rec["id"], {
                "id": rec["id"],
                "image_file": rec["image"],
                "image": str(image),
                "conversations": json.dumps(rec["conversations"], ensure_ascii=False),
                "record": json.dumps(rec, ensure_ascii=False),
            }


def prepare(world_dir: str | Path, config: str = "sft", data_dir: str | Path | None = None) -> ShapesWorld:
    """Build (once) the array_record files of one config under `data_dir` (default
    `<world_dir>/tfds`) and return the builder."""
    if config not in CONFIG_FILES:
        raise ValueError(f"ShapesWorld tfds config must be one of {sorted(CONFIG_FILES)}, got {config!r}")
    data_dir = Path(world_dir) / "tfds" if data_dir is None else Path(data_dir)
    builder = ShapesWorld(world_dir=world_dir, config=config, data_dir=str(data_dir), file_format="array_record")
    builder.download_and_prepare()
    return builder


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def load_records(world_dir: str | Path, config: str = "sft", data_dir: str | Path | None = None) -> list[tuple[dict, "object"]]:
    """(LLaVA record, image uint8 [H, W, 3]) for every example of a config, in the order of the
    source file (the array_record files are shuffled by key)."""
    source = prepare(world_dir, config, data_dir).as_data_source()["train"]
    pairs = []
    for i in range(len(source)):
        ex = source[i]
        pairs.append((json.loads(_text(ex["record"])), ex["image"]))
    order = {r["id"]: k for k, r in enumerate(json.loads((Path(world_dir) / CONFIG_FILES[config]).read_text()))}
    pairs.sort(key=lambda p: order[p[0]["id"]])
    return pairs
