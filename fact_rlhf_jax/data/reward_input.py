"""The reward model's input, exactly as LLaVA-RLHF builds it (`RLHF/data_utils/common_utils.preprocess_v1`).

The conversation with its last assistant turn replaced by the candidate response, rendered with the
training template, then `" "` + the evaluation instruction, tokenised as one string with the final `</s>`
dropped, so the sequence ends in "... the quality score of my last response is":

    {system} USER: <image>\\n{q1} ASSISTANT: {a1}</s>...USER: {qn} ASSISTANT: {response}</s> USER: Please
    evaluate the quality of your last response. ... 1. Accurate: ... inconsistent with the image. {facts}2.
    Helpful: ... ASSISTANT: Following your definitions, the quality score of my last response is

A Fact-RM's instruction (`fact_rlhf`) lists ground-truth facts about the image in place of `{facts}`:
"Specifically, the AI's response should be fully supported by the combination of the following
captions:\\n" + "  - {fact}\\n" per fact, in an order shuffled afresh for every input built; the vanilla
instruction (`vanilla`) has no facts. Both instruction files ship in `fact_rlhf_jax/data/prompts/`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from fact_rlhf_jax.data import conversation, errors

FACTUAL_PROMPT = "Specifically, the AI's response should be fully supported by the combination of the following captions:\n"
FACTS_PLACEHOLDER = "{factual_prompt}"
PROMPTS_DIR = Path(__file__).with_name("prompts")
PROMPT_FILES = {"fact_rlhf": "fact_rlhf_reward_prompt.txt", "vanilla": "reward_prompt.txt"}


def load_instruction(name: str) -> str:
    """The instruction template: `fact_rlhf`, `vanilla`, or a path to a text file (stripped, as the reference does)."""
    path = PROMPTS_DIR / PROMPT_FILES[name] if name in PROMPT_FILES else Path(name)
    if not path.is_file():
        raise FileNotFoundError(f"reward prompt {name!r}: expected one of {sorted(PROMPT_FILES)} or a text file")
    return path.read_text(encoding="utf-8").strip()


def is_factual(template: str) -> bool:
    return FACTS_PLACEHOLDER in template


def instruction(template: str, facts: Sequence[str] | None) -> str:
    """The template with its facts filled in (in the given order). Raises `BadRecordError(MISSING_FACTS)` when a
    factual template gets no facts; a vanilla template ignores them."""
    if not is_factual(template):
        return template
    if not facts:
        raise errors.BadRecordError(None, None, "captions", errors.MISSING_FACTS,
                                    "a factually augmented reward prompt needs the image's facts (captions)")
    return template.replace(FACTS_PLACEHOLDER, FACTUAL_PROMPT + "".join(f"  - {fact}\n" for fact in facts))


def shuffled(facts: Sequence[str], rng: np.random.Generator) -> list[str]:
    return [facts[i] for i in rng.permutation(len(facts))]


def facts_for(record: Mapping, captions: Mapping[str, Sequence[str]] | None, *, key: str | None = None) -> list[str] | None:
    """The facts of a record: its own `captions` field, else `captions[key or record["image"]]`, else None."""
    own = record.get("captions")
    if own is not None:
        if not isinstance(own, list) or not all(isinstance(c, str) for c in own):
            raise errors.BadRecordError(None, None, "captions", errors.BAD_JSON, "expected a list of strings")
        return list(own)
    if captions is None:
        return None
    found = captions.get(key if key is not None else record.get("image", ""))
    return None if found is None else list(found)


def with_response(conversations, response: str) -> list[dict]:
    """The conversation with its last (assistant) turn's value replaced by `response`."""
    if not isinstance(conversations, list) or not conversations or not isinstance(conversations[-1], dict):
        raise errors.BadRecordError(None, None, "conversations", errors.BAD_JSON, "expected a list of turns")
    if conversations[-1].get("from") != "gpt":
        raise errors.BadRecordError(None, None, f"conversations[{len(conversations) - 1}].from", errors.BAD_JSON,
                                    "the last turn must be the assistant's (it is replaced by the response)")
    if not isinstance(response, str) or not response.strip():
        raise errors.BadRecordError(None, None, "response", errors.EMPTY_TEXT, "the response to score is empty")
    return [*conversations[:-1], {"from": "gpt", "value": response}]


def render(pairs: Sequence[tuple[str, str]], instruction_text: str, template: str = "vicuna_v1") -> str:
    """The reward input as text (the reference's string without its final "</s>"; BOS not shown)."""
    return conversation.render(template, pairs) + " " + instruction_text


def encode_after_special(tokenizer, text: str) -> list[int]:
    """Ids of a text chunk that follows a special token (`</s>`), as the reference's legacy LLaMA tokenizer gives
    them: SentencePiece on the chunk alone, dummy prefix included (" USER: ..." -> "▁", "▁US", ...).

    Uses the tokenizer's own SentencePiece model when it ships one (LLaMA / Vicuna directories): the HF
    tokenizer drops the dummy prefix before a leading space and merges across whitespace runs ("\n  - a fact"),
    where SentencePiece does not. Tokenizers without one (ShapesWorld's BPE) encode with their own rules."""
    sp = _sentencepiece_model(tokenizer)
    if sp is not None:
        return list(sp.encode(text))
    return list(tokenizer.encode(text, add_special_tokens=False)) if text else []


_SP_CACHE: dict[str, object] = {}


def _sentencepiece_model(tokenizer):
    path = getattr(tokenizer, "vocab_file", None)
    if not path or not str(path).endswith(".model") or not Path(path).is_file():
        return None
    if path not in _SP_CACHE:
        import sentencepiece

        _SP_CACHE[path] = sentencepiece.SentencePieceProcessor(model_file=str(path))
    return _SP_CACHE[path]


def tokenize(pairs: Sequence[tuple[str, str]], instruction_text: str, tokenizer, *, image_token_id: int,
             num_image_tokens: int, template: str = "vicuna_v1", max_length: int | None = None) -> np.ndarray:
    """int32 [T] ids of `render(...)` with BOS, the image block expanded. Raises `BadRecordError(TOO_LONG)`
    beyond `max_length` (the end carries the instruction, so nothing can be cut)."""
    convo = conversation.tokenize_pairs(pairs, tokenizer, template=template, image_token_id=image_token_id,
                                        num_image_tokens=num_image_tokens)
    ids = np.concatenate([convo.input_ids, np.asarray(encode_after_special(tokenizer, " " + instruction_text),
                                                      np.int32)])
    if max_length is not None and len(ids) > max_length:
        raise errors.BadRecordError(None, None, "conversations", errors.TOO_LONG,
                                    f"the reward input has {len(ids)} tokens > max_length {max_length}")
    return ids.astype(np.int32)


def build(record: Mapping, response: str, template_text: str, tokenizer, *, has_image: bool, image_token_id: int,
          num_image_tokens: int, facts: Sequence[str] | None, rng: np.random.Generator | None,
          conv_template: str = "vicuna_v1", max_length: int | None = None) -> np.ndarray:
    """Ids of the reward input for `record`'s conversation answered by `response` (facts shuffled with `rng`)."""
    convo = with_response(record.get("conversations"), response)
    pairs = conversation.conversation_pairs(convo, has_image)
    if is_factual(template_text) and facts and rng is not None:
        facts = shuffled(facts, rng)
    text = instruction(template_text, facts)
    return tokenize(pairs, text, tokenizer, image_token_id=image_token_id, num_image_tokens=num_image_tokens,
                    template=conv_template, max_length=max_length)
