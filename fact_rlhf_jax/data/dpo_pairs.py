"""Preference pairs as DPO batches: the chosen and the rejected conversation, only the last reply supervised.

A record is the LLaVA-RLHF preference JSON (see `data.preference`): `conversations` whose last gpt turn is
replaced by `output_1` / `output_2`, and `preference` 1 | 2 (1: output_1 is better). Each output gives one
sequence, tokenised with the training template exactly as SFT tokenises a conversation
(`data.conversation`). Its labels keep only the last assistant reply and its closing `</s>`; the system
prompt, every user turn, every earlier reply, the image block and the padding are -100, so a sequence
log-prob sums log p(token) over the response tokens only. A sequence longer than `max_length` is cut at the
end; a pair whose response would lose every token is skipped and counted (`too_long`).

Batch (host-local, B pairs, right-padded; index 0 of the pair axis is the chosen sequence, 1 the rejected):
  input_ids int32 [B, 2, T], attention_mask int32 [B, 2, T], labels int32 [B, 2, T]
  pixel_values float32 [B, 3, S, S]   one image per pair (zeros without one)
  ref_logps float32 [B, 2]            the reference model's sequence log-probs (`reference(source, index)`;
                                      zeros when the loader has no reference, as in the reference pass itself)
  valid int32 [B]                     0 for rows that only fill the last eval batch
  record int32 [B, 2]                 (source, record index) of the pair; -1 on filler rows
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from fact_rlhf_jax.data import conversation, errors, image as image_lib, pipeline
from fact_rlhf_jax.data.preference import OUTPUT_KEYS, output_text, preference_choice
from fact_rlhf_jax.data.reward_input import with_response

IGNORE_INDEX = conversation.IGNORE_INDEX
Reference = Callable[[int, int], np.ndarray]  # (source, record index) -> float32 [2]: chosen, rejected


def last_reply_labels(labels: np.ndarray) -> np.ndarray:
    """SFT labels [T] (every reply + its `</s>` supervised) -> labels of the last reply + its `</s>` only.

    Replies are separated by unsupervised user turns, so the last reply is the last unbroken run of
    supervised positions."""
    labels = np.asarray(labels)
    supervised = np.flatnonzero(labels != IGNORE_INDEX)
    if supervised.size == 0:
        return labels.copy()
    end = supervised[-1]
    gaps = np.flatnonzero(np.diff(supervised) != 1)
    start = supervised[gaps[-1] + 1] if gaps.size else supervised[0]
    out = np.full_like(labels, IGNORE_INDEX)
    out[start:end + 1] = labels[start:end + 1]
    return out


def response_sequence(record: Mapping, response: str, tokenizer, *, has_image: bool, template: str,
                      image_token_id: int, num_image_tokens: int,
                      max_length: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(input_ids, labels) int32 [T] of `record`'s conversation answered by `response`, labels on the response only.

    Raises `BadRecordError` for a malformed conversation or a response that does not fit in `max_length`."""
    pairs = conversation.conversation_pairs(with_response(record.get("conversations"), response), has_image)
    tok = conversation.tokenize_pairs(pairs, tokenizer, template=template, image_token_id=image_token_id,
                                      num_image_tokens=num_image_tokens)
    ids, labels = tok.input_ids, last_reply_labels(tok.labels)
    if max_length is not None and len(ids) > max_length:
        ids, labels = ids[:max_length], labels[:max_length]
        if np.all(labels == IGNORE_INDEX):
            raise errors.BadRecordError(None, None, "conversations", errors.TOO_LONG,
                                        f"the response starts after max_length {max_length}")
    return ids.astype(np.int32), labels.astype(np.int32)


