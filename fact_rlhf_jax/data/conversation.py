"""Conversation templates and turn-by-turn tokenisation with the SFT label mask.

Templates (strings exactly as in LLaVA @6cea223, see docs/data.md):

  vicuna_v1 (training):  "{system} USER: <image>\\n{q1} ASSISTANT: {a1}</s>USER: {q2} ASSISTANT: {a2}</s>"
  llava_v1  (evaluation): same layout, system prompt says "curious human" / "the human's questions"
  plain     (projector pretraining): "<image>{caption}\\n"

`<s>` (BOS) is prepended. Tokens are produced piece by piece so the label mask is built
directly: pieces are cut only where the reference's whole-string tokenisation already has a
boundary (`<image>`, `</s>`) or right before the space that opens an assistant reply. Each
text piece is encoded with SentencePiece's dummy prefix ("▁"), which reproduces the
reference (legacy LLaMA tokenizer, `tokenizer_image_token`) token for token:
  * the chunk before `<image>` ends with its own "▁" token ("USER: " -> ..., ":", "▁"),
  * the chunk after it starts with "▁", "<0x0A>" ("\\n..."),
  * a reply "a1" after "ASSISTANT: " is "▁a1" either way, and text after `</s>` gets "▁".

Labels are -100 on BOS, the system prompt, user turns, role tags, the image block and
padding; each assistant reply is supervised together with its closing `</s>` (plain:
the caption and its "\\n").
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from fact_rlhf_jax.data import errors

IGNORE_INDEX = -100
IMAGE_PLACEHOLDER = "<image>"


@dataclasses.dataclass(frozen=True)
class Template:
    """A LLaVA conversation template. `style` is "two" (role-tagged turns) or "plain"."""

    name: str
    system: str
    roles: tuple[str, str]
    sep: str
    sep2: str
    style: str


_VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
_LLAVA_SYSTEM = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)

TEMPLATES: dict[str, Template] = {
    "vicuna_v1": Template("vicuna_v1", _VICUNA_SYSTEM, ("USER", "ASSISTANT"), " ", "</s>", "two"),
    "llava_v1": Template("llava_v1", _LLAVA_SYSTEM, ("USER", "ASSISTANT"), " ", "</s>", "two"),
    "plain": Template("plain", "", ("", ""), "\n", "", "plain"),
}
TEMPLATES["v1"] = TEMPLATES["vicuna_v1"]
TEMPLATES["v0_plain"] = TEMPLATES["plain"]


def get_template(name: str | Template) -> Template:
    if isinstance(name, Template):
        return name
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ValueError(f"unknown conversation template {name!r}; expected one of {sorted(TEMPLATES)}") from None


# --- record structure -----------------------------------------------------------------------------


def conversation_pairs(conversations: Any, has_image: bool) -> list[tuple[str, str]]:
    """Validates LLaVA `conversations` and returns [(question, answer), ...].

    Follows LLaVA's preprocessing: leading "gpt" turns are dropped; with an image, the
    `<image>` placeholder is removed from wherever it is and the first human turn that had
    it (or the first human turn, when no turn had it) becomes "<image>\\n" + stripped text.
    A trailing unanswered human turn is dropped. Raises `BadRecordError` (no path/id yet).
    """
    if not isinstance(conversations, list):
        raise errors.BadRecordError(None, None, "conversations", errors.BAD_JSON,
                                    f"expected a list of turns, got {type(conversations).__name__}")
    turns: list[tuple[str, str]] = []
    for i, turn in enumerate(conversations):
        field = f"conversations[{i}]"
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str) or turn.get("from") not in (
            "human", "gpt"
        ):
            raise errors.BadRecordError(None, None, field, errors.BAD_JSON,
                                        'expected {"from": "human"|"gpt", "value": <string>}')
        turns.append((turn["from"], turn["value"]))
    while turns and turns[0][0] != "human":
        turns.pop(0)
    for i, (role, _) in enumerate(turns):
        if role != ("human" if i % 2 == 0 else "gpt"):
            raise errors.BadRecordError(None, None, f"conversations[{i}].from", errors.BAD_JSON,
                                        "turns must alternate human, gpt, human, ...")
    if len(turns) % 2:
        turns.pop()
    pairs = [(turns[i][1], turns[i + 1][1]) for i in range(0, len(turns), 2)]
    if not pairs:
        raise errors.BadRecordError(None, None, "conversations", errors.NO_ASSISTANT_TURN,
                                    "expected at least one human turn followed by a gpt turn")
    for k, (_, a) in enumerate(pairs):
        if not a.strip():
            raise errors.BadRecordError(None, None, f"conversations[{2 * k + 1}].value", errors.EMPTY_TEXT,
                                        "assistant reply is empty")
    if has_image:
        with_image = [k for k, (q, _) in enumerate(pairs) if IMAGE_PLACEHOLDER in q]
        target = with_image[0] if with_image else 0
        pairs = [(q.replace(IMAGE_PLACEHOLDER, "").strip(), a) for q, a in pairs]
        q, a = pairs[target]
        pairs[target] = (IMAGE_PLACEHOLDER + "\n" + q, a)
    else:
        for k, (q, _) in enumerate(pairs):
            if IMAGE_PLACEHOLDER in q:
                raise errors.BadRecordError(None, None, f"conversations[{2 * k}].value", errors.MISSING_IMAGE,
                                            'text has "<image>" but the record has no "image" field')
        if not pairs[0][0].strip():
            raise errors.BadRecordError(None, None, "conversations[0].value", errors.EMPTY_TEXT,
                                        "first question is empty and there is no image")
    return pairs


# --- prompt strings (the reference's view; used by inference and by tests as the oracle) -------


def render(template: str | Template, pairs: Sequence[tuple[str, str | None]]) -> str:
    """The reference prompt string (without BOS). An answer of None ends with "ASSISTANT:"."""
    t = get_template(template)
    if t.style == "plain":
        q, a = pairs[0]
        head = IMAGE_PLACEHOLDER if IMAGE_PLACEHOLDER in q else ""
        return head + (a + t.sep if a is not None else "")
    out = t.system + t.sep
    for q, a in pairs:
        out += f"{t.roles[0]}: {q}{t.sep}"
        out += f"{t.roles[1]}: {a}{t.sep2}" if a is not None else f"{t.roles[1]}:"
    return out


# --- token pieces ----------------------------------------------------------------------------------


@dataclasses.dataclass
class Tokenized:
    """One example: `input_ids`, `labels` int32 [T] (image block expanded), `image_span` (start, end)."""

    input_ids: np.ndarray
    labels: np.ndarray
    image_span: tuple[int, int] | None


def _encode(tokenizer, text: str) -> list[int]:
    if not text:
        return []
    return list(tokenizer.encode(text, add_special_tokens=False))


def _encode_reply(tokenizer, prompt_text: str, reply: str) -> list[int]:
    """Reply ids as they come out of tokenising `prompt_text + " " + reply` in one go.

    For ordinary replies that is just the dummy-prefixed reply ("▁" stands for the space).
    A reply that itself starts with whitespace would make the tokenizer merge that run of
    spaces differently, so it is tokenised with its prompt and the prompt's ids removed.
    """
    if reply[:1].isspace() and reply[:1] != "\n":
        prompt_ids = _encode(tokenizer, prompt_text)
        joined = _encode(tokenizer, prompt_text + " " + reply)
        if joined[: len(prompt_ids)] == prompt_ids:
            return joined[len(prompt_ids):]
    return _encode(tokenizer, reply)


def _special_id(tokenizer, name: str) -> int:
    value = getattr(tokenizer, f"{name}_token_id", None)
    if value is None:
        raise ValueError(f"tokenizer has no {name} token; a LLaMA-layout tokenizer (bos=1, eos=2) is expected")
    return int(value)


def _pieces(t: Template, pairs: Sequence[tuple[str, str | None]]) -> list[tuple[str, str | None, bool]]:
    """The conversation as (kind, text, supervised) pieces; kind in {"text", "image", "eos"}."""
    pieces: list[tuple[str, str | None, bool]] = []

    def prompt_text(text: str) -> None:
        # Split at the image placeholder: the reference tokenises each side separately.
        if IMAGE_PLACEHOLDER in text:
            before, after = text.split(IMAGE_PLACEHOLDER, 1)
            pieces.append(("text", before, False))
            pieces.append(("image", None, False))
            pieces.append(("text", after, False))
        else:
            pieces.append(("text", text, False))

    if t.style == "plain":
        q, a = pairs[0]
        if IMAGE_PLACEHOLDER in q:
            pieces.append(("image", None, False))
        if a is not None:
            pieces.append(("text", a + t.sep, True))
        return pieces

    prefix = t.system + t.sep
    for q, a in pairs:
        # "ASSISTANT:" closes the prompt piece; the space before the reply becomes the reply's "▁".
        prompt_text(f"{prefix}{t.roles[0]}: {q}{t.sep}{t.roles[1]}:")
        if a is None:
            break
        pieces.append(("text", a, True))
        pieces.append(("eos", None, True))
        prefix = ""  # the next round follows "</s>" directly
    return pieces


def tokenize_pairs(
    pairs: Sequence[tuple[str, str | None]],
    tokenizer,
    *,
    template: str | Template = "vicuna_v1",
    image_token_id: int,
    num_image_tokens: int,
    max_length: int | None = None,
) -> Tokenized:
    """Tokenises (question, answer) pairs; `<image>` in a question becomes the image block.

    Truncation to `max_length` (the expanded length) keeps the image block whole and cuts
    only trailing tokens after it; raises `BadRecordError(TOO_LONG)` when the image block
    does not fit or no supervised token would remain.
    """
    t = get_template(template)
    ids: list[int] = [_special_id(tokenizer, "bos")]
    labels: list[int] = [IGNORE_INDEX]
    image_span = None
    last_text = ""
    for kind, text, supervised in _pieces(t, pairs):
        if kind == "text" and supervised and t.style == "two":
            piece = _encode_reply(tokenizer, last_text, text)
        elif kind == "image":
            image_span = (len(ids), len(ids) + num_image_tokens)
            piece = [int(image_token_id)] * num_image_tokens
            supervised = False
        elif kind == "eos":
            piece = [_special_id(tokenizer, "eos")]
        else:
            piece = _encode(tokenizer, text)
            last_text = text
        ids.extend(piece)
        labels.extend(piece if supervised else [IGNORE_INDEX] * len(piece))

    if max_length is not None and len(ids) > max_length:
        if image_span is not None and image_span[1] > max_length:
            raise errors.BadRecordError(None, None, "conversations", errors.TOO_LONG,
                                        f"the image block ends at {image_span[1]} > max_length {max_length}")
        ids, labels = ids[:max_length], labels[:max_length]
    if all(x == IGNORE_INDEX for x in labels):
        raise errors.BadRecordError(None, None, "conversations", errors.TOO_LONG,
                                    f"no assistant token fits in max_length {max_length}")
    return Tokenized(np.asarray(ids, np.int32), np.asarray(labels, np.int32), image_span)


def tokenize_conversations(
    conversations: Any,
    tokenizer,
    *,
    has_image: bool,
    template: str | Template = "vicuna_v1",
    image_token_id: int,
    num_image_tokens: int,
    max_length: int | None = None,
) -> Tokenized:
    """LLaVA JSON `conversations` -> `Tokenized` (validation + `tokenize_pairs`)."""
    pairs = conversation_pairs(conversations, has_image)
    return tokenize_pairs(pairs, tokenizer, template=template, image_token_id=image_token_id,
                          num_image_tokens=num_image_tokens, max_length=max_length)


def encode_prompt(
    question: str,
    tokenizer,
    *,
    has_image: bool,
    template: str | Template = "llava_v1",
    image_token_id: int,
    num_image_tokens: int,
) -> np.ndarray:
    """Generation prompt int32 [P]: BOS + system + "USER: <image>\\n{question} ASSISTANT:"."""
    q = question.replace(IMAGE_PLACEHOLDER, "").strip()
    if has_image:
        q = IMAGE_PLACEHOLDER + "\n" + q
    t = get_template(template)
    ids = [_special_id(tokenizer, "bos")]
    for kind, text, _ in _pieces(t, [(q, None)]):
        if kind == "image":
            ids.extend([int(image_token_id)] * num_image_tokens)
        elif kind == "text":
            ids.extend(_encode(tokenizer, text))
    return np.asarray(ids, np.int32)
