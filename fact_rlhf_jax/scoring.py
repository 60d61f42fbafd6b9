"""`RewardModel`: tokenizer + reward prompt + facts + images + the jitted scoring function.

    rm = RewardModel.load("runs/rm")                       # a reward-model workdir (its model.json)
    rm.score([record, ...], [PIL image or None, ...])      # -> [float, ...]

A record is LLaVA-shaped: `conversations` whose last `gpt` turn is the response to score, optional `captions`
(the facts a Fact-RM is given; otherwise looked up in the model's `image_to_caption.json` by `image`). The
scores come from `models.reward.scores`, the function the reward-model stage trains and PPO calls.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

from fact_rlhf_jax import sampling
from fact_rlhf_jax.data import errors, image as image_lib, reward_input
from fact_rlhf_jax.models import reward
from fact_rlhf_jax.models.config import LlavaConfig


@functools.partial(jax.jit, static_argnames=("cfg",))
def _scores(base, adapter, head, input_ids, pixel_values, attention_mask, lora_scale, *, cfg: LlavaConfig):
    return reward.scores(base, cfg, input_ids, pixel_values, attention_mask, adapter=adapter, head=head,
                         lora_scale=lora_scale)


class RewardModel:
    """A reward model ready to score responses (see the module docstring)."""

    def __init__(self, cfg: LlavaConfig, base: dict, adapter: dict | None, head: dict, tokenizer, *,
                 lora_scale: float, prompt: str = "fact_rlhf", captions: Mapping | None = None,
                 conv_template: str = "vicuna_v1", max_text_length: int = 2048, batch_size: int = 8,
                 pad_to_square: bool = True):
        self.cfg = cfg
        self.base, self.adapter, self.head = base, adapter, head
        self.tokenizer = tokenizer
        self.lora_scale = float(lora_scale)
        self.template_text = reward_input.load_instruction(prompt)
        self.factual = reward_input.is_factual(self.template_text)
        self.captions = captions
        self.conv_template = conv_template
        self.max_length = int(max_text_length) - 1 + cfg.num_image_tokens
        self.batch_size = batch_size
        self.pad_to_square = pad_to_square
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)

    @classmethod
    def load(cls, path: str | Path, *, tokenizer: str | None = None, captions: str | None = None,
             **kwargs: Any) -> "RewardModel":
        """From a reward-model training workdir (its model card names the base, adapter, head and prompt)."""
        from transformers import AutoTokenizer

        from fact_rlhf_jax import pretrained
        from fact_rlhf_jax.data.preference import load_captions

        model = pretrained.load(path)
        if model.card.kind != "reward":
            raise ValueError(f"{path}: a {model.card.kind} model, not a reward model")
        extra = model.card.extra
        tok = AutoTokenizer.from_pretrained(str(tokenizer or model.card.tokenizer))
        return cls(model.cfg, model.params, model.adapter, model.head, tok, lora_scale=model.lora_scale,
                   prompt=extra.get("prompt", "fact_rlhf"), captions=load_captions(captions or extra.get("captions")),
                   conv_template=extra.get("conv_template", "vicuna_v1"),
                   max_text_length=int(extra.get("max_text_length", 2048)), **kwargs)

    @classmethod
    def from_released(cls, base: str | Path, adapter: str | Path, head: str | Path, *, vision_tower: str | None = None,
                      tokenizer: str | None = None, prompt: str = "fact_rlhf", captions: str | None = None,
                      **kwargs: Any) -> "RewardModel":
        """The released LLaVA-RLHF reward model: `base` (the SFT model, llava-hf or original layout), `adapter` (a
        PEFT directory such as `rm_lora_adapter_model`) and `head` (its `reward_head` file)."""
        from transformers import AutoTokenizer

        from fact_rlhf_jax import hf, pretrained
        from fact_rlhf_jax.data.preference import load_captions

        source = {"path": str(base), "vision_tower": vision_tower} if vision_tower else str(base)
        model = pretrained.load(source)
        adapters, scale = hf.import_lora(adapter, model.cfg)
        tok = AutoTokenizer.from_pretrained(str(tokenizer or model.card.tokenizer))
        return cls(model.cfg, model.merged_params(), adapters, hf.import_scalar_head(head), tok, lora_scale=scale,
                   prompt=prompt, captions=load_captions(captions), **kwargs)

    def input_ids(self, record: Mapping, rng: np.random.Generator | None = None, *,
                  facts: list[str] | None = None) -> np.ndarray:
        """int32 [T]: the reward input of `record` (its last gpt turn is the response). Raises `BadRecordError`.

        `facts`: the facts to give a Fact-RM (e.g. a PPO prompt's, `data.prompts.prompt_facts`) instead of the
        record's own `captions` or the model's entry for its `image`."""
        convo = record.get("conversations")
        if not isinstance(convo, list) or not convo or not isinstance(convo[-1], Mapping):
            raise errors.BadRecordError(None, None, "conversations", errors.BAD_JSON, "expected a list of turns")
        if not self.factual:
            facts = None
        elif facts is None:
            facts = reward_input.facts_for(record, self.captions)
        return reward_input.build(record, convo[-1].get("value"), self.template_text, self.tokenizer,
                                  has_image=bool(record.get("image")), image_token_id=self.cfg.image_token_id,
                                  num_image_tokens=self.cfg.num_image_tokens, facts=facts, rng=rng,
                                  conv_template=self.conv_template, max_length=self.max_length)

    def score_ids(self, ids: Sequence[np.ndarray], images: Sequence[Any]) -> list[float]:
        """Scores of prepared reward inputs, `batch_size` at a time (fixed batch shape, length buckets)."""
        out: list[float] = []
        size = self.cfg.vision.image_size
        for start in range(0, len(ids), self.batch_size):
            chunk, ims = ids[start:start + self.batch_size], images[start:start + self.batch_size]
            x, mask = sampling.left_pad_prompts([list(r) for r in chunk], self.pad_id, self.batch_size)
            x, mask = sampling.left_pad(x, mask, sampling.bucket_length(x.shape[1]), self.pad_id)
            px = np.stack([image_lib.zeros(size) if im is None else
                           image_lib.preprocess(im, size, pad_to_square=self.pad_to_square)
                           for im in [ims[min(i, len(ims) - 1)] for i in range(self.batch_size)]])
            scores = _scores(self.base, self.adapter, self.head, x, px, mask, np.float32(self.lora_scale),
                             cfg=self.cfg)
            out.extend(float(s) for s in np.asarray(scores)[: len(chunk)])
        return out

    def score(self, records: Sequence[Mapping], images: Sequence[Any], *, seed: int = 0) -> list[float]:
        """One score per record; facts are shuffled with a generator seeded by (seed, record index)."""
        ids = [self.input_ids(r, np.random.default_rng([seed, i])) for i, r in enumerate(records)]
        return self.score_ids(ids, images)
