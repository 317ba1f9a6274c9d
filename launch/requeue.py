"""Whether a scheduler should start a multi-process training job again, judged on every process's own exit code.

    python -m launch.requeue --run_dir RUN_DIR --attempt ATTEMPT --num_processes N --status SRUN_STATUS \
        [--restart R --max_restarts 50 --max_attempts_without_progress 3] \
        [--job_state STATE --run_time D-HH:MM:SS --time_limit D-HH:MM:SS] \
        [--nodes n1,n2 --tasks_per_node '8(x2)' --in_place K --max_in_place 2]

prints one line on stdout: `requeue`, `requeue exclude NODE[,NODE]`, `restart` (the step again, in this
allocation) or `exit CODE` (the job's final status), and explains it on stderr.

srun returns the highest exit code of its tasks (srun(1), RETURN VALUE). When one process stops with bad input
(1) and its peers notice and exit 76 (hung: resumable), srun says 76, and a script that trusts it requeues a job
that fails the same way every time. So each process records its own code (`trainer.main --exit_record_dir`,
trainer/exits.py: record) under RUN_DIR/attempts/ATTEMPT/, and the verdict is:
- any process ended with a final code (trainer/exits.py: FINAL: 1, 3, 70, 77, 78): exit with it;
- every process ended 0: exit 0;
- the job is no longer RUNNING (--job_state) before its time limit: it was cancelled (`scancel JOB` changes the
  job's state, a signal sent with `scancel --signal` does not: scancel(1), --signal): exit, never requeue. A job
  that reached its time limit (--run_time against --time_limit) while its tasks saved is judged as running;
- otherwise (resumable codes, and processes with no record: killed by a signal, e.g. the OOM killer, or a lost
  node) start again, unless the run made no progress (its newest complete checkpoint did not advance) in
  max_attempts_without_progress attempts in a row (exit 78: gave up), or max_restarts is reached (srun's status):
  - a node none of whose processes left a record while other nodes' did is suspect (lost, hung or killed): requeue
    with it excluded, so that the next attempt does not land on it again;
  - every process recorded a filesystem error or a hang (74, 76), so every node answered: restart the step in
    place, without a wait in the queue, at most max_in_place times per job start;
  - anything else, a preemption (75) included: requeue.
Every verdict is appended to RUN_DIR/attempts/history.jsonl, which is also where the progress count comes from.
"""

from __future__ import annotations

import argparse
import dataclasses
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


@dataclasses.dataclass(frozen=True)
class Verdict:
    action: str  # "requeue", "restart" (in place) or "exit"
    code: int | None  # the job's status, with "exit"
    why: str
    exclude: tuple[str, ...] = ()  # nodes to keep the next attempt off, with "requeue"

    def line(self) -> str:
        if self.action == "exit":
            return f"exit {self.code}"
        return f"requeue exclude {','.join(self.exclude)}" if self.exclude else self.action


def node_of_process(nodes: list[str], tasks_per_node: str) -> dict[int, str]:
    """Which node each process ran on, for srun's default block distribution: the first node's tasks are
    processes 0..k-1, and so on (srun(1), --distribution: "block" is the default)."""
    from trainer.runtime import slurm_task_counts  # JAX: imported only when a verdict is needed

    out, process = {}, 0
    for node, count in zip(nodes, slurm_task_counts(tasks_per_node), strict=False):
        for _ in range(count):
            out[process] = node
            process += 1
    return out


def suspect_nodes(codes: dict[int, int], nodes: dict[int, str]) -> tuple[str, ...]:
    """Nodes none of whose processes left a record, while some other node's processes did: that node, not the
    job, failed (a process that was only killed, e.g. by the OOM killer, has peers on its node that recorded)."""
    if not codes or not nodes:
        return ()
    answered = {nodes[p] for p in codes if p in nodes}
    return tuple(sorted({n for n in nodes.values() if n not in answered}))


def slurm_seconds(text: str) -> float | None:
    """Slurm's durations, "[D-]HH:MM:SS" (also "MM:SS"), in seconds; None for UNLIMITED or anything else."""
    days, _, clock = text.rpartition("-")
    try:
        parts = [int(p) for p in clock.split(":")]
        seconds = sum(p * 60 ** i for i, p in enumerate(reversed(parts)))
        return seconds + 86400 * int(days or 0) if 1 <= len(parts) <= 3 else None
    except ValueError:
        return None


def ended_by_user(job_state: str, run_time: str = "", time_limit: str = "") -> bool:
    """The job is no longer running and has not reached its time limit: someone cancelled it."""
    if job_state == "RUNNING":
        return False
    run, limit = slurm_seconds(run_time), slurm_seconds(time_limit)
    return run is None or limit is None or run < limit


