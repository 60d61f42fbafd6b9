"""Generate mode shared by every benchmark: batched, resumable answering with a progress bar.

The model side is any object with an `.answer(questions, images, *, max_new_tokens, temperature,
conv_mode) -> list[str]` method: `fact_rlhf_jax.inference.ChatModel` in real runs, a fake in tests.
The answerer owns the mesh: it shards each batch over the devices, so `batch_size` should be a
multiple of the data-parallel size of its mesh.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from tqdm.auto import tqdm

from fact_rlhf_jax.eval.records import EvalDataError, JsonlStore


class Answerer(Protocol):
    def answer(
        self,
        questions: list[str],
        images: list[Any],
        *,
        max_new_tokens: int,
        temperature: float,
        conv_mode: str,
    ) -> list[str]: ...


@dataclasses.dataclass(frozen=True)
class GenerationSettings:
    max_new_tokens: int
    temperature: float
    conv_mode: str = "llava_v1"
    batch_size: int = 8


@dataclasses.dataclass(frozen=True)
class Prompt:
    """One question to ask: `key` identifies it in the answers file, `image` is a path or None."""

    key: Any
    text: str
    image: str | None
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)


def load_image(path: str | None):
    """PIL image in RGB, or None for text-only prompts."""
    if path is None:
        return None
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise EvalDataError(f"{path}: image not found") from None


def answer_prompts(
    prompts: Sequence[Prompt],
    answerer: Answerer,
    store: JsonlStore,
    settings: GenerationSettings,
    *,
    model_id: str = "",
    image_loader: Callable[[str | None], Any] = load_image,
    desc: str = "answering",
    show_progress: bool = True,
) -> int:
    """Answers every prompt whose key is not in `store` yet, `settings.batch_size` at a time.

    Each answer is appended to the store as `{key_field: key, "prompt": ..., "text": ..., "model_id": ...,
    **extra}` right after its batch finishes, so an interrupted run loses at most one batch.
    Returns how many prompts were answered in this call.
    """
    keys = [p.key for p in prompts]
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise EvalDataError(f"{store.path}: question id {dup!r} appears more than once in the questions")
    todo = [p for p in prompts if p.key not in store]
    is_writer = _process_index() == 0
    bar = tqdm(total=len(prompts), initial=len(prompts) - len(todo), desc=desc, disable=not show_progress)
    done = 0
    try:
        for start in range(0, len(todo), settings.batch_size):
            batch = todo[start : start + settings.batch_size]
            images = [image_loader(p.image) for p in batch]
            texts = answerer.answer(
                [p.text for p in batch],
                images,
                max_new_tokens=settings.max_new_tokens,
                temperature=settings.temperature,
                conv_mode=settings.conv_mode,
            )
            if len(texts) != len(batch):
                raise RuntimeError(f"answerer returned {len(texts)} answers for {len(batch)} questions")
            for p, text in zip(batch, texts):
                record = {store.key_field: p.key, "prompt": p.text, "text": text, "model_id": model_id, **p.extra}
                store.add(record, persist=is_writer)
            done += len(batch)
            bar.update(len(batch))
    finally:
        bar.close()
    return done


def _process_index() -> int:
    """Only process 0 writes files; every process runs the same batches (the answerer is SPMD), so in a
    multi-host run --out-dir must be on a filesystem all hosts see, or a rerun would skip different ids."""
    if "jax" not in sys.modules:
        return 0
    import jax

    return jax.process_index()


def load_answerer(checkpoint: str, **kwargs: Any) -> Answerer:
    """`ChatModel.load(checkpoint, **kwargs)` (kwargs: batch_size, seed, tokenizer); imported lazily so
    score-only runs never touch jax."""
    if not checkpoint:
        raise EvalDataError("no model checkpoint given: pass --checkpoint or set config.checkpoint")
    if not os.path.exists(checkpoint):
        raise EvalDataError(f"{checkpoint}: checkpoint not found")
    from fact_rlhf_jax.inference import ChatModel

    return ChatModel.load(checkpoint, **kwargs)
