"""The training loop every stage shares.

Reads top to bottom: mesh -> stage (model, data, loss, frozen weights) -> optimizer -> fresh
state in its shardings or restore from the latest checkpoint -> jitted donated step (or the
stage's own step) -> loop with metrics, evaluation, checkpoints and preemption handling.

Rerunning with the same workdir resumes from the latest checkpoint (state + data position),
so an interrupted run and an uninterrupted one end with the same parameters.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from fact_rlhf_jax import config as config_lib
from fact_rlhf_jax import paths
from fact_rlhf_jax import sharding as shd
from fact_rlhf_jax.train import state as state_lib
from fact_rlhf_jax.train.checkpoint import Checkpointer
from fact_rlhf_jax.train.metrics import MetricsWriter
from fact_rlhf_jax.train.optim import make_optimizer
from fact_rlhf_jax.train.preemption import PreemptionWatcher
from fact_rlhf_jax.train.stage import Stage, StepContext, build_stage
from fact_rlhf_jax.train.step import jit_train_step, make_eval_step, make_train_step, with_frozen
from fact_rlhf_jax.train.trainable import summary, trainable_mask

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainResult:
    state: dict
    step: int
    total_steps: int
    preempted: bool
    last_metrics: dict[str, float]


def make_rules(config: ml_collections.ConfigDict) -> shd.Rules:
    """DEFAULT_RULES with the entries named in `config.rules` replaced (or added)."""
    table = dict(shd.DEFAULT_RULES)
    for logical, mesh_axes in config.get("rules", ()) or ():
        table[logical] = tuple(mesh_axes) if isinstance(mesh_axes, (list, tuple)) else mesh_axes
    return shd.Rules.create(list(table.items()))


def resolve_total_steps(config: ml_collections.ConfigDict, stage: Stage) -> int:
    """`num_steps` if > 0, else floor(num_epochs * records / batch_size) (at least 1)."""
    if config.num_steps and config.num_steps > 0:
        return int(config.num_steps)
    n = stage.num_train_examples()
    if n is None:
        raise ValueError("config.num_steps is not set and the stage cannot count its training records; set num_steps")
    return max(1, int(float(config.num_epochs) * n // int(config.batch_size)))


def check_batch_layout(config, mesh, process_count: int) -> tuple[int, int]:
    """Returns (rows per host, rows per micro-batch) after checking divisibility."""
    batch, accum = int(config.batch_size), int(config.grad_accum)
    dp = shd.data_parallel_size(mesh)
    if batch % process_count:
        raise ValueError(f"batch_size={batch} is not divisible by the {process_count} hosts")
    if batch % accum:
        raise ValueError(f"batch_size={batch} is not divisible by grad_accum={accum}")
    micro = batch // accum
    if micro % dp:
        raise ValueError(
            f"micro-batch of {micro} rows (batch_size / grad_accum) does not split over the {dp} data-parallel "
            f"devices of mesh {dict(mesh.shape)}"
        )
    return batch // process_count, micro


def pad_rows(batch: dict, rows: int, stage: Stage) -> dict:
    have = next(iter(batch.values())).shape[0]
    return batch if have == rows else stage.pad_batch(batch, rows)


def _all_hosts_have(flag: bool, process_count: int) -> bool:
    if process_count == 1:
        return flag
    from jax.experimental import multihost_utils

    return bool(np.asarray(multihost_utils.process_allgather(np.int32(flag))).all())


def evaluate(stage: Stage, eval_step, params, mesh, config, process_index, process_count) -> dict[str, float]:
    """`params`: what the stage's eval loss receives (the state's params with any frozen weights added)."""
    """Metric sums over the held-out split (or `eval_batches` of it) -> {"eval/<name>": sum / count}."""
    rows = int(config.eval_batch_size) if config.eval_batch_size > 0 else int(config.batch_size) // int(config.grad_accum)
    per_host = rows // process_count
    data = stage.eval_data(process_index=process_index, process_count=process_count, batch_size=per_host)
    if data is None:
        return {}
    dp_local = max(1, shd.data_parallel_size(mesh) // process_count)
    totals: dict[str, list[float]] = {}
    data = iter(data)
    for i in itertools.count():
        if 0 <= config.eval_batches <= i:
            break
        batch = next(data, None)
        if not _all_hosts_have(batch is not None, process_count):
            break  # hosts may hold different numbers of eval batches; stop together
        have = next(iter(batch.values())).shape[0]
        batch = pad_rows(batch, -(-have // dp_local) * dp_local, stage)
        sums = jax.device_get(eval_step(params, stage.to_global(batch, mesh)))
        for name, (s, c) in sums.items():
            acc = totals.setdefault(name, [0.0, 0.0])
            acc[0] += float(s)
            acc[1] += float(c)
    return {f"eval/{k}": (s / c if c else float("nan")) for k, (s, c) in totals.items()}


def run_training(config: ml_collections.ConfigDict, workdir: str | os.PathLike, stage: Stage | None = None
                 ) -> TrainResult:
    """Trains `config`'s stage in `workdir` (a local directory or a bucket URL such as gs://BUCKET/run)."""
    workdir = paths.workdir(workdir)
    process_index, process_count = jax.process_index(), jax.process_count()
    is_chief = process_index == 0
    if is_chief:
        workdir.mkdir(parents=True, exist_ok=True)
        config_lib.save_resolved(config, workdir)

    # --- mesh ---------------------------------------------------------------------------------
    mesh = shd.make_mesh(dict(config.mesh))
    rules = make_rules(config)
    host_rows, _ = check_batch_layout(config, mesh, process_count)

    # --- stage: model, data, loss -------------------------------------------------------------
    stage = stage if stage is not None else build_stage(config, str(workdir))
    data = stage.train_data(
        process_index=process_index, process_count=process_count, batch_size=host_rows, seed=int(config.seed)
    )
    total_steps = resolve_total_steps(config, stage)
    optimizer, schedule = make_optimizer(config.optim, total_steps, updates_per_step=stage.updates_per_step)
    frozen = stage.frozen_params(mesh, rules)
    rng = jax.random.PRNGKey(int(config.seed))
    params_shape = jax.eval_shape(stage.init_params, rng)
    mask = trainable_mask(params_shape, tuple(config.trainable), tuple(config.get("frozen", ()) or ()))
    log.info("%s; %d steps on mesh %s", summary(params_shape, mask), total_steps, dict(mesh.shape))

    # --- state: fresh in its shardings, or restored from the latest checkpoint -----------------
    ckpt = Checkpointer(workdir / "checkpoints", keep=int(config.checkpoint.keep),
                        async_save=bool(config.checkpoint.get("async_save", True)))
    latest = ckpt.latest_step()
    if latest is None:
        state, shardings = state_lib.create_state(stage, optimizer, mask, rng, mesh, rules)
        pretrained = stage.load_pretrained(state["params"], shardings["params"])
        if pretrained is not None:
            state["params"] = pretrained
    else:
        abstract, shardings = state_lib.abstract_state(stage, optimizer, mask, rng, mesh, rules)
        state, data_state = ckpt.restore(latest, abstract)
        data.set_state(data_state)
        log.info("resumed from %s at step %d", ckpt.directory / str(latest), latest)

    # --- steps ---------------------------------------------------------------------------------
    context = StepContext(optimizer=optimizer, schedule=schedule, mask=mask, mesh=mesh, rules=rules,
                          state_shardings=shardings, frozen=frozen, grad_accum=int(config.grad_accum),
                          workdir=str(workdir), is_chief=is_chief)
    custom_step = stage.build_step(context)
    step_fn = make_train_step(stage.loss, optimizer, schedule, mask, grad_accum=int(config.grad_accum),
                              mesh=mesh, rules=rules)
    train_step = None  # jitted on the first batch (its shardings depend on each entry's rank)
    eval_step = jax.jit(make_eval_step(stage.eval_loss, mesh=mesh, rules=rules))

    step = int(jax.device_get(state["step"]))
    writer = MetricsWriter(workdir, total_steps=total_steps, initial_step=step, enabled=is_chief,
                           tensorboard=bool(config.get("tensorboard", True)),
                           progress=bool(config.get("progress_bar", True)))
    watcher = PreemptionWatcher()
    every = int(config.checkpoint.every)
    last_metrics: dict[str, float] = {}
    preempted = False
    tokens, t_last = 0, time.perf_counter()
    try:
        while step < total_steps:
            batch = next(data)
            tokens += stage.count_tokens(batch) * process_count
            if custom_step is not None:
                state, metrics = custom_step(state, batch)
            else:
                global_batch = stage.to_global(batch, mesh)
                if train_step is None:
                    batch_sh = jax.tree.map(lambda x: x.sharding, global_batch)
                    train_step = jit_train_step(step_fn, shardings, batch_sh, mesh, frozen)
                state, metrics = train_step(state, global_batch)
            step += 1

            if step % int(config.log_every) == 0 or step == total_steps:
                metrics = {k: float(v) for k, v in jax.device_get(metrics).items()}
                now = time.perf_counter()
                if tokens:  # stages that count no input tokens (PPO) report their own throughput
                    metrics["tokens_per_s"] = tokens / max(now - t_last, 1e-9)
                tokens, t_last = 0, now
                writer.write(step, metrics)
                writer.progress(step, metrics)
                last_metrics = metrics

            eval_due = config.eval_every > 0 and step % int(config.eval_every) == 0
            if eval_due or step == total_steps:
                ev = evaluate(stage, eval_step, with_frozen(state["params"], frozen), mesh, config, process_index,
                              process_count)
                if ev:
                    writer.write(step, ev)
                    last_metrics.update(ev)
                t_last = time.perf_counter()  # keep eval time out of tokens/s

            if step % every == 0 or step == total_steps:
                ckpt.save(step, state, data.get_state())
            if watcher.requested():
                ckpt.save(step, state, data.get_state(), force=True)
                preempted = True
                log.warning("preempted: saved step %d to %s; rerun the same command to resume", step, ckpt.directory)
                break
    finally:
        watcher.close()
        ckpt.close()
        writer.close()
    if is_chief and not preempted:
        stage.finish(str(workdir), data)
    return TrainResult(state=state, step=step, total_steps=total_steps, preempted=preempted, last_metrics=last_metrics)
