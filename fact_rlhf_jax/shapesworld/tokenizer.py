"""A small LLaMA-layout tokenizer trained on ShapesWorld text with `tokenizers`.

Layout: `<unk>`=0, `<s>`=1, `</s>`=2, `<image>`=3, then the 256 byte pieces `<0x00>`..`<0xFF>`
(byte fallback, so any text encodes), then the learned BPE pieces. Spaces become "▁" and a "▁"
is prepended to the text (sentencepiece style), so decoding gives the text back. Saved as a
`tokenizer.json` + `tokenizer_config.json` that `transformers.AutoTokenizer.from_pretrained`
loads: BOS is prepended, no EOS is appended, `pad_token` is `<unk>`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<image>")
BYTE_TOKENS = tuple(f"<0x{b:02X}>" for b in range(256))
# Printable ASCII plus newline and tab: every ASCII character is also a piece of its own.
ALPHABET = [chr(c) for c in range(32, 127)] + ["\n", "\t", "\u2581"]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 2048) -> Tokenizer:
    """Train a byte-fallback BPE tokenizer on `texts`; `vocab_size` counts every piece, the 4
    special and 256 byte pieces included (fewer pieces if the text runs out of merges)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=True)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS + BYTE_TOKENS),
        initial_alphabet=ALPHABET,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    # The byte pieces were passed as special tokens only to pin their ids (4..259); they must be
    # ordinary vocabulary so that "<0x41>" written in text is not read as a token.
    spec = json.loads(tok.to_str())
    spec["added_tokens"] = [t for t in spec["added_tokens"] if t["content"] in SPECIAL_TOKENS]
    spec["model"]["byte_fallback"] = True
    tok = Tokenizer.from_str(json.dumps(spec))
    # The same decoder chain as the LLaMA tokenizer.json: "▁" -> " ", bytes -> text, drop the
    # space the encoder prepended.
    tok.decoder = decoders.Sequence(
        [decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A",
        pair="<s> $A <s> $B",
        special_tokens=[("<s>", 1)],
    )
    return tok


def save_tokenizer(tok: Tokenizer, out_dir: str | Path, model_max_length: int = 2048) -> Path:
    """Write `tokenizer.json`, `tokenizer_config.json` and `special_tokens_map.json` to `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for i, t in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(t) != i:
            raise ValueError(f"tokenizer: expected {t!r} to have id {i}, got {tok.token_to_id(t)}")
    (out / "tokenizer.json").write_text(tok.to_str(pretty=True) + "\n")
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "pad_token": "<unk>",
        "add_bos_token": True,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
        "padding_side": "right",
        "extra_special_tokens": {"image_token": "<image>"},
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>"}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    return out
