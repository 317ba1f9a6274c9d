"""The preflight's preemption rehearsal: the real trainer, on the job's layout and config, in a scratch workdir.

1. Train until a checkpoint exists (checkpoint_every_steps=2), then preempt the job as the scheduler would
   (`preempt`): under SLURM `scancel --signal=TERM $SLURM_JOB_ID`, which signals the tasks of the job's steps and
   not the batch shell, as a preemption and the time limit's --signal warning do. Not a SIGTERM to srun: srun
   answers that by SIGKILLing its tasks ("forcing job termination", seen on Slurm 22.05; srun(1), SIGNALS AND
   ESCAPE SEQUENCES), so nothing would be saved. On one machine, SIGTERM to launch.local, which passes it to
   every process. Every process must record exit 75 (`trainer.main --exit_record_dir`): the signal reached it
   and it saved.
2. Start again with two more steps: the run must restore the step it saved and finish (exit 0).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable

from launch.preflight.verdict import Row
from launch.requeue import newest_step
from trainer import exits

# The trainer's keys that make the rehearsal short: a checkpoint every 2 steps, no evaluation until the end.
OVERRIDES = ["--config.checkpoint_every_steps=2", "--config.eval_every_steps=1000000000",
             "--config.log_loss_every_steps=1", "--config.eval_at_start=False"]


def workdir_of(args: list[str]) -> str | None:
    """The --workdir of trainer arguments (either form), or None."""
    for i, a in enumerate(args):
        if a in ("--workdir", "-workdir") and i + 1 < len(args):
            return args[i + 1]
        if a.startswith(("--workdir=", "-workdir=")):
            return a.split("=", 1)[1]
    return None


def without_workdir(args: list[str]) -> list[str]:
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a in ("--workdir", "-workdir"):
            skip = True
        elif not a.startswith(("--workdir=", "-workdir=")):
            out.append(a)
    return out


def _wait_for(condition: Callable[[], bool], seconds: float, proc: subprocess.Popen) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        if condition():
            return True
        time.sleep(1.0)
    return condition()


def restored_step(workdir: str) -> int | None:
    """The step the newest attempt restored, from WORKDIR/events.jsonl (trainer/events.py: "restore")."""
    last = None
    try:
        with open(os.path.join(workdir, "events.jsonl")) as f:
            for line in f:
                e = json.loads(line)
                if e.get("event") == "restore":
                    last = e.get("step")
    except (OSError, ValueError):
        return None
    return last


def signal_launcher(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)


def rehearse(launch: Callable[[str], list[str]], trainer_args: list[str], workdir: str, num_processes: int,
             timeout_seconds: float, log: Callable[[str], None] = print,
             preempt: Callable[[subprocess.Popen], None] = signal_launcher) -> list[Row]:
    """`launch(module)` is the command prefix that runs `python -m module` on every process of the job;
    `preempt(proc)` signals that job's processes as a preemption does."""
    base = [*without_workdir(trainer_args), f"--workdir={workdir}", *OVERRIDES]
    first = os.path.join(workdir, "attempts", "preempted")
    cmd = [*launch("trainer.main"), *base, "--config.num_train_steps=1000000", f"--exit_record_dir={first}"]
    log(f"rehearsal: training until the first checkpoint, then a preemption ({' '.join(cmd[:6])} ...)")
    proc = subprocess.Popen(cmd)
    saved_before = _wait_for(lambda: (newest_step(workdir) or 0) >= 2, timeout_seconds, proc)
    if not saved_before:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        return [Row("SIGTERM reaches every process and it saves", False, "no checkpoint",
                    f"no step saved within {timeout_seconds:g} s (exit {proc.returncode}); the log above says why")]
    sent = time.monotonic()
    preempt(proc)
    try:
        proc.wait(timeout=timeout_seconds)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    seconds = time.monotonic() - sent
    codes = exits.read_records(first)
    saved = newest_step(workdir)
    got = [codes.get(i) for i in range(num_processes)]
    ok = got == [exits.PREEMPTED] * num_processes
    rows = [Row("SIGTERM reaches every process and it saves", ok, f"{got.count(exits.PREEMPTED)} of {num_processes} "
                f"exited {exits.PREEMPTED} in {seconds:.0f} s", f"step {saved} saved" if ok else
                f"exit codes by process {got} (None: no record, killed): a process that did not get the signal, or "
                "could not save; the log above says which")]
    if not ok:
        return rows
    second = os.path.join(workdir, "attempts", "resumed")
    cmd = [*launch("trainer.main"), *base, f"--config.num_train_steps={saved + 2}", f"--exit_record_dir={second}"]
    log(f"rehearsal: resuming from step {saved} for two more steps")
    rc = subprocess.run(cmd, timeout=timeout_seconds * 2).returncode
    codes = exits.read_records(second)
    restored = restored_step(workdir)
    ok = rc == 0 and restored == saved and set(codes.values()) == {exits.DONE} and len(codes) == num_processes
    rows.append(Row("resumes from the saved step", ok, f"restored step {restored}, finished at {newest_step(workdir)}",
                    f"exit {rc}" if ok else f"exit {rc}, codes {codes}: expected a restore of step {saved} and exit 0"))
    return rows
