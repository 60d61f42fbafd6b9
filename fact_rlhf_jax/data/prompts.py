"""PPO prompts (`llava_ppo50k-aokvqa12k-vqa10k.json`, ShapesWorld's `ppo_prompts.json`) as rollout batches.

A record: {"id", "image", "conversations": [{"from": "human", "value": "<image>\\n..."}, {"from": "gpt", ...}],
"captions": [...], "caption_type": 1..7, "length_bonus": float}. Only the first human turn is asked (the paper:
first turns only); `caption_type` says which answer earns the symbolic bonus (1 general, 2-5 options A-D,
6 "no", 7 "yes") and which facts the reward model gets (2-5: the `aok_<image>` entry of `image_to_caption.json`,
else `<image>`; a record's own `captions` when the file has no entry); `length_bonus` multiplies the length term
(default 1.0). Prompts longer than `query_len` text tokens (the image counted as one) are skipped as `too_long`.

Batch (host-local, B prompts), every length fixed so one compiled rollout serves the whole run:
  query_ids, query_mask           int32 [B, P]  policy prompt, left-padded (P = query_len - 1 + policy image tokens)
  pixel_values                    float32 [B, 3, S, S]  policy image
  reward_query_ids, reward_query_mask  int32 [B, Pr]  the same prompt with the reward model's image block
  reward_pixel_values             float32 [B, 3, Sr, Sr]
  instruction_ids, instruction_mask    int32 [B, I]  " " + the evaluation instruction (facts shuffled with a
                                  generator seeded by the stream position), right-padded
  caption_type int32 [B], length_bonus float32 [B], valid int32 [B] (0: filler)
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from fact_rlhf_jax.data import conversation, errors, image as image_lib, pipeline, reward_input
from fact_rlhf_jax.models.config import LlavaConfig

CAPTION_TYPES = range(1, 8)
MULTIPLE_CHOICE_TYPES = (2, 3, 4, 5)


def first_question(record: Mapping) -> str:
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns or not isinstance(turns[0], Mapping) or turns[0].get("from") != "human":
        raise errors.BadRecordError(None, None, "conversations[0]", errors.BAD_JSON, "expected a first human turn")
    value = turns[0].get("value")
    if not isinstance(value, str) or not value.replace(conversation.IMAGE_PLACEHOLDER, "").strip():
        raise errors.BadRecordError(None, None, "conversations[0].value", errors.EMPTY_TEXT, "the question is empty")
    return value


def caption_type(record: Mapping) -> int:
    value = record.get("caption_type", 1)
    if isinstance(value, bool) or value not in CAPTION_TYPES:
        raise errors.BadRecordError(None, None, "caption_type", errors.BAD_LABEL, f"expected 1-7, got {value!r}")
    return int(value)


def length_bonus(record: Mapping) -> float:
    value = record.get("length_bonus", 1.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise errors.BadRecordError(None, None, "length_bonus", errors.BAD_LABEL, f"expected a number, got {value!r}")
    return float(value)


def prompt_facts(record: Mapping, captions: Mapping | None, ctype: int) -> list[str] | None:
    """The facts the reward model gets for a prompt (see the module docstring)."""
    image = record.get("image") or ""
    key = ("aok_" + image) if ctype in MULTIPLE_CHOICE_TYPES else image
    if captions is not None and key in captions:
        return list(captions[key])
    return reward_input.facts_for(record, None)


class PromptExamples:
    """(position, source, index) -> one prompt's arrays (unpadded)."""

    def __init__(self, sources, tokenizer, *, policy_cfg: LlavaConfig, reward_cfg: LlavaConfig, template_text: str,
                 captions: Mapping | None, query_len: int, instruction_length: int, conv_template: str, seed: int,
                 pad_to_square: bool):
        self.sources, self.tokenizer = sources, tokenizer
        self.instruction_length = instruction_length
        self.policy_cfg, self.reward_cfg = policy_cfg, reward_cfg
        self.template_text, self.captions = template_text, captions
        self.query_len, self.conv_template, self.seed = query_len, conv_template, seed
        self.pad_to_square = pad_to_square

    def prepare(self, position: int, s: int, i: int) -> dict:
        rng = np.random.default_rng([self.seed, position])
        return pipeline.with_record(self.sources[s], i, lambda src, rec: self._prepare(src, rec, rng))

    def _query(self, question: str, has_image: bool, cfg: LlavaConfig) -> np.ndarray:
        return conversation.encode_prompt(question, self.tokenizer, has_image=has_image, template=self.conv_template,
                                          image_token_id=cfg.image_token_id, num_image_tokens=cfg.num_image_tokens)

    def _prepare(self, src, rec, rng) -> dict:
        question = first_question(rec)
        ctype, bonus = caption_type(rec), length_bonus(rec)
        has_image = src.has_image(rec)
        query = self._query(question, has_image, self.policy_cfg)
        text_tokens = len(query) - (self.policy_cfg.num_image_tokens - 1 if has_image else 0)
        if text_tokens > self.query_len:
            raise errors.BadRecordError(None, None, "conversations[0].value", errors.TOO_LONG,
                                        f"the prompt has {text_tokens} tokens > query_len {self.query_len}")
        facts = prompt_facts(rec, self.captions, ctype) if reward_input.is_factual(self.template_text) else None
        if facts:
            facts = reward_input.shuffled(facts, rng)
        instruction = reward_input.encode_after_special(
            self.tokenizer, " " + reward_input.instruction(self.template_text, facts))
        if len(instruction) > self.instruction_length:
            raise errors.BadRecordError(None, None, "captions", errors.TOO_LONG,
                                        f"the reward instruction has {len(instruction)} tokens > "
                                        f"data.instruction_length {self.instruction_length}")
        same_image = (self.reward_cfg.vision.image_size == self.policy_cfg.vision.image_size)
        pixels = pipeline.record_pixels(src, rec, self.policy_cfg.vision.image_size, self.pad_to_square)
        return {
            "query_ids": query,
            "reward_query_ids": self._query(question, has_image, self.reward_cfg),
            "pixel_values": pixels,
            "reward_pixel_values": pixels if same_image else pipeline.record_pixels(
                src, rec, self.reward_cfg.vision.image_size, self.pad_to_square),
            "instruction_ids": np.asarray(instruction, np.int32),
            "caption_type": np.int32(ctype),
            "length_bonus": np.float32(bonus),
            "valid": np.int32(1),
        }


