"""Stands in for the trainer in the batch scripts' tests, under the real Slurm (tests/test_real_slurm.py) and the
fake one (tests/fake_slurm.py): joins jax.distributed the way the trainer does (unless $PROBE_SKIP_JAX) and writes
what this process was given to $PROBE_DIR/<SLURM_PROCID>.json, then records and exits with its code: $PROBE_EXIT,
or the SLURM_PROCID-th entry of the comma-separated $PROBE_EXITS.

A file per process, not stdout: the tasks share one pipe, and two `print`s can interleave within a line (seen in
CI when stdout is unbuffered: print writes the text and its newline as two writes)."""

import json
import os
import signal  # noqa: F401
import sys

sys.path.insert(0, os.environ["REPO"])
from trainer import exits  # noqa: E402

rank = int(os.environ["SLURM_PROCID"])
# PROBE_LATER_EXITS, when set, replaces PROBE_EXITS / PROBE_EXIT for every start of this rank after its first
# (a job that a restart mends).
first = not os.path.exists(os.path.join(os.environ["PROBE_DIR"], f"ran.{rank}"))
open(os.path.join(os.environ["PROBE_DIR"], f"ran.{rank}"), "a").close()
exits_spec = os.environ.get("PROBE_EXITS") if first or "PROBE_LATER_EXITS" not in os.environ else os.environ[
    "PROBE_LATER_EXITS"]
code = int(exits_spec.split(",")[rank]) if exits_spec else int(os.environ.get("PROBE_EXIT", "0"))
exits.record_to(next((a.split("=", 1)[1] for a in sys.argv if a.startswith("--exit_record_dir=")), None))
if os.environ.get("PROBE_SKIP_JAX"):
    with open(os.path.join(os.environ["PROBE_DIR"], os.environ["SLURM_PROCID"] + ".json"), "w") as f:
        json.dump({"procid": os.environ["SLURM_PROCID"], "node": os.environ.get("SLURMD_NODENAME"),
                   "cpus_per_task": os.environ.get("SLURM_CPUS_PER_TASK"), "argv": sys.argv[1:]}, f)
    if code > 128:  # killed by signal code - 128 (the OOM killer: SIGKILL): no record
        os.kill(os.getpid(), code - 128)
    exits.record(code, rank)
    sys.exit(code)

import jax  # noqa: E402
from jax._src import distributed  # noqa: E402

from trainer import runtime  # noqa: E402

runtime.initialize_distributed(heartbeat_timeout_seconds=10, initialization_timeout_seconds=60)
probe = {"rank": jax.process_index(), "count": jax.process_count(),
         "coordinator": distributed.global_state.coordinator_address, "argv": sys.argv[1:],
         "procid": os.environ["SLURM_PROCID"], "xla_flags": os.environ.get("XLA_FLAGS", ""),
         "cpus_per_task": os.environ.get("SLURM_CPUS_PER_TASK"),
         "visible_devices": jax.config.values["jax_cuda_visible_devices"]}
with open(os.path.join(os.environ["PROBE_DIR"], os.environ["SLURM_PROCID"] + ".json"), "w") as f:
    json.dump(probe, f)
jax.distributed.shutdown()
exits.record(code, rank)
sys.exit(code)
