"""The process around the training: `jax.distributed`, signal forwarding, barriers with timeouts and the
persistent compilation cache. `initialize_distributed` must come before the first JAX computation.

Preemption rides on JAX's own mechanism: `jax.distributed.initialize()` (also for a single process) starts a
preemption sync manager whose C++ SIGTERM notifier propagates a signal to every process and agrees on a step;
Orbax's `reached_preemption(step)` reads that agreement. A Python SIGTERM handler would replace the notifier,
so there is none; SIGUSR1, which some sites send instead, is turned into a SIGTERM to ourselves.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
from typing import Any

import jax

from trainer import exits

# A multi-process layout, where a cluster does not give it: JAX detects SLURM, Open MPI and Kubernetes itself.
LAYOUT_ENV = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")


@dataclasses.dataclass(frozen=True)
class Layout:
    """Explicit overrides (trainer.main's --coordinator_address / --num_processes / --process_id); each None
    falls back to its JAX_* variable, then to the cluster's own detection."""
    coordinator_address: str | None = None
    num_processes: int | None = None
    process_id: int | None = None

    def from_env(self) -> Layout:
        address, count, index = (os.environ.get(k) for k in LAYOUT_ENV)
        return Layout(self.coordinator_address or address or None,
                      self.num_processes if self.num_processes is not None else (int(count) if count else None),
                      self.process_id if self.process_id is not None else (int(index) if index else None))

    @property
    def multi_process(self) -> bool:
        return (self.coordinator_address is not None or (self.num_processes or 1) > 1
                or (in_slurm_step() and int(os.environ.get("SLURM_NTASKS", "1")) > 1))


def in_slurm_step(env: dict[str, str] | None = None) -> bool:
    """Whether srun started this process as a task of a job step. SLURM_PROCID alone does not say so: an sbatch
    batch shell has SLURM_PROCID=0 (with SLURM_LOCALID and SLURM_NODEID 0, seen under Slurm 22.05 in
    tests/test_real_slurm.py), and there SLURM_NTASKS counts the allocation's tasks, not this process's peers.
    Only a step's tasks have SLURM_STEP_ID (srun(1), OUTPUT ENVIRONMENT VARIABLES)."""
    env = os.environ if env is None else env
    return "SLURM_PROCID" in env and "SLURM_STEP_ID" in env


def slurm_task_counts(spec: str) -> list[int]:
    """Tasks per node from Slurm's compressed form with repeats, e.g. "8(x2),4" -> [8, 8, 4]
    (SLURM_TASKS_PER_NODE and SLURM_STEP_TASKS_PER_NODE: sbatch(1) and srun(1), OUTPUT ENVIRONMENT VARIABLES).
    ValueError when it is not of that form."""
    counts: list[int] = []
    for part in spec.split(","):
        count, _, repeat = part.partition("(x")
        counts += [int(count)] * (int(repeat.rstrip(")")) if repeat else 1)
    return counts


def slurm_tasks_on_this_node(env: dict[str, str] | None = None) -> int | None:
    """The tasks of this job step on this node, from SLURM_STEP_TASKS_PER_NODE (else SLURM_TASKS_PER_NODE),
    indexed by SLURM_NODEID. None outside a step or when the value cannot be read."""
    env = os.environ if env is None else env
    spec = env.get("SLURM_STEP_TASKS_PER_NODE") or env.get("SLURM_TASKS_PER_NODE")
    if not in_slurm_step(env) or not spec or "SLURM_NODEID" not in env:
        return None
    try:
        counts = slurm_task_counts(spec)
    except ValueError:
        return None
    node = int(env["SLURM_NODEID"])
    return counts[node] if node < len(counts) else None


# What `local_device_ids` means to jax.distributed.initialize (jax/_src/distributed.py, State.initialize): None
# lets its cluster detection pick one, and under SLURM that is [SLURM_LOCALID], one GPU per process
# (jax/_src/clusters/cluster.py, auto_detect_unset_distributed_params); an empty list is left alone by the
# detection and restricts nothing ("if local_device_ids:" guards jax_cuda_visible_devices), so every GPU the
# process can see is used.
EVERY_LOCAL_DEVICE: list[int] = []


def local_device_ids(multi_process: bool, env: dict[str, str] | None = None) -> list[int] | None:
    """The devices this process drives. One process per GPU (several tasks on a node): JAX's own choice,
    [SLURM_LOCALID]. One process per node, or one process at all (srun -n1, inside an salloc): every local GPU.
    JAX_LOCAL_DEVICE_IDS, when set, is JAX's to read."""
    env = os.environ if env is None else env
    if env.get("JAX_LOCAL_DEVICE_IDS"):
        return None
    if not multi_process or slurm_tasks_on_this_node(env) == 1:
        return EVERY_LOCAL_DEVICE
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def initialize_distributed(layout: Layout | None = None, heartbeat_timeout_seconds: int = 100,
                           initialization_timeout_seconds: int = 300) -> None:
    """Multi-process when the layout, the environment (JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES /
    JAX_PROCESS_ID) or a cluster (SLURM with more than one task) says so; otherwise a one-process coordinator on
    127.0.0.1, which is what turns on the SIGTERM notifier."""
    if jax.distributed.is_initialized():
        return
    layout = (layout or Layout()).from_env()
    # JAX's own heartbeat check aborts a process (SIGABRT) when a peer goes silent; trainer/peers.py's fires
    # first, at heartbeat_timeout_seconds, and exits with exits.HUNG instead.
    timeouts = {"heartbeat_timeout_seconds": 2 * int(heartbeat_timeout_seconds) + 10,
                "initialization_timeout": int(initialization_timeout_seconds)}
    devices = local_device_ids(layout.multi_process)
    if layout.multi_process:
        try:
            jax.distributed.initialize(layout.coordinator_address, layout.num_processes, layout.process_id,
                                       local_device_ids=devices, **timeouts)
        except (ValueError, TypeError) as e:
            raise SystemExit(f"error: jax.distributed cannot start a multi-process run ({e}). Pass all of "
                             "--coordinator_address, --num_processes and --process_id (or set "
                             f"{', '.join(LAYOUT_ENV)}), or run under srun / mpirun / a Kubernetes JobSet") from None
    else:
        jax.distributed.initialize(f"127.0.0.1:{free_port()}", num_processes=1, process_id=0,
                                   local_device_ids=devices, **timeouts)


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


class BarrierTimeout(RuntimeError):
    """A process did not reach a barrier in time: a peer is dead or hung."""


def all_processes_reach(name: str, timeout_seconds: int) -> None:
    """A barrier on the coordination service, which (unlike a device collective) has a timeout: on a scheduler
    that kills every task when one exits non-zero (srun), no process may leave with the resumable code before
    all have finished their part of the preemption save."""
    if jax.process_count() > 1:
        from orbax.checkpoint import multihost

        try:
            multihost.sync_global_processes(name, timeout=int(timeout_seconds))
        except Exception as e:  # the coordination service raises its own status errors
            raise BarrierTimeout(f"not every process reached {name!r} within {timeout_seconds} s "
                                 f"({exits.one_line(e, 200)})") from None


def share_from_primary(name: str, value: Any, timeout_seconds: float = 300) -> Any:
    """Process 0 publishes `value` (anything JSON holds) on the coordination service's key-value store; every
    other process waits up to `timeout_seconds` for it and returns it (BarrierTimeout when it does not come).
    One process: `value`."""
    if jax.process_count() == 1:
        return value
    from jax._src import distributed

    client, key = distributed.global_state.client, f"statm_savi/{name}"
    if jax.process_index() == 0:
        client.key_value_set(key, json.dumps(value))
        return value
    try:
        return json.loads(client.blocking_key_value_get(key, int(timeout_seconds * 1000)))
    except Exception as e:  # the coordination service raises its own status errors
        raise BarrierTimeout(f"process 0 did not publish {name!r} within {timeout_seconds:g} s "
                             f"({exits.one_line(e, 200)})") from None
