"""python -m bench.chaos [--kills 20] [--steps 60] [--seed 0] [--data_dir DIR] [--work DIR]

Trains the tiny config as a preemptible cluster would run it: a real `python -m trainer.main` subprocess is
`kill -9`ed at random moments (some while an async checkpoint write is in flight), sent one SIGTERM and one
SIGUSR1, and restarted after each, until it finishes. Then it checks the end against an uninterrupted run:
parameters and optimizer state bitwise, the loss of every step, one metrics row per step, and prints what the
run survived. tests/test_preemption.py runs it small; this is the same at scale.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time

from launch.local import child_env
from trainer import exits

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = os.path.join(REPO, "configs", "tiny.py")
EXIT_RESUMABLE = exits.PREEMPTED


@dataclasses.dataclass
class Attempt:
    action: str  # "kill" | "kill_during_save" | "sigterm" | "sigusr1" | "none"
    returncode: int
    seconds: float
    stdout: str
    stderr: str
    signal_to_exit: float | None = None  # sigterm/sigusr1: seconds from the signal to the process's exit
    signalled_at_step: int | None = None  # the newest step in metrics.jsonl when the signal was sent

    @property
    def saved_step(self) -> int | None:
        m = re.search(r"saved step (\d+)", self.stdout)
        return int(m.group(1)) if m else None

    @property
    def resumed_from(self) -> int | None:
        m = re.search(r"resumed from step (\d+)", self.stdout)
        return int(m.group(1)) if m else None


def command(data_dir: str, workdir: str, overrides: list[str], config: str = CONFIG) -> list[str]:
    return [sys.executable, "-m", "trainer.main", "--config", config, "--workdir", workdir,
            f"--config.data.data_dir={data_dir}", *overrides]


def environment(devices: int = 1) -> dict:
    return child_env(devices)


def newest_logged_step(workdir: str) -> int:
    path = os.path.join(workdir, "metrics.jsonl")
    try:
        with open(path) as f:
            lines = [line for line in f if line.strip()]
        return json.loads(lines[-1])["step"] if lines else 0
    except (OSError, ValueError, KeyError):
        return 0


def started_training(workdir: str, pid: int) -> bool:
    """The process `pid` has trained a step: its attempt's first_step event is in the log."""
    attempt = None
    try:
        with open(os.path.join(workdir, "events.jsonl")) as f:
            for line in f:
                e = json.loads(line)
                if e["event"] == "start" and e.get("pid") == pid:
                    attempt = e["attempt"]
                elif e["event"] == "first_step" and e["attempt"] == attempt:
                    return True
    except (OSError, ValueError):
        pass
    return False


def writes_in_flight(workdir: str) -> set[str]:
    """Orbax writes a step into a temporary directory and renames it when complete."""
    try:
        return {name for name in os.listdir(os.path.join(workdir, "checkpoints")) if "tmp" in name}
    except OSError:
        return set()


def run_attempt(cmd: list[str], env: dict, workdir: str, action: str, rng: random.Random, log_prefix: str,
                timeout: float = 600) -> Attempt:
    """Starts the trainer; once it trains, does `action` at a random moment (or as soon as a new checkpoint
    write is in flight); waits for the exit. Its output goes to LOG_PREFIX.out/.err."""
    start = time.perf_counter()
    with open(log_prefix + ".out", "w+") as out, open(log_prefix + ".err", "w+") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=err, start_new_session=True)
        signalled = at_step = None
        deadline = start + timeout
        if action != "none":
            while proc.poll() is None and not started_training(workdir, proc.pid):
                time.sleep(0.01)
            if action == "kill_during_save":
                old = writes_in_flight(workdir)  # left by an earlier kill
                while proc.poll() is None and not writes_in_flight(workdir) - old and time.perf_counter() < deadline:
                    time.sleep(0.002)
            else:
                time.sleep(rng.uniform(0.2, 1.5))
            if proc.poll() is None:
                at_step = newest_logged_step(workdir)
                sig = {"sigterm": signal.SIGTERM, "sigusr1": signal.SIGUSR1}.get(action, signal.SIGKILL)
                proc.send_signal(sig)
                signalled = time.perf_counter()
        try:
            proc.wait(timeout=max(deadline - time.perf_counter(), 1))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        ended = time.perf_counter()
        out.seek(0)
        err.seek(0)
        return Attempt(action, proc.returncode, ended - start, out.read(), err.read(),
                       None if signalled is None else ended - signalled, at_step)


def plan(kills: int, rng: random.Random) -> list[str]:
    """`kills` kills, a third of them timed into a save, with one SIGTERM and one SIGUSR1 among them."""
    actions = ["kill_during_save" if i % 3 == 1 else "kill" for i in range(kills)]
    actions.insert(rng.randint(1, len(actions)), "sigterm")
    actions.insert(rng.randint(1, len(actions)), "sigusr1")
    return actions


def chaos(data_dir: str, workdir: str, overrides: list[str], kills: int, seed: int) -> list[Attempt]:
    """Runs the plan, restarting after every interruption, then once more to the end."""
    rng = random.Random(seed)
    cmd, env = command(data_dir, workdir, overrides), environment()
    logs = workdir + ".logs"
    os.makedirs(logs, exist_ok=True)
    attempts = []
    for action in [*plan(kills, rng), "none"]:
        attempts.append(run_attempt(cmd, env, workdir, action, rng, os.path.join(logs, f"{len(attempts) + 1}")))
        if attempts[-1].returncode not in (-signal.SIGKILL, EXIT_RESUMABLE):
            break  # finished (or failed): nothing left to interrupt
    return attempts


