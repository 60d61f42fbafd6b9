"""Pieces shared by the SFT configs (imported by file path, so keep it import-free of the configs)."""

import ml_collections

from fact_rlhf_jax.train.sft_config import sft_base


def reference_sft(preset: str, tokenizer: str, grad_accum: int) -> ml_collections.ConfigDict:
    """The reference LLaVA-SFT+ recipe (`SFT/scripts/*/sft.sh`): lr 2e-5, 3 epochs, global batch 128, cosine with
    3 % warmup, no weight decay, max length 1280 text tokens, CLIP frozen, full fine-tune of projector + LLM."""
    c = sft_base()
    c.model.preset = preset
    c.model.loss_chunk = 512  # never materialise [batch, 1.5k, 32000] float32 logits
    c.data.train = [("data/llava_rlhf/mix-llava-sft90k-vqav2_83k-okvqa_16k-flickr_23k.json", "data/images", 1.0)]
    c.data.eval = []
    c.data.tokenizer = tokenizer
    c.data.template = "vicuna_v1"
    c.data.max_text_length = 1280
    c.data.read_threads = 16
    c.batch_size = 128
    c.grad_accum = grad_accum  # micro-batches per update; lower it on larger slices
    c.num_epochs = 3.0
    c.num_steps = -1
    c.optim.lr = 2e-5
    c.optim.schedule = "cosine"
    c.optim.warmup_ratio = 0.03
    c.optim.weight_decay = 0.0
    c.optim.clip_norm = 1.0
    c.trainable = ("projector/.*", "llm/.*")
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = 1, -1, 1
    c.checkpoint.every = 500
    c.checkpoint.keep = 2
    c.log_every = 10
    c.eval_every = 1000
    return c
