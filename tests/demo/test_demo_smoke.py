"""`fact-rlhf demo --smoke`: the whole chain at toy size, the schema of results.json, the report's links,
and a rerun that skips every finished stage."""

import json
import re

from fact_rlhf_jax.cli import main
from fact_rlhf_jax.demo.evaluate import METRICS
from fact_rlhf_jax.shapesworld.annotator import annotate, preference_score
from fact_rlhf_jax.shapesworld.scene import Scene

RATES = [m for m in METRICS if m != "mmhal_score"]


def test_smoke_run_then_rerun_skips_finished_stages(tmp_path, capsys):
    root = tmp_path / "demo"
    assert main(["demo", "--workdir", str(root), "--smoke"]) == 0
    first = capsys.readouterr().out
    assert "[4/16] sft: SFT from the pretrained model: done in" in first

    results = json.loads((root / "results.json").read_text())
    assert set(results) == {"models", "reward_models", "seconds"}
    assert set(results["models"]) == {"sft", "rlhf", "fact_rlhf", "dpo"}
    for name, model in results["models"].items():
        assert set(model) == {*METRICS, *(f"{m}_ci" for m in METRICS), "mean_length", "n"}, name
        for m in METRICS:
            lo, hi = model[f"{m}_ci"]
            top = 6.0 if m == "mmhal_score" else 1.0
            assert 0.0 <= lo <= hi <= top, (name, m)
        assert all(0.0 <= model[m] <= 1.0 for m in RATES), name
        assert model["n"] == 16
    assert set(results["reward_models"]) == {"vanilla", "factual"}
    for rm in results["reward_models"].values():
        assert 0.0 <= rm["accuracy"] <= 1.0
        probe = rm["probe"]  # the reward model's ranking of the SFT model's samples (tests/demo/test_reward_probe.py)
        assert 0.0 <= probe["agreement"] <= 1.0 and -1.0 <= probe["corr_words"] <= 1.0
        assert 0.0 <= probe["best_of_n"]["hallucination_rate"] <= 1.0
    assert results["seconds"] > 0
    # on-policy pairs: sampled from the SFT model, the preferred one never mentions fewer objects
    pairs = json.loads((root / "pairs" / "preference.json").read_text())
    graphs = json.loads((root / "world" / "scene_graphs.json").read_text())
    assert len(pairs) >= 8
    for p in pairs:
        scene = Scene.from_json(graphs[p["image"]])
        better, worse = (annotate(scene, p[f"output_{k}"]["value"]) for k in (p["preference"], 3 - p["preference"]))
        assert preference_score(scene, p[f"output_{p['preference']}"]["value"]) > \
            preference_score(scene, p[f"output_{3 - p['preference']}"]["value"])
        assert len(better.mentioned) >= len(worse.mentioned)

    _assert_sft_kept_the_vision_tower(root)

    md = (root / "results.md").read_text()
    assert "| sft |" in md and "| annotator (oracle) |" in md
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert "figures/results.png" in links and "figures/training_curves.png" in links
    titles = _curve_titles(root)
    for title in ("vision: tag loss", "pretrain: loss", "sft: loss", "rm_vanilla: accuracy", "rm_factual: accuracy", "ppo_factual: reward",
                  "ppo_vanilla: KL to the reference", "dpo: accuracy"):
        assert title in titles, (title, titles)
    assert sum(l.startswith("figures/samples/") for l in links) == 3
    assert all((root / link).is_file() for link in links)

    finished = ("world", "vision", "pretrain", "sft", "eval_sft", "pairs", "probe", "rm_vanilla", "rm_factual", "ppo_vanilla", "eval_rlhf",
                "ppo_factual", "eval_fact_rlhf", "dpo", "eval_dpo")
    done = {s: (root / s / "done.json").stat().st_mtime_ns for s in finished}
    checkpoints = sorted(p.name for p in (root / "sft" / "checkpoints").iterdir())
    assert main(["demo", "--workdir", str(root), "--smoke"]) == 0
    second = capsys.readouterr().out
    for i, stage in enumerate(finished, 1):
        assert f"[{i}/16] {stage}: " in second and "finished earlier" in second.splitlines()[i - 1]
    assert {s: (root / s / "done.json").stat().st_mtime_ns for s in done} == done
    assert sorted(p.name for p in (root / "sft" / "checkpoints").iterdir()) == checkpoints
    assert json.loads((root / "results.json").read_text()) == results


def _assert_sft_kept_the_vision_tower(root):
    """SFT trains the projector and the LLM; the vision tower stays as caption pretraining left it (frozen there
    too, from the vision stage)."""
    import jax
    import numpy as np

    from fact_rlhf_jax import pretrained

    before, after = (pretrained.load(root / stage).params for stage in ("pretrain", "sft"))
    for a, b in zip(jax.tree.leaves(before["vision"]), jax.tree.leaves(after["vision"]), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert any(not np.array_equal(np.asarray(a), np.asarray(b))
               for a, b in zip(jax.tree.leaves(before["llm"]), jax.tree.leaves(after["llm"]), strict=True))


def _curve_titles(root):
    from fact_rlhf_jax.demo.report import training_curves

    return [f"{stage}: {title}" for stage, title, _ in training_curves(root)]
