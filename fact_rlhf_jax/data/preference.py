"""Preference pairs (the LLaVA-RLHF human-preference JSON) as reward-model batches.

A record (`llava_7b_v1_preference.json`, ShapesWorld's `preference.json`):
  {"id", "image", "conversations": [... last turn {"from": "gpt", ...}],
   "output_1": {"value": str}, "output_2": {"value": str}, "preference": 1 | 2, "hallucination": ...}
`preference` 1 means output_1 is better. Each output replaces the last assistant turn and becomes one reward
input (`data.reward_input`), with the image's facts shuffled afresh for each.

Batch (host-local, B pairs, left-padded like the reference):
  input_ids int32 [B, 2, T], attention_mask int32 [B, 2, T]  (index 0: output_1, 1: output_2)
  pixel_values float32 [B, 3, S, S], choice int32 [B] (1 when output_2 is preferred), valid int32 [B]
  (0 for rows that only fill the last eval batch).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

import numpy as np

from fact_rlhf_jax.data import errors, image as image_lib, pipeline, reward_input

OUTPUT_KEYS = ("output_1", "output_2")


def load_captions(path: str | None) -> dict[str, list[str]] | None:
    """`image_to_caption.json`: {image file (or "aok_" + file): [facts, ...]}."""
    if not path:
        return None
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object mapping image file names to lists of captions")
    return data


def split_rows(num_records: int, eval_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded held-out split of one source's records: (train rows, eval rows), each int64 [N, 2] of
    (source 0, record index). (The reference splits 500 pairs with seed 42 through torch's random_split; the
    sizes and seed carry over, the permutation is numpy's.)"""
    if not 0 <= eval_size < num_records:
        raise ValueError(f"eval_size {eval_size} must be in [0, {num_records}) for {num_records} records")
    order = np.random.default_rng(seed).permutation(num_records)
    rows = lambda idx: np.stack([np.zeros_like(idx), np.sort(idx)], axis=1).astype(np.int64)
    return rows(order[: num_records - eval_size]), rows(order[num_records - eval_size:])


def held_out_split(train_sources: Sequence, eval_sources: Sequence, eval_size: int,
                   seed: int) -> tuple[np.ndarray | None, np.ndarray | None, list]:
    """(train rows, eval rows, eval sources): named eval sources as they are; else, with `eval_size` > 0,
    `eval_size` records of the (single) training source held out by `split_rows`; else no eval split."""
    if eval_sources or eval_size <= 0:
        return None, None, list(eval_sources)
    if len(train_sources) != 1:
        raise ValueError("data.eval_size splits one preference file; with several, name data.eval")
    from fact_rlhf_jax.data.sources import open_source, parse_sources

    n = len(open_source(parse_sources(train_sources)[0]))
    train_rows, eval_rows = split_rows(n, int(eval_size), int(seed))
    return train_rows, eval_rows, list(train_sources)


def preference_choice(record: Mapping) -> int:
    """0 when output_1 is preferred, 1 when output_2 is (the reference's `{1: 0, 2: 1}[preference]`)."""
    pref = record.get("preference")
    if isinstance(pref, bool) or pref not in (1, 2):
        raise errors.BadRecordError(None, None, "preference", errors.BAD_LABEL, f"expected 1 or 2, got {pref!r}")
    return int(pref) - 1


def output_text(record: Mapping, key: str) -> str:
    out = record.get(key)
    if not isinstance(out, Mapping) or not isinstance(out.get("value"), str):
        raise errors.BadRecordError(None, None, key, errors.BAD_JSON, 'expected {"value": <string>}')
    return out["value"]


