"""`fact-rlhf demo`: a list of stages run in order, each in its own sub-workdir of DIR.

A stage that finishes writes `DIR/<stage>/done.json` (`seconds`, `result`); a rerun skips it and reuses
its result, and a stage that was interrupted resumes from its own checkpoints / answer files. The report
stage runs every time (it only reads what the others left). Each stage prints one progress line when it
starts and one when it ends.

To add a stage, append a `Stage` to `stages()`: its `run(ctx, workdir)` does the work (training stages go
through `train.loop.run_training(config, workdir)` with a config built in `demo/config.py`) and returns a
JSON-able result; `slot=("models", name)` or `("reward_models", name)` puts that result into
`results.json`.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from fact_rlhf_jax.demo.config import DemoSettings
from fact_rlhf_jax.demo.world import World

DONE_FILE = "done.json"


@dataclasses.dataclass(frozen=True)
class Context:
    """What every stage sees: the demo directory, its settings and the world."""

    root: Path
    settings: DemoSettings

    @property
    def world(self) -> World:
        return World(self.root / "world")

    def workdir(self, stage: str) -> Path:
        return self.root / stage


@dataclasses.dataclass(frozen=True)
class Stage:
    """name: sub-workdir of DIR; title: what the progress line says; run(ctx, workdir) -> result (JSON-able);
    slot: where the result goes in results.json, e.g. ("models", "sft"); always: rerun every time."""

    name: str
    title: str
    run: Callable[[Context, Path], Any]
    slot: tuple[str, str] | None = None
    always: bool = False


class StageError(RuntimeError):
    """A stage could not finish (e.g. training stopped on a signal); rerun to resume it."""


def read_done(workdir: Path) -> dict[str, Any] | None:
    path = workdir / DONE_FILE
    return json.loads(path.read_text()) if path.exists() else None


def _mark_done(workdir: Path, seconds: float, result: Any) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    tmp = workdir / (DONE_FILE + ".tmp")
    tmp.write_text(json.dumps({"seconds": seconds, "result": result}, indent=1) + "\n")
    tmp.replace(workdir / DONE_FILE)


def check_settings(root: Path, settings: DemoSettings) -> None:
    """Records the settings in DIR/demo.json; a rerun with other settings (e.g. --smoke in a full run's
    directory) is an error rather than a silent mix of two runs."""
    path = root / "demo.json"
    current = json.loads(json.dumps(dataclasses.asdict(settings)))  # tuples -> lists, as read back
    if path.exists():
        saved = json.loads(path.read_text())
        if saved != current:
            changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
            raise StageError(f"{path}: this directory was made with other demo settings ({', '.join(changed)} "
                             "differ); use a new --workdir")
        return
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(current, indent=1) + "\n")


def run_stages(root: str | Path, settings: DemoSettings, stages: list[Stage], *, out: TextIO | None = None) -> dict:
    """Runs `stages` in order (skipping finished ones) and returns {stage name: done record}.

    Progress lines go to `out`, or to whatever `sys.stdout` is at call time (not import time, so a
    redirected stdout is honoured).
    """
    out = sys.stdout if out is None else out
    ctx = Context(Path(root), settings)
    check_settings(ctx.root, settings)
    records: dict[str, dict[str, Any]] = {}
    for i, stage in enumerate(stages, 1):
        workdir = ctx.workdir(stage.name)
        head = f"[{i}/{len(stages)}] {stage.name}"
        done = None if stage.always else read_done(workdir)
        if done is not None:
            print(f"{head}: {stage.title}: finished earlier ({done['seconds']:.1f} s), skipped", file=out, flush=True)
            records[stage.name] = done
            continue
        print(f"{head}: {stage.title} ...", file=out, flush=True)
        t0 = time.perf_counter()
        result = stage.run(ctx, workdir)
        seconds = time.perf_counter() - t0
        records[stage.name] = {"seconds": seconds, "result": result}
        if not stage.always:
            _mark_done(workdir, seconds, result)
        print(f"{head}: {stage.title}: done in {seconds:.1f} s", file=out, flush=True)
    return records


def collect_results(stages: list[Stage], records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """results.json: {"models": {...}, "reward_models": {...}, "seconds": total of every finished stage}."""
    results: dict[str, Any] = {"models": {}, "reward_models": {}}
    for stage in stages:
        if stage.slot is not None and stage.name in records:
            section, key = stage.slot
            results[section][key] = records[stage.name]["result"]
    results["seconds"] = sum(r["seconds"] for name, r in records.items())
    return results