def interrupted(attempt: Attempt) -> bool:
    """The action really hit a running trainer (killed, or saved and exited resumably)."""
    return attempt.returncode in (-signal.SIGKILL, EXIT_RESUMABLE)


def compare(straight: str, chaotic: str, step: int) -> list[str]:
    """What differs between the two workdirs' final checkpoints and metrics (empty: nothing)."""
    import jax
    import numpy as np
    import orbax.checkpoint as ocp

    problems = []
    states = []
    for workdir in (straight, chaotic):
        mngr = ocp.CheckpointManager(os.path.join(workdir, "checkpoints"), item_names=("state", "data", "meta"))
        r = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(),
                                                       data=ocp.args.JsonRestore()))
        states.append((r["state"], r["data"]))
        mngr.close()
    (a, da), (b, db) = states
    if da != db:
        problems.append(f"data positions differ: {da} vs {db}")
    leaves_a, leaves_b = jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves(b)
    if len(leaves_a) != len(leaves_b):
        problems.append(f"state trees differ: {len(leaves_a)} vs {len(leaves_b)} leaves")
    for (path, x), y in zip(leaves_a, leaves_b, strict=False):
        if not np.array_equal(np.asarray(x), np.asarray(y)):
            problems.append(f"state leaf {jax.tree_util.keystr(path)} differs")
    rows = [[json.loads(line) for line in open(os.path.join(w, "metrics.jsonl"))] for w in (straight, chaotic)]
    train_rows = [[r for r in rs if "train/loss" in r] for rs in rows]
    steps = [r["step"] for r in train_rows[1]]
    if steps != sorted(set(steps)) or steps != [r["step"] for r in train_rows[0]]:
        problems.append(f"metrics.jsonl train rows by step: {steps} (uninterrupted: "
                        f"{[r['step'] for r in train_rows[0]]})")
    losses = [{r["step"]: r["train/loss"] for r in rs} for rs in train_rows]
    if losses[0] != losses[1]:
        problems.append(f"losses differ at steps {sorted(s for s in losses[0] if losses[0][s] != losses[1].get(s))}")
    return problems


def summary(attempts: list[Attempt]) -> str:
    kinds = {}
    for a in attempts:
        if a.action != "none" and interrupted(a):
            kinds[a.action] = kinds.get(a.action, 0) + 1
    lines = [f"{len(attempts)} attempts; interruptions that hit a running trainer: {kinds or 'none'}"]
    for i, a in enumerate(attempts, 1):
        extra = ""
        if a.signal_to_exit is not None and a.action in ("sigterm", "sigusr1"):
            extra = f"; signal at logged step {a.signalled_at_step}, saved step {a.saved_step}, " \
                    f"exit {a.signal_to_exit:.2f} s after the signal"
        lines.append(f"  {i:3d}. {a.action:<17} rc {a.returncode:>4}  resumed from {a.resumed_from}  "
                     f"{a.seconds:6.1f} s{extra}")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data_dir", default=None, help="default: a tiny synthetic dataset made here")
    p.add_argument("--work", default=None, help="default: a temporary directory")
    a = p.parse_args()
    work = os.path.abspath(a.work or tempfile.mkdtemp(prefix="chaos-"))
    data = a.data_dir
    if data is None:
        from data.synthetic.dataset import generate

        data = os.path.join(work, "data")
        if not os.path.isdir(data):
            generate(data, num_train=24, num_validation=6, resolution=32, num_frames=12, supersample=1,
                     num_workers=1, log=lambda *_, **__: None)
    overrides = [f"--config.num_train_steps={a.steps}", "--config.checkpoint_every_steps=3",
                 f"--config.compilation_cache_dir={os.path.join(work, 'compilation_cache')}"]
    os.makedirs(work, exist_ok=True)
    started = time.perf_counter()
    straight = run_attempt(command(data, os.path.join(work, "straight"), overrides), environment(),
                           os.path.join(work, "straight"), "none", random.Random(0), os.path.join(work, "straight"))
    if straight.returncode != 0:
        print(f"the uninterrupted run failed (rc {straight.returncode}):\n{straight.stderr[-3000:]}")
        return 1
    attempts = chaos(data, os.path.join(work, "chaos"), overrides, a.kills, a.seed)
    print(summary(attempts))
    problems = [] if attempts[-1].returncode == 0 else [f"the last attempt failed: {attempts[-1].stderr[-2000:]}"]
    problems += compare(os.path.join(work, "straight"), os.path.join(work, "chaos"), a.steps) if not problems else []
    hit = sum(interrupted(x) for x in attempts if x.action != "none")
    print(f"survived {hit} interruptions ({sum(x.action == 'kill_during_save' and interrupted(x) for x in attempts)}"
          f" kills during a save) in {time.perf_counter() - started:.0f} s; final state vs uninterrupted run: "
          + ("bitwise equal, one metrics row per step" if not problems else "; ".join(problems)))
    print(f"workdirs under {work}; goodput: python -m trainer.goodput {os.path.join(work, 'chaos')}")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
