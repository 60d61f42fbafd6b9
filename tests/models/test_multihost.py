"""Two processes under `jax.distributed` on this machine give the single-process logits."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

import jax

from fact_rlhf_jax.models import config as mcfg
from fact_rlhf_jax.models import llava
from tests.train.multiprocess import uncached

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_forward_equals_single_process(tmp_path):
    cfg = mcfg.preset("tiny")
    rng = np.random.default_rng(0)
    b, t, n = 8, 12, cfg.num_image_tokens
    ids = rng.integers(3, 200, size=(b, t)).astype(np.int32)
    ids[:, 0], ids[:, 1:1 + n] = 1, cfg.image_token_id
    mask = np.ones((b, t), np.int32)
    mask[1::2, -2:] = 0
    px = rng.normal(size=(b, 3, cfg.vision.image_size, cfg.vision.image_size)).astype(np.float32)
    np.savez(tmp_path / "batch.npz", input_ids=ids, attention_mask=mask, pixel_values=px)

    port = _free_port()
    procs = []
    for pid in range(2):
        env = uncached(dict(os.environ, JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
                            JAX_PROCESS_ID=str(pid), MULTIHOST_BATCH=str(tmp_path / "batch.npz"),
                            PYTHONPATH=str(ROOT)))
        procs.append(subprocess.Popen([sys.executable, str(ROOT / "tests/models/multihost_worker.py"),
                                       str(tmp_path / "logits.npy")], env=env, cwd=ROOT,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=400)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            raise
        outputs.append(out)
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]

    want = llava.forward(llava.init(cfg, jax.random.key(0)), cfg, ids, px, mask).logits
    got = np.load(tmp_path / "logits.npy")
    np.testing.assert_allclose(got, np.asarray(want), atol=2e-5, rtol=0)
