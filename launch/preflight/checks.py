"""The preflight's measurements, one process per rank, on the job's own layout (srun, launch.local, a JobSet):

    python -m launch.preflight.checks --config CONFIG --workdir RUN_DIR --config.data.data_dir=DIR \
        --out RUN_DIR/preflight/ID/checks.json [--expect_processes N] [--expect_devices_per_process M] \
        [--assumed_step_seconds S] [--input_seconds 20] [--max_clock_skew_seconds 1]

Every process measures what it sees; process 0 gathers the figures through the coordination service (so that
the table exists even when RUN_DIR is not shared) and writes one row per check to --out. `python -m
launch.preflight` runs this, then the SIGTERM rehearsal, and prints the verdict table.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags, logging
from jax.sharding import PartitionSpec
from ml_collections import config_flags

from cli.config_flags import check_config_overrides
from configs.validate import expand_path, expand_paths, validate
from data.pipeline import datasets
from launch.preflight import measures
from launch.preflight.verdict import table, write
from trainer import mesh as mesh_lib
from trainer import runtime
from trainer.run import compilation_cache_dir

_CONFIG = config_flags.DEFINE_config_file("config", None, "The job's config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The job's run directory (shared storage).")
_OUT = flags.DEFINE_string("out", None, "Where process 0 writes the rows (JSON).")
_EXPECT_PROCESSES = flags.DEFINE_integer("expect_processes", None, "Processes the job should have "
                                         "(default: SLURM_NTASKS / JAX_NUM_PROCESSES, when set).")
_EXPECT_DEVICES = flags.DEFINE_integer("expect_devices_per_process", None, "Devices each process should drive "
                                       "(default: SLURM_GPUS_ON_NODE / tasks on the node, when SLURM says).")
_STEP_SECONDS = flags.DEFINE_float("assumed_step_seconds", 0.0, "The step time the input must keep up with "
                                   "(BENCHMARKS.md, capacity plan); 0: report the input rate without a verdict.")
_INPUT_SECONDS = flags.DEFINE_float("input_seconds", 20.0, "How long each process reads its input stream.")
_MAX_SKEW = flags.DEFINE_float("max_clock_skew_seconds", 1.0, "The largest clock difference between hosts.")
_TIMEOUT = flags.DEFINE_integer("timeout_seconds", 600, "How long a process waits for the others at each step.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "As trainer.main's.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "As trainer.main's.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "As trainer.main's.")


class Peers:
    """Barriers (runtime.all_processes_reach) and an all-to-one gather on the coordination service's key-value
    store (one process: local)."""

    def __init__(self, timeout_seconds: int):
        from jax._src import distributed

        self.client, self.timeout_seconds = distributed.global_state.client, timeout_seconds
        self.timeout_ms = timeout_seconds * 1000
        self.index, self.count = jax.process_index(), jax.process_count()

    def barrier(self, name: str) -> None:
        runtime.all_processes_reach(f"preflight-{name}", self.timeout_seconds)

    def gather(self, name: str, value) -> list | None:
        """Every process's `value` in process order, on process 0; None elsewhere."""
        if self.count == 1:
            return [value]
        self.client.key_value_set(f"preflight/{name}/{self.index}", json.dumps(value))
        if self.index:
            return None
        return [json.loads(self.client.blocking_key_value_get(f"preflight/{name}/{i}", self.timeout_ms))
                for i in range(self.count)]


def expected_processes() -> int | None:
    """What the scheduler started: SLURM_NTASKS inside a job step, else JAX_NUM_PROCESSES (a JobSet's)."""
    if "SLURM_PROCID" in os.environ and os.environ.get("SLURM_NTASKS"):
        return int(os.environ["SLURM_NTASKS"])
    return int(os.environ["JAX_NUM_PROCESSES"]) if os.environ.get("JAX_NUM_PROCESSES") else None


