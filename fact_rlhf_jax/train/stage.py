"""What a training stage plugs into the shared loop.

A stage (SFT, reward model, PPO, DPO, ...) supplies its model, its data and its loss; the
loop (`fact_rlhf_jax.train.loop`) does everything else: mesh, sharded init or restore,
the jitted step with gradient accumulation, checkpoints, metrics, evaluation, preemption.

Loss contract: `loss(params, batch, rng) -> LossTerms` where
  total    scalar: the SUM of the per-unit losses of this (micro-)batch (units: supervised
           tokens for SFT, pairs for a reward model, ...);
  weight   scalar: how many units `total` sums over;
  metrics  {name: (sum, count)}: reported as sum/count after summing both over every
           micro-batch (and every eval batch).
The step differentiates `total`, sums totals, weights and gradients over the micro-batches
of one step and divides by the summed weight, so the loss is normalised by the units of the
whole global batch, not averaged over micro-batch means.

Frozen weights: a stage whose base model never trains (LoRA stages: the reward model, PPO, DPO)
returns it from `frozen_params(mesh, rules)`. It is loaded once, placed in its shardings and passed
to every step as an argument; it is neither in the optimizer nor in the checkpoints. `loss`
receives one dict: the state's params with the frozen dict's top-level keys added.

Steps that are not one gradient update (PPO: rollouts, then several updates) come from
`build_step(context)`; the loop still owns checkpoints, metrics and preemption around them.

To add a stage: write a module with `build_stage(config, workdir) -> Stage` and register
its name in `STAGES` below.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, Protocol

import jax
import numpy as np


class LossTerms(NamedTuple):
    total: jax.Array
    weight: jax.Array
    metrics: dict[str, tuple[jax.Array, jax.Array]]


class DataIterator(Protocol):
    """A host-local batch iterator whose position can be saved and restored."""

    def __next__(self) -> dict[str, np.ndarray]: ...

    def get_state(self) -> Any: ...  # JSON-able (dict/list/str/number) or bytes

    def set_state(self, state: Any) -> None: ...


@dataclasses.dataclass
class StepContext:
    """What the loop hands a stage that builds its own step (`Stage.build_step`)."""

    optimizer: Any  # optax.GradientTransformation over the trainable leaves
    schedule: Callable  # learning rate of update i
    mask: Any  # bool tree over the state's params: which leaves train
    mesh: Any
    rules: Any
    state_shardings: dict
    frozen: Any  # `frozen_params(...)` or None
    grad_accum: int
    workdir: str
    is_chief: bool


class Stage:
    """Base class; subclasses override what they need."""

    name: str = "stage"
    # Optimizer updates per loop step: the learning-rate schedule advances once per loop step (PPO runs
    # several minibatch updates per rollout and steps its schedule once per rollout).
    updates_per_step: int = 1

    def init_params(self, rng: jax.Array) -> Any:
        """Pure function of `rng` (it is traced under `jax.jit` with sharded outputs)."""
        raise NotImplementedError

    def param_axes(self) -> Any:
        """Same tree as `init_params`, leaves = tuples of logical axis names."""
        raise NotImplementedError

    def frozen_params(self, mesh, rules) -> dict | None:
        """Weights read but never trained nor checkpointed (a shared frozen base), already in their shardings.

        A dict whose top-level keys are added to the state's params before `loss` sees them."""
        return None

    def abstract_frozen(self, mesh, rules) -> dict | None:
        """What `frozen_params` would return, as `jax.ShapeDtypeStruct`s with their shardings, reading nothing
        (`fact-rlhf plan`)."""
        return None

    def loss(self, params: Any, batch: dict[str, jax.Array], rng: jax.Array) -> LossTerms:
        raise NotImplementedError

    def build_step(self, context: StepContext) -> Callable[[dict, dict], tuple[dict, dict]] | None:
        """A custom `step(state, host_batch) -> (state, metrics)`, or None for the standard gradient step.

        Receives the host-local numpy batch (the stage places it on the mesh itself)."""
        return None

    def eval_loss(self, params: Any, batch: dict[str, jax.Array]) -> LossTerms:
        """Loss on held-out data (deterministic); defaults to `loss` with a fixed key."""
        return self.loss(params, batch, jax.random.PRNGKey(0))

    def train_data(self, *, process_index: int, process_count: int, batch_size: int, seed: int) -> DataIterator:
        """Endless host-local iterator; `batch_size` rows per host."""
        raise NotImplementedError

    def eval_data(self, *, process_index: int, process_count: int, batch_size: int) -> Iterator | None:
        """A finite host-local iterator over the held-out split, or None."""
        return None

    def num_train_examples(self) -> int | None:
        """Records per epoch (to turn `num_epochs` into steps); None if unknown."""
        return None

    def count_tokens(self, batch: dict[str, np.ndarray]) -> int:
        """Real (non-pad) tokens in a host batch, for tokens/s."""
        mask = batch.get("attention_mask")
        return int(np.asarray(mask).sum()) if mask is not None else 0

    def load_pretrained(self, params: Any, shardings: Any) -> Any | None:
        """Called once on a fresh start with the initialised (sharded) params; return new params
        (e.g. with a pretrained projector or LLM loaded, placed in `shardings`) or None to keep them."""
        return None

    def pad_batch(self, batch: dict[str, np.ndarray], rows: int) -> dict[str, np.ndarray]:
        """Pads a short (last) eval batch to `rows` rows that contribute nothing: zeros, `labels` = -100."""

        def pad(key, x):
            x = np.asarray(x)
            fill = -100 if key == "labels" else 0
            extra = np.full((rows - x.shape[0], *x.shape[1:]), fill, x.dtype)
            return np.concatenate([x, extra])

        return {k: pad(k, v) for k, v in batch.items()}

    def to_global(self, batch: dict[str, np.ndarray], mesh) -> dict[str, jax.Array]:
        """Host-local numpy batch -> global arrays on the mesh."""
        from fact_rlhf_jax.sharding import host_local_to_global

        return host_local_to_global(batch, mesh)

    def finish(self, workdir: str, data: Any) -> None:
        """Called on process 0 after training (e.g. write a bad-record report)."""


# stage name -> module defining build_stage(config)
STAGES: dict[str, str] = {
    "sft": "fact_rlhf_jax.train.sft",
    "reward": "fact_rlhf_jax.train.reward",
    "dpo": "fact_rlhf_jax.train.dpo",
    "ppo": "fact_rlhf_jax.train.ppo",
}


def build_stage(config, workdir: str) -> Stage:
    """`config.stage` is a registered name or a dotted module path defining `build_stage(config, workdir)`."""
    name = config.stage
    if name in STAGES:
        module = STAGES[name]
    elif "." in name:
        module = name
    else:
        raise ValueError(f"config.stage={name!r}: unknown stage; expected one of {sorted(STAGES)} or a module path")
    return importlib.import_module(module).build_stage(config, workdir)
