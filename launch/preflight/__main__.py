"""python -m launch.preflight: is this allocation ready for the real job? One verdict table in a few minutes.

On a SLURM allocation of the job's shape (launch/slurm/preflight.sbatch runs this on the batch host):
    python -m launch.preflight --launcher slurm -- --config CONFIG --workdir RUN_DIR --config.data.data_dir=DIR
On one machine, N processes x M fake CPU devices (what `make test` runs):
    python -m launch.preflight --launcher local --num_processes 2 --devices_per_process 2 -- --config ...

1. launch.preflight.checks on every process: processes and devices, the coordinator, an all-reduce (its sum
   and bus bandwidth), the data on every host and its input rate against --assumed_step_seconds, RUN_DIR and the
   compilation cache shared by all hosts, the write bandwidth of one save, the clock skew;
2. the preemption rehearsal (launch/preflight/rehearsal.py) in RUN_DIR/preflight/ID/rehearsal;
3. the table, also written to RUN_DIR/preflight/ID/verdict.json. Exit 0 when every check passed, else 1.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

from configs.validate import expand_path
from launch.preflight import rehearsal, verdict
from launch.preflight.verdict import Row


def slurm_preempt(proc: subprocess.Popen) -> None:
    """What a preemption does to the job (scancel(1), --signal: the tasks of its steps, not the batch shell)."""
    job = os.environ["SLURM_JOB_ID"]
    r = subprocess.run(["scancel", "--signal=TERM", job], capture_output=True, text=True)
    if r.returncode != 0:
        print(f"preflight: scancel --signal=TERM {job} failed ({r.returncode}): {r.stderr.strip()}", flush=True)


def launcher(kind: str, num_processes: int, devices_per_process: int, python: str):
    """module -> the command prefix that runs `python -m module` on every process of the job."""
    if kind == "slurm":
        # No --kill-on-bad-exit (as train.sbatch): the rehearsal's SIGTERM must reach every task and let each save.
        return lambda module: ["srun", "--kill-on-bad-exit=0", "--cpu-bind=none", python, "-m", module]
    return lambda module: [python, "-m", "launch.local", "--num_processes", str(num_processes),
                           "--devices_per_process", str(devices_per_process), "--module", module, "--"]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ours, job = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    p = argparse.ArgumentParser(prog="python -m launch.preflight", description=__doc__.splitlines()[0])
    p.add_argument("--launcher", choices=("slurm", "local"), default="slurm" if "SLURM_JOB_ID" in os.environ
                   else "local")
    p.add_argument("--num_processes", type=int, default=None, help="local: processes; slurm: SLURM_NTASKS")
    p.add_argument("--devices_per_process", type=int, default=1, help="local: fake CPU devices per process")
    p.add_argument("--expect_devices_per_process", type=int, default=None,
                   help="devices each process should drive (default: SLURM_GPUS_ON_NODE / tasks per node)")
    p.add_argument("--assumed_step_seconds", type=float, default=0.0,
                   help="the step time the input must keep up with (0: report the input rate only)")
    p.add_argument("--input_seconds", type=float, default=20.0)
    p.add_argument("--max_clock_skew_seconds", type=float, default=1.0)
    p.add_argument("--rehearsal_timeout_seconds", type=float, default=900.0,
                   help="for the first checkpoint, and for the processes to end after SIGTERM")
    p.add_argument("--skip_rehearsal", action="store_true")
    p.add_argument("--checks_module", default="launch.preflight.checks", help=argparse.SUPPRESS)  # tests' faults
    p.add_argument("--python", default=sys.executable)
    args = p.parse_args(ours)
    run_dir = rehearsal.workdir_of(job)
    if not job or run_dir is None:
        p.error("pass the job's trainer arguments after --: -- --config CONFIG --workdir RUN_DIR "
                "--config.data.data_dir=DIR")
    count = args.num_processes or int(os.environ.get("SLURM_NTASKS", "1"))
    launch = launcher(args.launcher, count, args.devices_per_process, args.python)
    ident = os.environ.get("SLURM_JOB_ID") or time.strftime("%Y%m%d-%H%M%S")
    out_dir = os.path.join(os.path.abspath(expand_path(run_dir)), "preflight", ident)
    checks = os.path.join(out_dir, "checks.json")
    print(f"preflight: {count} process(es) by {args.launcher}; results in {out_dir}", flush=True)
    cmd = [*launch(args.checks_module), *job, f"--out={checks}", f"--expect_processes={count}",
           f"--assumed_step_seconds={args.assumed_step_seconds}", f"--input_seconds={args.input_seconds}",
           f"--max_clock_skew_seconds={args.max_clock_skew_seconds}"]
    if args.expect_devices_per_process:
        cmd.append(f"--expect_devices_per_process={args.expect_devices_per_process}")
    rc = subprocess.run(cmd).returncode
    try:
        rows = verdict.read(checks)
    except (OSError, ValueError):
        rows = [Row("every process started", False, f"exit {rc}", "the checks did not finish (the log above says "
                    "why): a process that did not start, a coordinator that cannot be reached, or a crash")]
    if not args.skip_rehearsal:
        preempt = slurm_preempt if args.launcher == "slurm" else rehearsal.signal_launcher
        rows += rehearsal.rehearse(launch, job, os.path.join(out_dir, "rehearsal"), count,
                                   args.rehearsal_timeout_seconds, preempt=preempt)
    verdict.write(os.path.join(out_dir, "verdict.json"), rows)
    print(verdict.table(rows), flush=True)
    return 0 if all(r.ok for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
