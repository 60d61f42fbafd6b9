"""Multi-host start-up: one call before anything touches devices.

On TPU VMs and SLURM/Open MPI clusters `jax.distributed.initialize()` discovers everything itself. Elsewhere
(plain multi-node GPU, or several processes on one machine) set:

  JAX_COORDINATOR_ADDRESS host:port of process 0
  JAX_NUM_PROCESSES       number of processes
  JAX_PROCESS_ID          this process's rank (0-based)
  JAX_LOCAL_DEVICE_IDS    optional: comma-separated local device ids this process owns
"""

from __future__ import annotations

import logging
import os

import jax

log = logging.getLogger(__name__)
_done = False


def initialize(force: bool = False) -> None:
    """Initialises `jax.distributed` when the environment asks for more than one process; idempotent.

    `force=True` calls `jax.distributed.initialize()` even when no cluster is detected (let JAX decide).
    """
    global _done
    if _done:
        return
    coordinator = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if coordinator:
        num = int(os.environ["JAX_NUM_PROCESSES"])
        pid = int(os.environ["JAX_PROCESS_ID"])
        local = os.environ.get("JAX_LOCAL_DEVICE_IDS")
        if jax.config.jax_platforms in (None, "", "cpu") or os.environ.get("JAX_PLATFORMS", "") == "cpu":
            # Cross-process collectives on CPU need an explicit implementation.
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address=coordinator, num_processes=num, process_id=pid,
            local_device_ids=[int(x) for x in local.split(",")] if local else None,
        )
    elif force or _auto_cluster():
        jax.distributed.initialize()
    _done = True
    if jax.process_count() > 1:
        log.info("process %d of %d, %d local / %d global devices", jax.process_index(), jax.process_count(),
                 jax.local_device_count(), jax.device_count())


def _auto_cluster() -> bool:
    """True on multi-host TPU pods and SLURM / Open MPI jobs, where JAX can discover its peers."""
    if os.environ.get("SLURM_NTASKS", "1") not in ("", "1") or os.environ.get("OMPI_COMM_WORLD_SIZE", "1") != "1":
        return True
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES") or os.environ.get("MEGASCALE_NUM_SLICES")
    return bool(hosts and "," in hosts)
