"""Prepared datasets: a tfds array_record builder for LLaVA JSON + images, and its reader.

Works without TensorFlow: the builder writes `array_record` files and the reader uses
`builder.as_data_source()` (random access, numpy/bytes values).

```python
path = prepare(json_path="train.json", image_folder="images/", data_dir="prepared/")
# -> prepared/llava_sft/1.0.0 ; pass `path` (or `prepared/`) as a source to build_sft_loader
```

Each example stores the whole record as JSON text plus the raw bytes of its image file, so
a record that was bad in the JSON is bad (and counted the same way) when read back; a
missing image file is stored with empty bytes and read back as "missing_image".
"""

from __future__ import annotations

import glob
import json
import os

import numpy as np

from fact_rlhf_jax.data import errors, sources
from fact_rlhf_jax.data import image as image_lib

VERSION = "1.0.0"
IMAGE_BYTES_KEY = "__image_bytes__"


def _tfds():
    import tensorflow_datasets as tfds

    return tfds


def _builder_class():
    tfds = _tfds()

    class LlavaSft(tfds.core.GeneratorBasedBuilder):
        """LLaVA-format records (one JSON/JSONL file + an image folder) as array_record."""

        VERSION = tfds.core.Version(VERSION)
        RELEASE_NOTES = {"1.0.0": "LLaVA JSON record + raw image bytes."}
        # Nothing is downloaded. tfds would look for a checksums file next to this module through
        # importlib_resources (not installed); there is none, so skip the lookup.
        code_path = None
        url_infos = None

        def __init__(self, *, json_path: str | None = None, image_folder: str | None = None, **kwargs):
            self._json_path = json_path
            self._image_folder = image_folder
            kwargs.setdefault("file_format", "array_record")
            super().__init__(**kwargs)

        def _info(self):
            return tfds.core.DatasetInfo(
                builder=self,
                description="LLaVA-format conversations with their images (fact_rlhf_jax).",
                features=tfds.features.FeaturesDict({
                    "id": tfds.features.Text(),
                    "record": tfds.features.Text(),  # the whole LLaVA record, JSON
                    "image_bytes": tfds.features.Tensor(shape=(), dtype=np.object_),  # b"" if none / missing
                }),
            )

        def _split_generators(self, dl_manager):
            if self._json_path is None:
                raise ValueError("LlavaSft needs json_path= (and image_folder=) to prepare the dataset")
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            src = sources.LlavaJsonSource(self._json_path, self._image_folder)
            for i, raw in enumerate(src._records):
                if src._lines:
                    text = raw.strip()
                    try:
                        rec = json.loads(text)
                    except json.JSONDecodeError:
                        rec = None
                else:
                    rec, text = raw, json.dumps(raw, ensure_ascii=False)
                rid = rec.get("id") if isinstance(rec, dict) else None
                data = b""
                if isinstance(rec, dict) and isinstance(rec.get("image"), str) and rec["image"]:
                    path = src.image_path(rec)
                    if os.path.isfile(path):
                        with open(path, "rb") as f:
                            data = f.read()
                yield i, {"id": str(rid) if rid is not None else f"#{i}", "record": text, "image_bytes": data}

    return LlavaSft


_BUILDER = None


def builder_class():
    """The `tfds.core.GeneratorBasedBuilder` subclass (dataset name "llava_sft"), created once."""
    global _BUILDER
    if _BUILDER is None:
        _BUILDER = _builder_class()
    return _BUILDER


def prepare(json_path: str, image_folder: str | None, data_dir: str) -> str:
    """Packs a LLaVA JSON/JSONL file + image folder into `data_dir`; returns the prepared dataset dir."""
    builder = builder_class()(json_path=json_path, image_folder=image_folder, data_dir=data_dir)
    builder.download_and_prepare()
    return str(builder.data_dir)


def find_prepared_dir(path: str) -> str | None:
    """`path` itself if it holds dataset_info.json, else the newest `<path>/llava_sft/<version>`."""
    if os.path.isfile(os.path.join(path, "dataset_info.json")):
        return path
    found = sorted(glob.glob(os.path.join(path, "*", "*", "dataset_info.json")))
    return os.path.dirname(found[-1]) if found else None


class TfdsSource:
    """Record source over a prepared dataset (same interface as `sources.LlavaJsonSource`)."""

    def __init__(self, path: str, split: str = "train"):
        self.path = path
        builder = _tfds().builder_from_directory(path)
        self._data = builder.as_data_source(split=split)

    def __len__(self) -> int:
        return len(self._data)

    def record(self, i: int) -> dict:
        ex = self._data[i]
        text = ex["record"].decode("utf-8") if isinstance(ex["record"], bytes) else str(ex["record"])
        try:
            rec = json.loads(text)
        except json.JSONDecodeError as e:
            rid = ex["id"].decode("utf-8") if isinstance(ex["id"], bytes) else str(ex["id"])
            raise errors.BadRecordError(self.path, rid, "<record>", errors.BAD_JSON, f"invalid JSON: {e}") from None
        rec = sources.validate_record(self.path, i, rec)
        rec[IMAGE_BYTES_KEY] = bytes(ex["image_bytes"])
        return rec

    def record_id(self, i: int, rec: dict) -> str:
        rid = rec.get("id")
        return str(rid) if rid is not None else f"#{i}"

    @staticmethod
    def has_image(rec: dict) -> bool:
        return bool(rec.get("image"))

    def load_image(self, rec: dict):
        data = rec.get(IMAGE_BYTES_KEY, b"")
        if not data:
            raise errors.BadRecordError(None, None, "image", errors.MISSING_IMAGE,
                                        f"image {rec.get('image')!r} was missing when the dataset was prepared")
        return image_lib.load_image(path=rec.get("image"), data=data)