def expected_devices() -> int | None:
    gpus, tasks = os.environ.get("SLURM_GPUS_ON_NODE"), runtime.slurm_tasks_on_this_node()
    return int(gpus) // tasks if gpus and tasks else None


def device_facts() -> dict:
    devices = jax.local_devices()
    return {"host": socket.gethostname(), "count": len(devices), "platform": devices[0].platform,
            "kind": devices[0].device_kind, "visible": jax.config.values.get("jax_cuda_visible_devices"),
            "runtime": getattr(devices[0].client, "platform_version", "")}


def all_reduce(mesh, megabytes: float) -> dict:
    """A psum over every device: each adds its index + 1, so every element must be n(n + 1) / 2; then the bus
    bandwidth of an all-reduce of `megabytes` per device (nccl-tests' definition: algorithm bandwidth times
    2(n - 1)/n)."""
    n = mesh.size
    axis = mesh_lib.DATA_AXIS
    reduce = jax.jit(jax.shard_map(lambda x: jax.lax.psum(x, axis), mesh=mesh, in_specs=PartitionSpec(axis),
                                   out_specs=PartitionSpec(axis)))
    sharding = mesh_lib.batch_sharding(mesh)
    width = max(1, int(megabytes * 2**20 / 4))
    small = jax.make_array_from_callback((n, 8), sharding, lambda idx: np.full(
        (1, 8), np.arange(n)[idx[0]][0] + 1, np.float32))
    got = {float(v) for shard in reduce(small).addressable_shards for v in np.asarray(shard.data).ravel()}
    big = jax.device_put(jnp.ones((n, width), jnp.float32), sharding)
    reduce(big).block_until_ready()
    rounds = 5
    start = time.perf_counter()
    for _ in range(rounds):
        out = reduce(big)
    out.block_until_ready()
    seconds = (time.perf_counter() - start) / rounds
    return {"got": sorted(got), "expected": n * (n + 1) / 2, "devices": n, "seconds": seconds,
            "bus_gb_per_s": measures.bus_bandwidth(width * 4, seconds, n) / 1e9}


def input_facts(config, seconds: float) -> dict:
    """This process's share of the training stream for `seconds`, after one batch of warm-up."""
    out = {"host": socket.gethostname(), "error": None, "videos": 0, "seconds": 0.0}
    try:
        spec = datasets.spec_from_config(config)
        source = datasets.open_split(config.data.data_dir, config.data.train_split, spec.max_instances)
        datasets.open_split(config.data.data_dir, config.data.eval_split, spec.max_instances)
        d = config.data
        it = datasets.train_iterator(datasets.train_dataset(source, spec, config.seed), config.batch_size,
                                     jax.process_index(), jax.process_count(), d.worker_count, d.read_threads,
                                     d.prefetch_buffer_size)
        next(it)
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            out["videos"] += len(next(iter(next(it).values())))
        out["seconds"] = time.perf_counter() - start
    except Exception as e:  # a missing mount, a corrupt shard: the row names it
        out["error"] = f"{type(e).__name__}: {e}"[:300]
    return out


def shared_facts(directories: list[str], peers: Peers, token: str) -> dict:
    """Writes this process's token into each directory; after a barrier, reads every other process's."""
    mine = {}
    for d in directories:
        try:
            os.makedirs(d, exist_ok=True)
            with open(os.path.join(d, f"from-{peers.index}"), "w") as f:
                f.write(token)
        except OSError as e:
            mine[d] = f"cannot write: {e.strerror}"
    return mine


def read_peers(directories: list[str], peers: Peers, tokens: list[str]) -> dict:
    """{directory: [processes whose file this process cannot see, or sees with another content]}."""
    unseen = {}
    for d in directories:
        for i, token in enumerate(tokens):
            try:
                with open(os.path.join(d, f"from-{i}")) as f:
                    ok = f.read() == token
            except OSError:
                ok = False
            if not ok:
                unseen.setdefault(d, []).append(i)
    return unseen


