"""One process of the multi-host test: 4 local CPU devices, 8 global, forward on a 2x2x2 mesh."""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
os.environ["JAX_PLATFORMS"] = "cpu"

import numpy as np  # noqa: E402

import jax  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402

from fact_rlhf_jax import distributed, sharding  # noqa: E402
from fact_rlhf_jax.models import config as mcfg  # noqa: E402
from fact_rlhf_jax.models import llava  # noqa: E402


def main(out_path: str) -> None:
    distributed.initialize()
    assert jax.process_count() == 2 and jax.device_count() == 8, (jax.process_count(), jax.device_count())
    cfg = mcfg.preset("tiny")
    batch = np.load(os.environ["MULTIHOST_BATCH"])
    b = batch["input_ids"].shape[0]
    share = slice(jax.process_index() * b // 2, (jax.process_index() + 1) * b // 2)
    local = {k: batch[k][share] for k in ("input_ids", "attention_mask", "pixel_values")}
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    rules = sharding.Rules.create()
    with sharding.use_mesh(mesh, rules):
        params = llava.init_sharded(cfg, jax.random.key(0), mesh, rules)
        gbatch = sharding.host_local_to_global(local, mesh)
        logits = jax.jit(lambda p, x: llava.forward(p, cfg, x["input_ids"], x["pixel_values"],
                                                    x["attention_mask"]).logits)(params, gbatch)
        full = multihost_utils.process_allgather(logits, tiled=True)
    if jax.process_index() == 0:
        np.save(out_path, np.asarray(full))


if __name__ == "__main__":
    main(sys.argv[1])
