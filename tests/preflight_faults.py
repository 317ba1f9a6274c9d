"""`python -m tests.preflight_faults ARGS`: launch.preflight.checks with faults put in from outside, on process 1
only, for tests/test_preflight.py; each fault is what a misconfigured host would show. The checks' own code is
unchanged; only the functions named here are wrapped. Faults come from the environment (launch.local passes it to
every process):

PREFLIGHT_FAULTS=no_data,unshared,clock   any of:
  no_data    process 1 reads a data directory that does not exist (a host without the mount)
  unshared   process 1 writes and reads its "shared" files in a private directory (a run directory on local disk),
             made in $PREFLIGHT_PRIVATE_DIR
  clock      process 1's clock is 5 s ahead (no time synchronisation on that host)
"""

import os
import sys
import tempfile
import time as real_time

import jax
from absl import app, flags

from cli.config_flags import check_config_overrides
from launch.preflight import checks

FAULTS = set(filter(None, os.environ.get("PREFLIGHT_FAULTS", "").split(",")))


def on_process_1() -> bool:
    return jax.process_index() == 1


def no_data() -> None:
    original = checks.input_facts

    def read(config, seconds):
        if on_process_1():
            config = config.copy_and_resolve_references()
            config.data.data_dir = "/nonexistent/movi"
        return original(config, seconds)

    checks.input_facts = read


def unshared() -> None:
    private = tempfile.mkdtemp(prefix="not-shared-", dir=os.environ.get("PREFLIGHT_PRIVATE_DIR"))
    write, read = checks.shared_facts, checks.read_peers

    def local(directories):
        return [os.path.join(private, str(i)) for i in range(len(directories))] if on_process_1() else directories

    checks.shared_facts = lambda directories, peers, token: write(local(directories), peers, token)
    checks.read_peers = lambda directories, peers, tokens: read(local(directories), peers, tokens)


class AheadClock:
    def __getattr__(self, name):
        return getattr(real_time, name)

    def time(self):
        return real_time.time() + (5.0 if on_process_1() else 0.0)


def clock() -> None:
    checks.time = AheadClock()


if __name__ == "__main__":
    for fault in sorted(FAULTS):
        {"no_data": no_data, "unshared": unshared, "clock": clock}[fault]()
    check_config_overrides(sys.argv)
    flags.mark_flags_as_required(["config", "workdir", "out"])
    app.run(checks.main)