def _stack_padded(rows, length: int, pad_id: int, side: str):
    ids = np.stack([pipeline.pad_to(np.asarray(r, np.int32), length, pad_id, side) for r in rows])
    mask = np.stack([pipeline.pad_to(np.ones(len(r), np.int32), length, 0, side) for r in rows])
    return ids.astype(np.int32), mask.astype(np.int32)


def collate_prompts(examples, *, query_length: int, reward_query_length: int, instruction_length: int,
                    pad_id: int) -> dict[str, np.ndarray]:
    q, qm = _stack_padded([e["query_ids"] for e in examples], query_length, pad_id, "left")
    rq, rqm = _stack_padded([e["reward_query_ids"] for e in examples], reward_query_length, pad_id, "left")
    ins, insm = _stack_padded([e["instruction_ids"] for e in examples], instruction_length, pad_id, "right")
    return {
        "query_ids": q, "query_mask": qm, "pixel_values": np.stack([e["pixel_values"] for e in examples]),
        "reward_query_ids": rq, "reward_query_mask": rqm,
        "reward_pixel_values": np.stack([e["reward_pixel_values"] for e in examples]),
        "instruction_ids": ins, "instruction_mask": insm,
        "caption_type": np.asarray([e["caption_type"] for e in examples], np.int32),
        "length_bonus": np.asarray([e["length_bonus"] for e in examples], np.float32),
        "valid": np.asarray([e["valid"] for e in examples], np.int32),
    }


def query_length(cfg: LlavaConfig, query_len: int) -> int:
    """Padded prompt length: `query_len` text tokens with the image counted as one."""
    return query_len - 1 + cfg.num_image_tokens


def filler_prompt(policy_cfg: LlavaConfig, reward_cfg: LlavaConfig, pad_id: int) -> dict:
    """The example that pads a short final batch (valid 0)."""
    return {"query_ids": np.full((1,), pad_id, np.int32), "reward_query_ids": np.full((1,), pad_id, np.int32),
            "pixel_values": image_lib.zeros(policy_cfg.vision.image_size),
            "reward_pixel_values": image_lib.zeros(reward_cfg.vision.image_size),
            "instruction_ids": np.full((1,), pad_id, np.int32), "caption_type": np.int32(1),
            "length_bonus": np.float32(0.0), "valid": np.int32(0)}


def build_prompt_loader(sources, tokenizer, *, policy_cfg: LlavaConfig, reward_cfg: LlavaConfig, template_text: str,
                        captions: Mapping | None, query_len: int, instruction_length: int, global_batch_size: int,
                        seed: int, conv_template: str = "vicuna_v1", shuffle: bool = True,
                        num_epochs: int | None = None, strict: bool = False, process_index: int = 0,
                        process_count: int = 1, pad_to_square: bool = True, read_threads: int = 8) -> pipeline.Loader:
    """Rollout batches of PPO prompts (see the module docstring). An instruction longer than
    `instruction_length` tokens is a `too_long` bad record."""
    pad_id = pipeline.resolve_pad_id(tokenizer)
    lengths = dict(query_length=query_length(policy_cfg, query_len),
                   reward_query_length=query_length(reward_cfg, query_len), instruction_length=instruction_length)

    def make_prepare(opened):
        return PromptExamples(opened, tokenizer, policy_cfg=policy_cfg, reward_cfg=reward_cfg,
                              template_text=template_text, captions=captions, query_len=query_len,
                              instruction_length=instruction_length, conv_template=conv_template, seed=seed,
                              pad_to_square=pad_to_square).prepare

    return pipeline.build_loader(
        sources, make_prepare=make_prepare, collate=lambda ex: collate_prompts(ex, pad_id=pad_id, **lengths),
        filler=lambda: filler_prompt(policy_cfg, reward_cfg, pad_id), global_batch_size=global_batch_size, seed=seed, shuffle=shuffle, num_epochs=num_epochs,
        process_index=process_index, process_count=process_count, read_threads=read_threads, max_length=None,
        buckets=(), pad_id=pad_id, pad_side="left", strict=strict)
