"""`ChatModel`: tokenizer + conversation template + image preprocessing + the sampler.

Used by `fact-rlhf generate`, the evaluation harness and notebooks:

    model = ChatModel.load("path/to/llava-hf-dir")          # or a training workdir
    model = ChatModel.load("sft_model", vision_tower="clip-dir", lora="rlhf_lora_adapter_model")  # LLaVA-RLHF
    model.answer(["What is in the image?"], [PIL.Image.open("x.png")], max_new_tokens=64)
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from fact_rlhf_jax import hf, paths, sampling
from fact_rlhf_jax.data import conversation, image as image_lib
from fact_rlhf_jax.models.config import LlavaConfig

log = logging.getLogger(__name__)


class ChatModel:
    """A LLaVA model ready to answer questions about images.

    params: llava params; lora/lora_scale: optional adapters applied on top (never merged in place).
    """

    def __init__(self, cfg: LlavaConfig, params: dict, tokenizer, *, lora: dict | None = None, lora_scale: float = 1.0,
                 pad_to_square: bool = True, batch_size: int = 8, seed: int = 0):
        self.cfg = cfg
        self.params = params
        self.tokenizer = tokenizer
        self.lora = lora
        self.lora_scale = lora_scale
        self.pad_to_square = pad_to_square
        self.batch_size = batch_size
        self._rng = jax.random.key(seed)
        self.eos_id = int(tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 2)
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)

    # ---------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, *, tokenizer: str | Path | None = None, dtype: str | None = None,
             vision_tower: str | Path | None = None, lora: str | Path | None = None, **kwargs: Any) -> "ChatModel":
        """From a llava-hf directory, an original-LLaVA / LLaVA-RLHF directory (+ `vision_tower=` a local CLIP
        directory), or a training workdir. Tokenizer files come from `path` unless `tokenizer=` is given.

        `lora=` a PEFT adapter directory (e.g. LLaVA-RLHF's `rlhf_lora_adapter_model`) is applied on the fly to a
        llava-hf or original-LLaVA base; the base weights stay as they are.
        """
        from transformers import AutoTokenizer

        from fact_rlhf_jax.pretrained import is_workdir

        path = paths.local_or_url(path)
        local = not paths.is_url(path)  # on a bucket: training workdirs only
        if local and hf.is_llava_dir(path):
            cfg, params = hf.import_llava(path, dtype=dtype or "float32")
        elif local and hf.is_original_llava_dir(path):
            cfg, params = hf.import_llava_original(path, vision_tower=vision_tower, dtype=dtype or "float32")
        elif is_workdir(path):
            if lora is not None:
                raise ValueError(f"{path}: lora= applies to llava-hf and original-LLaVA directories; a training "
                                 "workdir brings its own adapters")
            return cls._from_workdir(path, tokenizer, **kwargs)
        else:
            raise FileNotFoundError(f"{path}: neither a llava-hf checkpoint (config.json with vision_config), an "
                                    "original LLaVA checkpoint (config.json with mm_vision_tower) nor a training "
                                    "workdir (model.json or config.json + checkpoints/)")
        tok = AutoTokenizer.from_pretrained(str(tokenizer or path))
        if lora is not None:
            adapters, scale = hf.import_lora(lora, cfg, dtype=dtype or "float32")
            kwargs = dict(kwargs, lora=adapters, lora_scale=scale)
        return cls(cfg, params, tok, **kwargs)

    @classmethod
    def _from_workdir(cls, workdir: Path, tokenizer, **kwargs) -> "ChatModel":
        """A training run's model (its card names the base, adapter and tokenizer; see `pretrained`)."""
        from transformers import AutoTokenizer

        from fact_rlhf_jax import pretrained

        model = pretrained.load(workdir)
        if model.card.kind != "llava":
            raise ValueError(f"{workdir}: a {model.card.kind} model, not a generator; use `fact-rlhf score` for "
                             "reward models")
        tok = AutoTokenizer.from_pretrained(str(tokenizer or model.card.tokenizer))
        return cls(model.cfg, model.params, tok, lora=model.adapter, lora_scale=model.lora_scale, **kwargs)

    # ---------------------------------------------------------------------------------------------
    def encode(self, question: str, has_image: bool, conv_mode: str) -> np.ndarray:
        return conversation.encode_prompt(question, self.tokenizer, has_image=has_image, template=conv_mode,
                                          image_token_id=self.cfg.image_token_id,
                                          num_image_tokens=self.cfg.num_image_tokens)

    def pixels(self, img) -> np.ndarray:
        size = self.cfg.vision.image_size
        if img is None:
            return image_lib.zeros(size)
        return image_lib.preprocess(img, size, pad_to_square=self.pad_to_square)

    def generate_ids(self, questions: Sequence[str], images: Sequence[Any], *, max_new_tokens: int = 64,
                     temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0, conv_mode: str = "llava_v1",
                     stop_ids: Sequence[int] = (), rng: jax.Array | None = None) -> list[list[int]]:
        """Token ids of each answer (stop token excluded), batched `batch_size` at a time.

        `rng`: the key this call draws from (split once per batch); default: the model's own stream."""
        if len(questions) != len(images):
            raise ValueError(f"{len(questions)} questions but {len(images)} images")
        answers: list[list[int]] = []
        for start in range(0, len(questions), self.batch_size):
            qs = questions[start:start + self.batch_size]
            ims = images[start:start + self.batch_size]
            prompts = [self.encode(q, im is not None, conv_mode) for q, im in zip(qs, ims)]
            n = len(prompts)
            rows = self.batch_size  # fixed batch shape: one compile for every chunk
            ids, mask = sampling.left_pad_prompts(prompts, self.pad_id, rows)
            px = np.stack([self.pixels(ims[min(i, n - 1)]) for i in range(rows)])
            if rng is None:
                self._rng, key = jax.random.split(self._rng)
            else:
                rng, key = jax.random.split(rng)
            out = sampling.generate(self.params, self.cfg, ids, mask, px, rng=key, max_new_tokens=max_new_tokens,
                                    temperature=temperature, top_p=top_p, top_k=top_k, eos_id=self.eos_id,
                                    stop_ids=stop_ids, pad_id=self.pad_id, lora=self.lora,
                                    lora_scale=self.lora_scale)
            tokens, lengths = np.asarray(out.tokens), np.asarray(out.lengths)
            stops = {self.eos_id, *stop_ids}
            for i in range(n):
                row = tokens[i, : lengths[i]].tolist()
                if row and row[-1] in stops:
                    row = row[:-1]
                answers.append(row)
        return answers

    def answer(self, questions: Sequence[str], images: Sequence[Any], *, max_new_tokens: int = 64,
               temperature: float = 0.0, top_p: float = 1.0, conv_mode: str = "llava_v1") -> list[str]:
        """Answers each question about its image (None = text only)."""
        ids = self.generate_ids(questions, images, max_new_tokens=max_new_tokens, temperature=temperature,
                                top_p=top_p, conv_mode=conv_mode)
        return [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in ids]