class DpoExamples:
    """(position, source, index) -> one pair's chosen / rejected sequences, image and reference log-probs."""

    def __init__(self, sources, tokenizer, *, template: str, image_token_id: int, num_image_tokens: int,
                 image_size: int, max_length: int, pad_to_square: bool = True, reference: Reference | None = None):
        self.sources = sources
        self.tokenizer = tokenizer
        self.template = template
        self.image_token_id = image_token_id
        self.num_image_tokens = num_image_tokens
        self.image_size = image_size
        self.max_length = max_length
        self.pad_to_square = pad_to_square
        self.reference = reference

    def prepare(self, position: int, s: int, i: int) -> dict[str, np.ndarray]:
        example = pipeline.with_record(self.sources[s], i, self._prepare)
        example["ref_logps"] = (np.zeros((2,), np.float32) if self.reference is None
                                else np.asarray(self.reference(s, i), np.float32))
        example["record"] = np.asarray([s, i], np.int32)
        return example

    def _prepare(self, src, rec) -> dict[str, np.ndarray]:
        choice = preference_choice(rec)
        has_image = src.has_image(rec)
        chosen_key, rejected_key = OUTPUT_KEYS[choice], OUTPUT_KEYS[1 - choice]
        seqs = [response_sequence(rec, output_text(rec, key), self.tokenizer, has_image=has_image,
                                  template=self.template, image_token_id=self.image_token_id,
                                  num_image_tokens=self.num_image_tokens, max_length=self.max_length)
                for key in (chosen_key, rejected_key)]
        return {"chosen": seqs[0], "rejected": seqs[1],
                "pixel_values": pipeline.record_pixels(src, rec, self.image_size, self.pad_to_square),
                "valid": np.int32(1)}


def collate_dpo(examples: Sequence[dict], *, buckets: Sequence[int], pad_id: int) -> dict[str, np.ndarray]:
    """Right-pads both sequences of every pair to one bucket length (keys: see the module docstring)."""
    seqs = [(e["chosen"], e["rejected"]) for e in examples]
    length = pipeline.bucket_length(max(len(ids) for pair in seqs for ids, _ in pair), buckets)

    def pad(x, value):
        return pipeline.pad_to(x, length, value, "right")

    return {
        "input_ids": np.stack([[pad(ids, pad_id) for ids, _ in pair] for pair in seqs]).astype(np.int32),
        "attention_mask": np.stack([[pad(np.ones_like(ids), 0) for ids, _ in pair] for pair in seqs]).astype(np.int32),
        "labels": np.stack([[pad(labels, IGNORE_INDEX) for _, labels in pair] for pair in seqs]).astype(np.int32),
        "pixel_values": np.stack([e["pixel_values"] for e in examples]).astype(np.float32),
        "ref_logps": np.stack([e["ref_logps"] for e in examples]).astype(np.float32),
        "valid": np.asarray([e["valid"] for e in examples], np.int32),
        "record": np.stack([e["record"] for e in examples]).astype(np.int32),
    }


def filler_pair(image_size: int, pad_id: int) -> dict:
    """The example that pads a short final batch (valid 0, record -1)."""
    one = (np.full((1,), pad_id, np.int32), np.full((1,), IGNORE_INDEX, np.int32))
    return {"chosen": one, "rejected": one, "pixel_values": image_lib.zeros(image_size),
            "ref_logps": np.zeros((2,), np.float32), "valid": np.int32(0), "record": np.full((2,), -1, np.int32)}


def build_dpo_loader(sources, tokenizer, *, template: str = "vicuna_v1", image_token_id: int, num_image_tokens: int,
                     image_size: int, max_length: int, global_batch_size: int, seed: int,
                     rows: np.ndarray | None = None, shuffle: bool = True, num_epochs: int | None = None,
                     strict: bool = False, process_index: int = 0, process_count: int = 1,
                     length_buckets: Sequence[int] | None = None, pad_to_square: bool = True, read_threads: int = 8,
                     pad_final_batch: bool = False, reference: Reference | None = None) -> pipeline.Loader:
    """DPO batches of preference pairs (see the module docstring); `rows` restricts to a split, `reference`
    supplies each pair's reference log-probs by (source, record index)."""
    conversation.get_template(template)
    buckets = pipeline.resolve_buckets(max_length, length_buckets)
    pad_id = pipeline.resolve_pad_id(tokenizer)

    def make_prepare(opened):
        return DpoExamples(opened, tokenizer, template=template, image_token_id=image_token_id,
                           num_image_tokens=num_image_tokens, image_size=image_size, max_length=max_length,
                           pad_to_square=pad_to_square, reference=reference).prepare

    return pipeline.build_loader(
        sources, make_prepare=make_prepare, collate=lambda ex: collate_dpo(ex, buckets=buckets, pad_id=pad_id),
        filler=lambda: filler_pair(image_size, pad_id), global_batch_size=global_batch_size, seed=seed, shuffle=shuffle, num_epochs=num_epochs,
        process_index=process_index, process_count=process_count, read_threads=read_threads,
        pad_final_batch=pad_final_batch, row_filter=rows, max_length=max_length, buckets=buckets, pad_id=pad_id,
        pad_side="right", strict=strict)
