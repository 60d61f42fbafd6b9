"""Orbax checkpoints of the train state plus every host's data-iterator position.

Layout: `WORKDIR/checkpoints/<step>/{state, data}`:
  state  the train-state pytree (params, opt_state, step, rng), saved asynchronously and
         restored straight into the target shardings;
  data   one `process_<i>-of-<n>.json` per host with its iterator's `get_state()`.
The last `keep` checkpoints are kept.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from fact_rlhf_jax import paths

log = logging.getLogger(__name__)


def _state_file(directory: epath.Path) -> epath.Path:
    return directory / f"process_{jax.process_index()}-of-{jax.process_count()}.json"


class IteratorStateHandler(ocp.CheckpointHandler):
    """Saves this host's iterator state (JSON-able or bytes) as one JSON file per process."""

    def save(self, directory: epath.Path, args: "IteratorStateSave"):
        state = args.state
        payload = {"bytes": state.decode()} if isinstance(state, (bytes, bytearray)) else {"json": state}
        _state_file(directory).write_text(json.dumps(payload))

    def restore(self, directory: epath.Path, args: "IteratorStateRestore | None" = None):
        path = _state_file(directory)
        if not path.exists():
            raise FileNotFoundError(
                f"{path}: no data-iterator state for process {jax.process_index()} of {jax.process_count()} "
                "(was the checkpoint written with a different number of hosts?)"
            )
        payload = json.loads(path.read_text())
        return payload["bytes"].encode() if "bytes" in payload else payload["json"]

    def metadata(self, directory: epath.Path):
        return None

    def finalize(self, directory: epath.Path):
        pass

    def close(self):
        pass


@ocp.args.register_with_handler(IteratorStateHandler, for_save=True)
@dataclasses.dataclass
class IteratorStateSave(ocp.args.CheckpointArgs):
    state: Any


@ocp.args.register_with_handler(IteratorStateHandler, for_restore=True)
@dataclasses.dataclass
class IteratorStateRestore(ocp.args.CheckpointArgs):
    pass


class Checkpointer:
    """Thin wrapper over `ocp.CheckpointManager` for (state, data-iterator state)."""

    def __init__(self, directory: str | os.PathLike, *, keep: int = 3, async_save: bool = True):
        self.directory = paths.workdir(directory)  # local or gs://
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep,
            create=True,
            enable_async_checkpointing=async_save,
        )
        self.manager = ocp.CheckpointManager(
            self.directory,
            options=options,
            item_handlers={"state": ocp.StandardCheckpointHandler(), "data": IteratorStateHandler()},
        )

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: Any, data_state: Any, *, force: bool = False) -> bool:
        """Starts an (asynchronous) save; returns whether one was started."""
        if step in self.manager.all_steps():
            return False
        return self.manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), data=IteratorStateSave(data_state)),
            force=force,
        )

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, Any]:
        """Restores into `abstract_state` (ShapeDtypeStructs carrying shardings). Returns (state, data_state)."""
        restored = self.manager.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), data=IteratorStateRestore()),
        )
        return restored["state"], restored["data"]

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