def verdict(codes: dict[int, int], num_processes: int, status: int, stalled: int, restart: int,
            max_restarts: int, max_without_progress: int, job_state: str = "RUNNING",
            nodes: dict[int, str] | None = None, in_place: int = 0, max_in_place: int = 0,
            run_time: str = "", time_limit: str = "") -> Verdict:
    """The verdict from every process's recorded code; `stalled` counts this attempt, `nodes` maps process
    indices to their nodes (None: unknown), `in_place` counts this job start's restarts in place so far."""
    final = sorted({c for c in codes.values() if c in exits.FINAL})
    if final:
        who = [p for p, c in sorted(codes.items()) if c in exits.FINAL]
        return Verdict("exit", final[-1], f"process(es) {who} ended with "
                       f"{', '.join(f'{c} ({exits.name(c)})' for c in final)}: a restart would fail the same way")
    missing = [p for p in range(num_processes) if p not in codes]
    if not missing and all(c == exits.DONE for c in codes.values()):
        return Verdict("exit", exits.DONE, "every process finished")
    if not codes and status != 0 and not exits.restarts(status):
        return Verdict("exit", status, f"no process recorded an exit code and srun's status {status} is not "
                       "resumable")
    parts = [", ".join(f"{p}: {c} ({exits.name(c)})" for p, c in sorted(codes.items()))] if codes else []
    if missing:
        parts.append(f"no record (killed) from {missing}" if codes else f"no process left a record {missing} "
                     f"(srun's status {status})")
    seen = "; ".join(parts)
    if ended_by_user(job_state, run_time, time_limit):
        return Verdict("exit", status, f"the job is {job_state} before its time limit: it was cancelled (scancel), "
                       f"so it is not requeued; submit it again to resume ({seen})")
    if stalled >= max_without_progress:
        return Verdict("exit", exits.GAVE_UP, f"{stalled} attempts in a row ended without a new checkpoint "
                       f"(max_attempts_without_progress={max_without_progress}); the last: {seen}")
    if restart >= max_restarts:
        return Verdict("exit", status or exits.HUNG, f"{restart} restarts reached max_restarts={max_restarts}; "
                       f"the last: {seen}")
    suspects = suspect_nodes(codes, nodes or {})
    if suspects:
        return Verdict("requeue", None, f"node(s) {', '.join(suspects)} left no record while the others did: "
                       f"requeued without them ({seen})", suspects)
    if (job_state == "RUNNING" and not missing and set(codes.values()) <= {exits.FILESYSTEM, exits.HUNG}
            and in_place < max_in_place):
        return Verdict("restart", None, f"every process answered with a resumable fault ({seen}): restart "
                       f"{in_place + 1} of {max_in_place} in place, in this allocation")
    return Verdict("requeue", None, f"resumable ({seen})")


def decide(run_dir: str, attempt: str, num_processes: int, status: int, restart: int, max_restarts: int,
           max_without_progress: int, job_state: str = "RUNNING", nodes: dict[int, str] | None = None,
           in_place: int = 0, max_in_place: int = 0, run_time: str = "", time_limit: str = "") -> Verdict:
    history = read_history(run_dir)
    codes = exits.read_records(os.path.join(attempts_dir(run_dir), attempt))
    step = newest_step(run_dir)
    stalled = attempts_without_progress(history, attempt, step)
    v = verdict(codes, num_processes, status, stalled, restart, max_restarts, max_without_progress, job_state, nodes,
                in_place, max_in_place, run_time, time_limit)
    entry = {"attempt": attempt, "time": time.time(), "status": status, "codes": {str(k): v for k, v in codes.items()},
             "newest_step": step, "without_progress": stalled, "job_state": job_state, "run_time": run_time,
             "time_limit": time_limit, "action": v.action,
             "code": v.code, "exclude": list(v.exclude), "nodes": sorted(set((nodes or {}).values()))}
    try:
        os.makedirs(attempts_dir(run_dir), exist_ok=True)
        with open(os.path.join(attempts_dir(run_dir), HISTORY), "a") as f:
            f.write(json.dumps(entry) + "\n")
    except OSError as e:
        print(f"warning: could not append to {attempts_dir(run_dir)}/{HISTORY} ({e})", file=sys.stderr)
    return v


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launch.requeue", description=__doc__.splitlines()[0])
    parser.add_argument("--run_dir", required=True)
    parser.add_argument("--attempt", required=True, help="this attempt's directory name under RUN_DIR/attempts")
    parser.add_argument("--num_processes", type=int, required=True)
    parser.add_argument("--status", type=int, required=True, help="srun's exit status")
    parser.add_argument("--restart", type=int, default=0, help="restarts so far (SLURM_RESTART_COUNT)")
    parser.add_argument("--max_restarts", type=int, default=50)
    parser.add_argument("--max_attempts_without_progress", type=int, default=3)
    parser.add_argument("--job_state", default="RUNNING", help="the job's state after the step (scontrol show job)")
    parser.add_argument("--run_time", default="", help="the job's RunTime (scontrol show job)")
    parser.add_argument("--time_limit", default="", help="the job's TimeLimit (scontrol show job)")
    parser.add_argument("--nodes", default="", help="the step's nodes in order, comma-separated "
                        "(scontrol show hostnames $SLURM_JOB_NODELIST)")
    parser.add_argument("--tasks_per_node", default="", help="SLURM_TASKS_PER_NODE, e.g. '8(x2)'")
    parser.add_argument("--in_place", type=int, default=0, help="restarts in place so far in this job start")
    parser.add_argument("--max_in_place", type=int, default=0, help="restarts in place allowed per job start")
    args = parser.parse_args(argv)
    nodes = None
    if args.nodes and args.tasks_per_node:
        try:
            nodes = node_of_process([n for n in args.nodes.split(",") if n], args.tasks_per_node)
        except ValueError:
            print(f"warning: cannot read --tasks_per_node {args.tasks_per_node!r}: no node is judged", file=sys.stderr)
    v = decide(args.run_dir, args.attempt, args.num_processes, args.status, args.restart, args.max_restarts,
               args.max_attempts_without_progress, args.job_state, nodes, args.in_place, args.max_in_place,
               args.run_time, args.time_limit)
    print(f"{v.line()}: {v.why}", file=sys.stderr)
    print(v.line())
    return 0


if __name__ == "__main__":
    sys.exit(main())
