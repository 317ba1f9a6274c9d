"""A stand-in for SLURM's srun and scontrol on one machine, kept only for what this machine cannot have: GPUs and
their gres, where the tests check which devices each process of train.sbatch drives (tests/test_launch.py).
Everything else about the SLURM scripts runs under a real Slurm (tests/real_slurm.py). It models only what those
GPU tests rely on, each from srun(1) / scontrol(1), and is not evidence of how SLURM behaves:

- srun starts SLURM_NTASKS copies of the command (or -n/--ntasks), SLURM_NTASKS_PER_NODE per node, and gives each
  task SLURM_STEP_ID, SLURM_PROCID, SLURM_LOCALID, SLURM_NODEID, SLURM_STEP_NODELIST, SLURM_STEP_NUM_NODES and
  SLURM_STEP_TASKS_PER_NODE in srun's "N(xM)" form (srun(1), OUTPUT ENVIRONMENT VARIABLES);
- the step's CPUs per task come from --cpus-per-task or SRUN_CPUS_PER_TASK (srun(1), --cpus-per-task);
- srun's status is the highest exit code of its tasks (srun(1), RETURN VALUE);
- signals are not modelled (a real srun SIGKILLs its tasks on SIGTERM);
- `scontrol` and every srun call are only logged, to $FAKE_SLURM_LOG; `scontrol show` prints nothing.
"""

from __future__ import annotations

import os
import socket
import stat
import time

SRUN = r"""#!/bin/bash
echo "srun $*" >> "$FAKE_SLURM_LOG"
ntasks=$SLURM_NTASKS per_node=${SLURM_NTASKS_PER_NODE:-$SLURM_NTASKS} cpus=${SRUN_CPUS_PER_TASK:-1}
while [[ $1 == -* ]]; do
  case $1 in
    --cpus-per-task=*) cpus=${1#*=} ;;
    -c) cpus=$2; shift ;;
    --ntasks=*) ntasks=${1#*=} ;;
    -n) ntasks=$2; shift ;;
    --ntasks-per-node=*) per_node=${1#*=} ;;
  esac
  shift
done
if ((per_node > ntasks)); then per_node=$ntasks; fi
nodes=$(((ntasks + per_node - 1) / per_node))
pids=()
for ((i = 0; i < ntasks; i++)); do
  SLURM_STEP_ID=0 SLURM_NTASKS=$ntasks SLURM_PROCID=$i SLURM_LOCALID=$((i % per_node)) SLURM_NODEID=$((i / per_node)) \
    SLURM_STEP_NODELIST=$SLURM_JOB_NODELIST SLURM_STEP_NUM_NODES=$nodes \
    SLURM_STEP_TASKS_PER_NODE="$per_node(x$nodes)" SLURM_CPUS_PER_TASK=$cpus "$@" &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do
  wait "$p"; c=$?
  if ((c > rc)); then rc=$c; fi
done
exit $rc
"""
SCONTROL = """#!/bin/bash
echo "scontrol $*" >> "$FAKE_SLURM_LOG"
"""


def executable(path, text: str) -> str:
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return str(path)


def install(bindir) -> None:
    """srun and scontrol stubs in `bindir` (put it first on PATH)."""
    os.makedirs(bindir, exist_ok=True)
    executable(os.path.join(bindir, "srun"), SRUN)
    executable(os.path.join(bindir, "scontrol"), SCONTROL)


def free_slurm_job_id() -> int:
    """A job id whose coordinator port (JAX: 61440 + id mod 4096) is free here."""
    for job in range(int(time.time()) % 4096, 1_000_000, 7):
        port = 65535 - 4095 + job % 4096
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return job
            except OSError:
                continue
    raise RuntimeError("no free port in 61440-65535")
