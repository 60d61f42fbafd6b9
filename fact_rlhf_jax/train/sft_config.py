"""The SFT stage's config fields with their defaults (`configs/sft/*.py` and the demo start from `sft_base()`)."""

from __future__ import annotations

import ml_collections

from fact_rlhf_jax.train.defaults import base_config


def sft_base() -> ml_collections.ConfigDict:
    c = base_config()
    c.stage = "sft"
    # loss_chunk > 0: cross-entropy from hidden states, that many positions of logits at a time.
    c.model = ml_collections.ConfigDict(dict(preset="tiny", overrides={}, vocab_from_tokenizer=False,
                                             image_token_from_tokenizer=False, loss_chunk=0))
    # CLIP frozen, projector + LLM trained (full fine-tune), as in the reference SFT.
    c.trainable = ("projector/.*", "llm/.*")
    c.frozen = ()
    c.lora = ml_collections.ConfigDict(dict(rank=0, alpha=16.0, targets=("q", "k", "v", "o", "gate", "up", "down")))
    c.init = ml_collections.ConfigDict(dict(hf_llava="", hf_llm="", hf_clip="", params_from=""))
    c.data = ml_collections.ConfigDict(
        dict(
            train=[],  # [(path, image_folder, weight), ...]
            eval=[],
            tokenizer="",
            template="vicuna_v1",
            max_text_length=1280,
            strict=False,
            read_threads=4,
            pad_to_square=True,
            shapesworld=dict(num_images=0, seed=0, noise=0.0, image_size=64, eval_fraction=0.1),
        )
    )
    c.optim.lr = 2e-5
    c.optim.schedule = "cosine"
    c.optim.warmup_ratio = 0.03
    c.optim.weight_decay = 0.0
    c.optim.clip_norm = 1.0
    return c
