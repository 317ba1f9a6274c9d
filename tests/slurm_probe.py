"""Stands in for `python` under the fake SLURM of test_launch.py: joins jax.distributed the way the trainer does
and prints what this process was given, then exits with $PROBE_EXIT."""

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
print("PROBE " + json.dumps({"rank": jax.process_index(), "count": jax.process_count(),
                             "coordinator": distributed.global_state.coordinator_address, "argv": sys.argv[1:],
                             "procid": os.environ["SLURM_PROCID"], "xla_flags": os.environ.get("XLA_FLAGS", "")}),
      flush=True)
jax.distributed.shutdown()
sys.exit(int(os.environ.get("PROBE_EXIT", "0")))