def clock_skew(peers: Peers, rounds: int = 3) -> float | None:
    """The smallest, over `rounds`, spread of the hosts' clocks read right after one barrier (an upper bound:
    the barrier's release reaches the hosts a network delay apart)."""
    best = None
    for r in range(rounds):
        peers.barrier(f"clock-{r}")
        times = peers.gather(f"clock-{r}", time.time())
        if times is not None:
            spread = max(times) - min(times)
            best = spread if best is None else min(best, spread)
    return best


def measure(config, workdir: str, out: str) -> bool:
    """True when every check passed (process 0), or for the other processes."""
    start = time.perf_counter()
    runtime.initialize_distributed(runtime.Layout(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value),
                                   initialization_timeout_seconds=_TIMEOUT.value)
    init_seconds = time.perf_counter() - start
    peers = Peers(_TIMEOUT.value)
    start = time.perf_counter()
    peers.barrier("started")
    barrier_seconds = time.perf_counter() - start
    devices = peers.gather("devices", device_facts())
    mesh = mesh_lib.make_mesh()
    reduce = all_reduce(mesh, 64 if jax.default_backend() == "gpu" else 4)
    peers.barrier("input")
    inputs = peers.gather("input", input_facts(config, _INPUT_SECONDS.value))
    shared_dirs = [os.path.join(os.path.dirname(out), "shared")]
    cache = compilation_cache_dir(config, workdir)
    if cache:
        shared_dirs.append(os.path.join(cache, f"preflight-{os.path.basename(os.path.dirname(out))}"))
    token = secrets.token_hex(8)
    write_errors = shared_facts(shared_dirs, peers, token)
    tokens = runtime.share_from_primary("preflight-tokens", peers.gather("tokens", token), peers.timeout_seconds)
    peers.barrier("written")
    unseen = peers.gather("shared", {"write": write_errors, "unseen": read_peers(shared_dirs, peers, tokens)})
    peers.barrier("read")
    for d in shared_dirs:
        try:
            os.remove(os.path.join(d, f"from-{peers.index}"))
        except OSError:
            pass
    skew = clock_skew(peers)
    save = measures.save_bandwidth(os.path.dirname(out), measures.state_bytes(config)) if peers.index == 0 else None
    if peers.index == 0:
        rows = [
            measures.processes_row(jax.process_count(), _EXPECT_PROCESSES.value or expected_processes()),
            measures.devices_row(devices, _EXPECT_DEVICES.value or expected_devices()),
            measures.coordinator_row(runtime_address(), init_seconds, barrier_seconds),
            measures.all_reduce_row(reduce),
            *measures.input_rows(inputs, config.batch_size, jax.process_count(), _STEP_SECONDS.value,
                                 config.data.data_dir),
            measures.shared_row(unseen, shared_dirs),
            measures.save_row(save),
            measures.clock_row(skew, _MAX_SKEW.value, len({d["host"] for d in devices})),
        ]
        write(out, rows)
        print(table(rows), flush=True)
    peers.barrier("done")
    if peers.index == 0:
        for d in shared_dirs:
            shutil.rmtree(d, ignore_errors=True)
    return peers.index != 0 or all(r.ok for r in rows)


def runtime_address() -> str:
    from jax._src import distributed

    return distributed.global_state.coordinator_address or "?"


def main(argv) -> int:
    del argv
    logging.set_verbosity(logging.WARNING)
    config = expand_paths(_CONFIG.value)
    validate(config, num_devices=None)
    workdir = os.path.abspath(expand_path(_WORKDIR.value))
    ok = measure(config, workdir, os.path.abspath(expand_path(_OUT.value)))
    runtime.shutdown_distributed()
    return 0 if ok else 1


if __name__ == "__main__":
    check_config_overrides(sys.argv)
    flags.mark_flags_as_required(["config", "workdir", "out"])
    app.run(main)
