"""Config fields the shared loop reads (every stage config starts from `base_config()`)."""

from __future__ import annotations

import ml_collections

from fact_rlhf_jax.train.optim import default_optim_config


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.stage = "sft"  # registered stage name or module path with build_stage(config)
    c.seed = 0
    c.batch_size = 128  # global: sequences per optimizer update, over all hosts and micro-batches
    c.grad_accum = 1  # micro-batches per update (batch_size / grad_accum rows per forward pass)
    c.num_steps = -1  # > 0: train this many updates; else num_epochs over the training set
    c.num_epochs = 1.0
    c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1))
    c.rules = ()  # ((logical, mesh_axes), ...) overriding sharding.DEFAULT_RULES entries
    c.trainable = (".*",)  # regexes (re.fullmatch) over '/'-joined parameter paths
    c.frozen = ()  # regexes excluded from training even if they match `trainable`
    c.optim = default_optim_config()
    c.checkpoint = ml_collections.ConfigDict(dict(every=1000, keep=3, async_save=True))
    c.log_every = 10
    c.eval_every = -1  # <= 0: evaluate only at the end (if the stage has eval data)
    c.eval_batches = -1  # batches per evaluation; -1 = the whole held-out split
    c.eval_batch_size = -1  # -1: same as batch_size // grad_accum
    c.progress_bar = True
    c.tensorboard = True
    return c
