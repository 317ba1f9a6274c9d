"""Whether a scheduler should start a multi-process training job again, judged on every process's own exit code.

    python -m launch.requeue --run_dir RUN_DIR --attempt JOB.RESTART --num_processes N --status SRUN_STATUS \
        [--restart R --max_restarts 50 --max_attempts_without_progress 3]

prints one word on stdout: `requeue`, or `exit CODE` (the job's final status), and explains it on stderr.

srun returns the highest exit code of its tasks (srun(1), RETURN VALUE). When one process stops with bad input
(1) and its peers notice and exit 76 (hung: resumable), srun says 76, and a script that trusts it requeues a job
that fails the same way every time. So each process records its own code (`trainer.main --exit_record_dir`,
trainer/exits.py: record) under RUN_DIR/attempts/ATTEMPT/, and the verdict is:
- any process ended with a final code (trainer/exits.py: FINAL: 1, 3, 70, 77, 78): exit with it;
- every process ended 0: exit 0;
- otherwise (resumable codes, and processes with no record: killed by a signal, e.g. the OOM killer, or a lost
  node): requeue, unless the run made no progress (its newest complete checkpoint did not advance) in
  max_attempts_without_progress attempts in a row (exit 78: gave up), or max_restarts is reached (srun's status).
Every verdict is appended to RUN_DIR/attempts/history.jsonl, which is also where the progress count comes from.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from trainer import exits

HISTORY = "history.jsonl"


def attempts_dir(run_dir: str) -> str:
    return os.path.join(os.path.abspath(run_dir), "attempts")


def newest_step(run_dir: str) -> int | None:
    from trainer.checkpoint import newest_complete_step  # Orbax: imported only when a verdict is needed

    try:
        return newest_complete_step(os.path.abspath(run_dir))
    except OSError:
        return None


def read_history(run_dir: str) -> list[dict]:
    path = os.path.join(attempts_dir(run_dir), HISTORY)
    out = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    continue  # a line cut by a full disk
    return out


def attempts_without_progress(history: list[dict], attempt: str, step: int | None) -> int:
    """How many attempts of this job in a row, counting this one (which ended with `step` as the newest complete
    checkpoint), left the newest checkpoint where the attempt before them had left it. An earlier job's attempts
    are not counted (a resubmission after a fix starts afresh), but its last step is where this job began."""
    job = attempt.split(".")[0]
    same_job = 0
    while same_job < len(history) and str(history[-1 - same_job].get("attempt", "")).split(".")[0] == job:
        same_job += 1
    before = history[len(history) - same_job - 1].get("newest_step") if len(history) > same_job else None
    steps = [before] + [e.get("newest_step") for e in history[len(history) - same_job:]] + [step]
    count = 0
    while count < len(steps) - 1 and steps[-1 - count] == steps[-2 - count]:
        count += 1
    return count


def verdict(codes: dict[int, int], num_processes: int, status: int, stalled: int, restart: int,
            max_restarts: int, max_without_progress: int) -> tuple[str, int | None, str]:
    """("requeue" | "exit", code, why) from every process's recorded code; `stalled` counts this attempt."""
    final = sorted({c for c in codes.values() if c in exits.FINAL})
    if final:
        who = [p for p, c in sorted(codes.items()) if c in exits.FINAL]
        return "exit", final[-1], (f"process(es) {who} ended with {', '.join(f'{c} ({exits.name(c)})' for c in final)}"
                                    ": a restart would fail the same way")
    missing = [p for p in range(num_processes) if p not in codes]
    if not missing and all(c == exits.DONE for c in codes.values()):
        return "exit", exits.DONE, "every process finished"
    if not codes and status != 0 and not exits.restarts(status):
        return "exit", status, f"no process recorded an exit code and srun's status {status} is not resumable"
    seen = ", ".join(f"{p}: {c} ({exits.name(c)})" for p, c in sorted(codes.items()))
    seen += f"; no record (killed) from {missing}" if missing else ""
    if stalled >= max_without_progress:
        return "exit", exits.GAVE_UP, (f"{stalled} attempts in a row ended without a new checkpoint "
                                       f"(max_attempts_without_progress={max_without_progress}); the last: {seen}")
    if restart >= max_restarts:
        return "exit", status or exits.HUNG, f"{restart} restarts reached max_restarts={max_restarts}; the last: {seen}"
    return "requeue", None, f"resumable ({seen})"


def decide(run_dir: str, attempt: str, num_processes: int, status: int, restart: int, max_restarts: int,
           max_without_progress: int) -> tuple[str, int | None, str]:
    history = read_history(run_dir)
    codes = exits.read_records(os.path.join(attempts_dir(run_dir), attempt))
    step = newest_step(run_dir)
    stalled = attempts_without_progress(history, attempt, step)
    action, code, why = verdict(codes, num_processes, status, stalled, restart, max_restarts, max_without_progress)
    entry = {"attempt": attempt, "time": time.time(), "status": status, "codes": {str(k): v for k, v in codes.items()},
             "newest_step": step, "without_progress": stalled, "action": action, "code": code}
    try:
        os.makedirs(attempts_dir(run_dir), exist_ok=True)
        with open(os.path.join(attempts_dir(run_dir), HISTORY), "a") as f:
            f.write(json.dumps(entry) + "\n")
    except OSError as e:
        print(f"warning: could not append to {attempts_dir(run_dir)}/{HISTORY} ({e})", file=sys.stderr)
    return action, code, why


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launch.requeue", description=__doc__.splitlines()[0])
    parser.add_argument("--run_dir", required=True)
    parser.add_argument("--attempt", required=True, help="this attempt's directory name under RUN_DIR/attempts")
    parser.add_argument("--num_processes", type=int, required=True)
    parser.add_argument("--status", type=int, required=True, help="srun's exit status")
    parser.add_argument("--restart", type=int, default=0, help="restarts so far (SLURM_RESTART_COUNT)")
    parser.add_argument("--max_restarts", type=int, default=50)
    parser.add_argument("--max_attempts_without_progress", type=int, default=3)
    args = parser.parse_args(argv)
    action, code, why = decide(args.run_dir, args.attempt, args.num_processes, args.status, args.restart,
                               args.max_restarts, args.max_attempts_without_progress)
    print(f"{'requeue' if action == 'requeue' else f'exit {code}'}: {why}", file=sys.stderr)
    print("requeue" if action == "requeue" else f"exit {code}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
