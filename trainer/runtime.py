"""The process around the training: `jax.distributed`, signal forwarding and the persistent compilation cache.
All of it must happen before the first JAX computation.

Preemption rides on JAX's own mechanism: `jax.distributed.initialize()` (also for a single process) starts a
preemption sync manager whose C++ SIGTERM notifier propagates a signal to every process and agrees on a step;
Orbax's `reached_preemption(step)` reads that agreement. A Python SIGTERM handler would replace the notifier,
so there is none; SIGUSR1, which some sites send instead, is turned into a SIGTERM to ourselves.
"""

from __future__ import annotations

import os
import signal
import socket

import jax

# A multi-process layout, where a cluster does not give it: JAX detects SLURM, Open MPI and Kubernetes itself.
LAYOUT_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def initialize_distributed() -> None:
    """Multi-process when the environment says so (JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
    JAX_PROCESS_ID, or SLURM with more than one task); otherwise a one-process coordinator on 127.0.0.1, which
    is what turns on the SIGTERM notifier."""
    if jax.distributed.is_initialized():
        return
    address, count, index = (os.environ.get(k) for k in LAYOUT_ENV)
    if address or count or int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        try:
            jax.distributed.initialize(address, int(count) if count else None, int(index) if index else None)
        except ValueError as e:
            raise SystemExit(f"error: jax.distributed cannot start a multi-process run ({e}). Set all of "
                             f"{', '.join(LAYOUT_ENV)}, or run under srun / mpirun / a Kubernetes JobSet") from None
    else:
        jax.distributed.initialize(f"127.0.0.1:{free_port()}", num_processes=1, process_id=0)


def shutdown_distributed() -> None:
    """Leaves the coordination service now rather than at interpreter exit, so that it is timed."""
    if jax.distributed.is_initialized():
        jax.distributed.shutdown()


def forward_sigusr1_to_sigterm() -> None:
    """SIGUSR1 takes the SIGTERM path (JAX's notifier), for schedulers configured to send it."""
    signal.signal(signal.SIGUSR1, lambda *_: os.kill(os.getpid(), signal.SIGTERM))


def enable_compilation_cache(directory: str, min_compile_seconds: float) -> str:
    """JAX's persistent compilation cache in `directory` (absolute; created): a restart loads its compiled
    steps instead of compiling them again. Returns the directory."""
    directory = os.path.abspath(directory)
    os.makedirs(directory, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
    return directory


def all_processes_reach(name: str) -> None:
    """A barrier: on a scheduler that kills every task when one exits non-zero (srun), no process may leave
    with the resumable code before all have finished their part of the preemption save."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
