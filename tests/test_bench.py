"""The benchmark scripts' own logic (no timing): roofline work counts against XLA's, the tunix peer computing
what our sampler computes, and the PPO benchmark's in-memory stage running the production step."""

import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import roofline  # noqa: E402
from fact_rlhf_jax.models import llama  # noqa: E402
from fact_rlhf_jax.models.config import TextConfig, preset  # noqa: E402
from fact_rlhf_jax.models.params import init_from_specs  # noqa: E402


def test_decoder_flops_match_xla_cost_analysis():
    # one layer: XLA counts a scan body once, whatever its trip count
    t = TextConfig(vocab_size=512, hidden_size=128, intermediate_size=256, num_layers=1, num_heads=4, num_kv_heads=2)
    params = jax.eval_shape(lambda: init_from_specs(llama.specs(t), jax.random.key(0), "float32"))
    b, n = 2, 64
    ids = jax.ShapeDtypeStruct((b, n), jnp.int32)
    cost = jax.jit(lambda p, i: llama.forward(p, t, i)[0]).lower(params, ids).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    ours = roofline.decoder_forward(t, b, n, context=n).flops  # XLA computes the full (masked) square
    assert 1.0 <= cost["flops"] / ours < 1.05  # the rest: norms, softmax, RoPE, SiLU


def test_roofline_takes_the_binding_ceiling_per_phase():
    m = roofline.Machine(peak_flops=100.0, bandwidth=10.0, copy_bandwidth=10.0, sum_bandwidth=5.0,
                         load_avg=(0.0, 0.0, 0.0))
    roof = roofline.roofline([roofline.Work(1000.0, 10.0), roofline.Work(10.0, 50.0)], m)
    assert roof["seconds"] == pytest.approx(10.0 + 5.0)
    assert roof["compute_bound_share"] == pytest.approx(10.0 / 15.0)
    assert roofline.against(30.0, roof)["fraction"] == pytest.approx(0.5)


def test_tunix_peer_generates_our_greedy_tokens():
    pytest.importorskip("tunix")
    from bench import generate as G
    from fact_rlhf_jax.models import llava

    cfg = preset("tiny").replace(text={"rope_theta": G.TUNIX_ROPE_THETA})
    params = llava.init(cfg, jax.random.key(0))
    ids, mask, _ = G.make_prompts(cfg, 3, seed=1, text_tokens=20)
    new = 6
    ours = G.jax_generate(params, cfg, ids, mask, None, new)
    theirs = G.tunix_generate(G.tunix_sampler(cfg, params, cache_size=ids.shape[1] + new), ids, mask, new)
    np.testing.assert_array_equal(theirs, ours)


def test_ppo_bench_stage_runs_the_production_step():
    from bench import ppo_step as P

    args = P.argparse.Namespace(batch=4, step_batch=2, epochs=1, new_tokens=3, instruction=4, lora_rank=2, seed=0)
    cfg = preset("tiny")
    config = P.ppo_config(args)
    # one device: with 8 fake ones, XLA:CPU deadlocked in a collective when this scoring program came from the
    # persistent compilation cache (a fresh compile ran fine)
    side = P.JaxSide(P.InMemoryPPOStage(cfg, config, seed=0), config, P.make_batch(cfg, 4, 4, seed=0),
                     devices=jax.devices()[:1])
    before = jax.tree.map(lambda x: np.array(x, copy=True), side.state["params"]["policy"])  # the step donates
    out = side()
    assert set(out) == {"rollout", "scoring", "update", "step", "loss"} and np.isfinite(out["loss"])
    assert int(side.state["step"]) == 1
    after = jax.device_get(side.state["params"]["policy"])
    assert any(not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(after)))