class PreferenceExamples:
    """(position, source, index) -> one pair's reward inputs, choice and image."""

    def __init__(self, sources, tokenizer, *, template_text: str, captions: Mapping | None, image_token_id: int,
                 num_image_tokens: int, image_size: int, max_length: int, seed: int, pad_to_square: bool = True):
        self.sources = sources
        self.tokenizer = tokenizer
        self.template_text = template_text
        self.captions = captions
        self.image_token_id = image_token_id
        self.num_image_tokens = num_image_tokens
        self.image_size = image_size
        self.max_length = max_length
        self.seed = seed
        self.pad_to_square = pad_to_square

    def prepare(self, position: int, s: int, i: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng([self.seed, position])
        return pipeline.with_record(self.sources[s], i, lambda src, rec: self._prepare(src, rec, rng))

    def _prepare(self, src, rec, rng) -> dict[str, np.ndarray]:
        choice = preference_choice(rec)
        has_image = src.has_image(rec)
        facts = reward_input.facts_for(rec, self.captions) if reward_input.is_factual(self.template_text) else None
        ids = [reward_input.build(rec, output_text(rec, key), self.template_text, self.tokenizer, has_image=has_image,
                                  image_token_id=self.image_token_id, num_image_tokens=self.num_image_tokens,
                                  facts=facts, rng=rng, max_length=self.max_length)
               for key in OUTPUT_KEYS]
        pixels = pipeline.record_pixels(src, rec, self.image_size, self.pad_to_square)
        return {"input_ids_1": ids[0], "input_ids_2": ids[1], "pixel_values": pixels,
                "choice": np.int32(choice), "valid": np.int32(1)}


def collate_pairs(examples: Sequence[dict], *, buckets: Sequence[int], pad_id: int) -> dict[str, np.ndarray]:
    """Left-pads both inputs of every pair to one bucket length (see the module docstring for the keys)."""
    longest = max(max(len(e["input_ids_1"]), len(e["input_ids_2"])) for e in examples)
    length = pipeline.bucket_length(longest, buckets)
    seqs = [[e["input_ids_1"], e["input_ids_2"]] for e in examples]
    ids = np.stack([[pipeline.pad_to(x, length, pad_id, "left") for x in pair] for pair in seqs]).astype(np.int32)
    mask = np.stack([[pipeline.pad_to(np.ones_like(x), length, 0, "left") for x in pair] for pair in seqs])
    return {
        "input_ids": ids,
        "attention_mask": mask.astype(np.int32),
        "pixel_values": np.stack([e["pixel_values"] for e in examples]).astype(np.float32),
        "choice": np.asarray([e["choice"] for e in examples], np.int32),
        "valid": np.asarray([e["valid"] for e in examples], np.int32),
    }


def filler_pair(image_size: int, pad_id: int) -> dict:
    """The example that pads a short final batch (valid 0)."""
    one = np.full((1,), pad_id, np.int32)
    return {"input_ids_1": one, "input_ids_2": one, "pixel_values": image_lib.zeros(image_size),
            "choice": np.int32(0), "valid": np.int32(0)}


def build_preference_loader(sources, tokenizer, *, template_text: str, captions: Mapping | None, image_token_id: int,
                            num_image_tokens: int, image_size: int, max_length: int, global_batch_size: int,
                            seed: int, rows: np.ndarray | None = None, shuffle: bool = True,
                            num_epochs: int | None = None, strict: bool = False, process_index: int = 0,
                            process_count: int = 1, length_buckets: Sequence[int] | None = None,
                            pad_to_square: bool = True, read_threads: int = 8,
                            pad_final_batch: bool = False) -> pipeline.Loader:
    """Reward-model batches of preference pairs (see the module docstring); `rows` restricts to a split."""
    buckets = pipeline.resolve_buckets(max_length, length_buckets)
    pad_id = pipeline.resolve_pad_id(tokenizer)

    def make_prepare(opened):
        return PreferenceExamples(opened, tokenizer, template_text=template_text, captions=captions,
                                  image_token_id=image_token_id, num_image_tokens=num_image_tokens,
                                  image_size=image_size, max_length=max_length, seed=seed,
                                  pad_to_square=pad_to_square).prepare

    return pipeline.build_loader(
        sources, make_prepare=make_prepare, collate=lambda ex: collate_pairs(ex, buckets=buckets, pad_id=pad_id),
        filler=lambda: filler_pair(image_size, pad_id), global_batch_size=global_batch_size, seed=seed, shuffle=shuffle, num_epochs=num_epochs,
        process_index=process_index, process_count=process_count, read_threads=read_threads,
        pad_final_batch=pad_final_batch, row_filter=rows, max_length=max_length, buckets=buckets, pad_id=pad_id,
        pad_side="left", strict=strict)
