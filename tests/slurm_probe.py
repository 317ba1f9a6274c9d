"""Stands in for `python` under the fake SLURM of test_launch.py: joins jax.distributed the way the trainer does
and writes what this process was given to $PROBE_DIR/<SLURM_PROCID>.json, then exits with $PROBE_EXIT.

A file per process, not stdout: the tasks share one pipe, and two `print`s can interleave within a line (seen in
CI when stdout is unbuffered: print writes the text and its newline as two writes)."""

import json
import os
import sys

if os.environ.get("PROBE_SKIP_JAX"):
    sys.exit(int(os.environ.get("PROBE_EXIT", "0")))
sys.path.insert(0, os.environ["REPO"])

import jax  # noqa: E402
from jax._src import distributed  # noqa: E402

from trainer import runtime  # noqa: E402

runtime.initialize_distributed(heartbeat_timeout_seconds=10, initialization_timeout_seconds=60)
probe = {"rank": jax.process_index(), "count": jax.process_count(),
         "coordinator": distributed.global_state.coordinator_address, "argv": sys.argv[1:],
         "procid": os.environ["SLURM_PROCID"], "xla_flags": os.environ.get("XLA_FLAGS", "")}
with open(os.path.join(os.environ["PROBE_DIR"], os.environ["SLURM_PROCID"] + ".json"), "w") as f:
    json.dump(probe, f)
jax.distributed.shutdown()
sys.exit(int(os.environ.get("PROBE_EXIT", "0")))
