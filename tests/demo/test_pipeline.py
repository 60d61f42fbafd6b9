"""The demo's stage runner: order, done files, skipping on rerun, a failed stage resumed, settings pinned."""

import io
import json

import pytest

from fact_rlhf_jax.demo.config import SMOKE
from fact_rlhf_jax.demo.pipeline import Stage, StageError, collect_results, read_done, run_stages


def _stages(log, fail_at=None):
    def make(name, result):
        def run(ctx, workdir):
            log.append(name)
            if name == fail_at:
                raise StageError(f"{name} stopped")
            workdir.mkdir(parents=True, exist_ok=True)
            return result
        return run

    return [
        Stage("a", "first", make("a", {"x": 1})),
        Stage("b", "second", make("b", {"accuracy": 0.75}), slot=("reward_models", "vanilla")),
        Stage("c", "third", make("c", {"hallucination_rate": 0.1}), slot=("models", "sft")),
        Stage("r", "report", make("r", None), always=True),
    ]


def test_runs_in_order_and_rerun_skips_finished_stages(tmp_path):
    log, out = [], io.StringIO()
    with pytest.raises(StageError, match="c stopped"):
        run_stages(tmp_path, SMOKE, _stages(log, fail_at="c"), out=out)
    assert log == ["a", "b", "c"]
    assert read_done(tmp_path / "a")["result"] == {"x": 1} and read_done(tmp_path / "c") is None
    assert "[2/4] b: second: done in" in out.getvalue()

    out = io.StringIO()
    records = run_stages(tmp_path, SMOKE, _stages(log), out=out)
    assert log == ["a", "b", "c", "c", "r"]  # a and b were not redone; the report always runs
    assert "[1/4] a: first: finished earlier" in out.getvalue() and "skipped" in out.getvalue()
    assert read_done(tmp_path / "r") is None
    results = collect_results(_stages([]), records)
    assert results["models"] == {"sft": {"hallucination_rate": 0.1}}
    assert results["reward_models"] == {"vanilla": {"accuracy": 0.75}}
    assert results["seconds"] == pytest.approx(sum(r["seconds"] for r in records.values()))


def test_other_settings_in_the_same_directory_are_refused(tmp_path):
    import dataclasses

    run_stages(tmp_path, SMOKE, _stages([]), out=io.StringIO())
    assert json.loads((tmp_path / "demo.json").read_text())["train_images"] == SMOKE.train_images
    with pytest.raises(StageError, match="noise differ"):
        run_stages(tmp_path, dataclasses.replace(SMOKE, noise=0.5), _stages([]), out=io.StringIO())
