"""The demo's vision pretraining: the CLIP tower learns which objects an image's captions name.

A real LLaVA starts from a CLIP trained contrastively on 400M image-text pairs; the demo trains its tower from
scratch on a few thousand images, where a language-model loss alone teaches colours long before shapes. This
stage gives the tower what CLIP gives LLaVA, from the same kind of data: every training image's captions
(`image_to_caption.json`) are read by the ShapesWorld annotator into the set of "colour shape" names they
mention, and the tower learns to predict that set (a multi-label tag loss, sigmoid cross-entropy over the
world's 42 colour-shape names, read from the max over patches of the selected hidden layer). The scene graphs
are never read.

Params: {"model": a whole LLaVA tree (only `model/vision` trains), "tags": {"w" [D, 42], "b" [42]}}. The run's
model card points at `model`, so the next stage starts from this workdir with `init.params_from`.

Config (`demo.config.vision_config`): model.preset / overrides (vocab from the tokenizer), data.captions,
data.images, data.tokenizer, data.held_out (image files kept for `eval/...`), batch_size, optim, num_steps.
Metrics: loss (per tag), `precision` / `recall` of the thresholded tags (per predicted / per true tag).
"""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from fact_rlhf_jax.train.stage import LossTerms, Stage

TRAINABLE = ("model/vision/.*", "tags/.*")


def tag_names() -> list[str]:
    from fact_rlhf_jax.shapesworld.scene import COLOURS, SHAPES

    return [f"{c} {s}" for c in COLOURS for s in SHAPES]


def caption_tags(captions: list[str], index: dict[str, int]) -> np.ndarray:
    """Multi-hot float32 [num_tags]: the colour-shape names any of `captions` mentions."""
    from fact_rlhf_jax.shapesworld.annotator import find_mentions

    out = np.zeros(len(index), np.float32)
    for text in captions:
        for m in find_mentions(text):
            if m.colour is not None:
                out[index[f"{m.colour} {m.shape}"]] = 1.0
    return out


class TagBatches:
    """Endless seeded batches of (pixels, tags) over an in-memory image set; the state is the batch count, so a
    resumed run draws the same batches. Epoch e visits the images in `permutation(seed, e)`."""

    def __init__(self, pixels: np.ndarray, tags: np.ndarray, batch_size: int, seed: int):
        self.pixels, self.tags, self.batch_size, self.seed = pixels, tags, batch_size, seed
        self.position = 0

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        n, b = len(self.pixels), self.batch_size
        rows = []
        for k in range(self.position * b, (self.position + 1) * b):
            epoch, offset = divmod(k, n)
            rows.append(np.random.default_rng([self.seed, epoch]).permutation(n)[offset])
        self.position += 1
        return {"pixel_values": self.pixels[rows], "tags": self.tags[rows]}

    def get_state(self):
        return {"position": self.position}

    def set_state(self, state) -> None:
        self.position = int(state["position"])


class VisionTagStage(Stage):
    name = "vision_tags"

    def __init__(self, config: ml_collections.ConfigDict, workdir: str):
        from transformers import AutoTokenizer

        from fact_rlhf_jax import pretrained
        from fact_rlhf_jax.data import image as image_lib
        from fact_rlhf_jax.train.sft import model_config

        self.config = config
        data = config.data
        tokenizer = AutoTokenizer.from_pretrained(data.tokenizer)
        self.model_cfg = model_config(config, tokenizer)
        self.names = tag_names()
        index = {n: i for i, n in enumerate(self.names)}
        captions = json.loads(Path(data.captions).read_text())
        held_out = set(data.get("held_out", ()) or ())
        size = self.model_cfg.vision.image_size

        def load(files):
            from PIL import Image

            pixels = np.stack([image_lib.preprocess(Image.open(Path(data.images) / f).convert("RGB"), size)
                               for f in files]) if files else np.zeros((0, 3, size, size), np.float32)
            return pixels, np.stack([caption_tags(captions[f], index) for f in files]) if files else None

        train_files = sorted(f for f in captions if f not in held_out and not f.startswith("aok_"))
        if not train_files:
            raise ValueError(f"{data.captions}: no captions of training images")
        self.train = load(train_files)
        self.held_out = load(sorted(f for f in held_out if f in captions))
        pretrained.write_card(workdir, pretrained.Card(
            "llava", self.model_cfg, str(Path(data.tokenizer).absolute()), params_path="model",
            extra={"stage": "demo vision pretraining"}))

    # --- model ------------------------------------------------------------------------------------
    def init_params(self, rng):
        from fact_rlhf_jax.models import llava

        width = self.model_cfg.vision.hidden_size
        return {"model": llava.init(self.model_cfg, rng),
                "tags": {"w": jnp.zeros((width, len(self.names)), jnp.float32),
                         "b": jnp.zeros((len(self.names),), jnp.float32)}}

    def param_axes(self):
        from fact_rlhf_jax.models import llava

        return {"model": llava.param_axes(self.model_cfg), "tags": {"w": (None, None), "b": (None,)}}

    def tag_logits(self, params, pixel_values):
        """pixel_values [B, 3, H, W] -> float32 [B, num_tags]."""
        from fact_rlhf_jax.models import clip

        cfg = self.model_cfg
        hidden = clip.forward(params["model"]["vision"], cfg.vision, pixel_values, layer=cfg.vision_feature_layer)
        pooled = jax.nn.gelu(hidden[:, 1:].astype(jnp.float32)).max(axis=1)  # [B, D], CLS dropped as LLaVA does
        return pooled @ params["tags"]["w"] + params["tags"]["b"]

    def loss(self, params, batch, rng) -> LossTerms:
        import optax

        logits = self.tag_logits(params, batch["pixel_values"])
        tags = batch["tags"]
        valid = batch.get("valid", jnp.ones(tags.shape[:1], jnp.float32))[:, None] * jnp.ones_like(tags)
        total = (optax.sigmoid_binary_cross_entropy(logits, tags) * valid).sum()
        predicted = (logits > 0).astype(jnp.float32) * valid
        hits = (predicted * tags).sum()
        return LossTerms(total, valid.sum(), {"precision": (hits, predicted.sum()), "recall": (hits, (tags * valid).sum())})

    # --- data -------------------------------------------------------------------------------------
    def train_data(self, *, process_index, process_count, batch_size, seed):
        if process_count > 1:
            raise ValueError("the demo's vision pretraining runs in one process")
        return TagBatches(*self.train, batch_size, seed)

    def eval_data(self, *, process_index, process_count, batch_size):
        pixels, tags = self.held_out
        if tags is None:
            return None
        return ({"pixel_values": pixels[i:i + batch_size], "tags": tags[i:i + batch_size],
                 "valid": np.ones(len(pixels[i:i + batch_size]), np.float32)} for i in range(0, len(pixels), batch_size))

    def num_train_examples(self):
        return len(self.train[0])

    def count_tokens(self, batch) -> int:
        return 0


def build_stage(config, workdir):
    return VisionTagStage(config, workdir)
