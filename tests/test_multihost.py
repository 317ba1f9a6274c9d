"""Multi-process training on 127.0.0.1 through `python -m launch.local`, against 1 process × 4 devices.

One scenario serves every test here (each 2-process run costs ~30 s: on CPU, JAX's compilation-cache keys
differ between processes and only process 0 writes the cache, so process 1 compiles in every run):
1. 2 processes × 2 devices from scratch; `kill -9` of process 1 after the save of step 4: process 0 exits 76;
2. the same 2 × 2 command restarts from step 4; SIGTERM to process 1: both save one step k and exit 75;
3. 1 process × 4 devices restarts from k and finishes.
Steps 1..k are trained by 2-process runs, k+1..12 by 1 × 4; all are compared with an uninterrupted 1 × 4 run."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest
from conftest import COMPILATION_CACHE, REFERENCE_OVERRIDES, REFERENCE_STEPS, REPO
from trainer_runs import losses, train

from trainer import exits

OVERRIDES = (*REFERENCE_OVERRIDES, f"--config.compilation_cache_dir={COMPILATION_CACHE}")
TIMEOUT = 5  # seconds: heartbeat and barrier timeouts of the 2-process runs
SLOW_INPUT = 0.3  # seconds: how late each of process 1's training batches comes
pytestmark = pytest.mark.slow


@dataclass
class Attempt:
    code: int
    out: str
    seconds_after_signal: float | None = None


def launch(data_dir, workdir, log):
    """`python -m launch.local` 2 × 2 in its own session, output to `log`. Process 1's training batches come
    SLOW_INPUT seconds late (tests/faults.py), which the input telemetry must point at."""
    cmd = [sys.executable, "-m", "launch.local", "--num_processes", "2", "--devices_per_process", "2",
           "--grace_seconds", "60", "--module", "tests.faults", "--", "--slow_input_process", "1",
           "--slow_input_seconds", str(SLOW_INPUT), "--", "--config", os.path.join(REPO, "configs", "tiny.py"),
           "--workdir", str(workdir), f"--config.data.data_dir={data_dir}", *OVERRIDES,
           f"--config.heartbeat_timeout_seconds={TIMEOUT}", f"--config.barrier_timeout_seconds={TIMEOUT}",
           "--config.step_timeout_seconds=60"]
    return subprocess.Popen(cmd, cwd=REPO, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def rank_pid(launcher_pid: int, rank: int) -> int:
    """The pid of one trainer process of a launcher (its children, from /proc)."""
    with open(f"/proc/{launcher_pid}/task/{launcher_pid}/children") as f:
        for pid in f.read().split():
            with open(f"/proc/{pid}/cmdline", "rb") as c:
                if f"--process_id={rank}".encode() in c.read().split(b"\0"):
                    return int(pid)
    raise LookupError(f"rank {rank} of launcher {launcher_pid} not found")


def logged_step(workdir) -> int:
    return max(losses(workdir), default=0) if os.path.exists(os.path.join(workdir, "metrics.jsonl")) else 0


def signal_rank_at_step(data_dir, workdir, log, step: int, signum: int) -> Attempt:
    """Starts 2 × 2, sends `signum` to process 1 once `step` is logged, and waits for the launcher."""
    proc = launch(data_dir, workdir, log)
    try:
        deadline = time.time() + 240
        while logged_step(workdir) < step and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None and logged_step(workdir) >= step, open(log).read()[-4000:]
        os.kill(rank_pid(proc.pid, 1), signum)
        sent = time.time()
        proc.wait(timeout=120)
        return Attempt(proc.returncode, open(log).read(), time.time() - sent)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def scenario(tiny_synthetic, tmp_path_factory, four_device_losses):  # the reference first: a warm 1 × 4 restart
    work = tmp_path_factory.mktemp("multihost")
    w = work / "run"
    killed = signal_rank_at_step(tiny_synthetic, w, work / "killed.log", 5, signal.SIGKILL)  # after the save of 4
    after_kill = losses(w)
    terminated = signal_rank_at_step(tiny_synthetic, w, work / "terminated.log", 6, signal.SIGTERM)
    saved = re.findall(r"received a termination signal: saved step (\d+);", terminated.out)
    finished = train(tiny_synthetic, w, *OVERRIDES, devices=4)
    return {"killed": killed, "after_kill": after_kill, "terminated": terminated, "saved": saved,
            "finished": finished, "losses": losses(w), "workdir": w}


def test_kill9_of_one_process_ends_the_other_within_the_timeout(scenario):
    a = scenario["killed"]
    print(f"the surviving process ended {a.seconds_after_signal:.1f} s after the kill -9")
    assert "[launch] rank 1 exited with -9" in a.out, a.out[-4000:]
    assert f"[launch] rank 0 exited with {exits.HUNG}" in a.out, a.out[-4000:]
    assert a.code == 128 + signal.SIGKILL  # the launcher reports the highest status, as srun
    assert a.seconds_after_signal < TIMEOUT + 10, a.out[-3000:]
    # Whichever notices first: a failed collective, the peer heartbeats, or a barrier of a checkpoint write.
    reasons = ("a collective failed, most likely because another process died", "process(es) [1] sent no heartbeat",
               "not every process reached")
    assert any(f"[0] error: process 0: {r}" in a.out for r in reasons), a.out[-3000:]
    assert min(scenario["after_kill"]) == 1 and max(scenario["after_kill"]) >= 5
    assert "[0] resumed from step 4 " in scenario["terminated"].out  # the restart resumes


def test_sigterm_to_one_process_saves_one_step_on_both_and_exits_75(scenario):
    a = scenario["terminated"]
    p = exits.PREEMPTED
    assert a.code == p and f"[launch] exit codes [{p}, {p}]: exiting with {p}" in a.out, a.out[-4000:]
    assert len(scenario["saved"]) == 2 and len(set(scenario["saved"])) == 1, a.out[-3000:]  # both, one step
    step = int(scenario["saved"][0])
    assert 6 <= step < REFERENCE_STEPS
    print(f"SIGTERM to process 1: both saved step {step} and exited 75 after {a.seconds_after_signal:.1f} s")
    finished = scenario["finished"]
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert f"resumed from step {step} " in finished.stdout  # 1 process × 4 devices continues from it


def test_two_processes_give_the_losses_of_one_by_four(scenario, four_device_losses):
    got = scenario["losses"]
    assert sorted(got) == list(range(1, REFERENCE_STEPS + 1))  # one row per step: process 0 alone writes
    for step in range(1, REFERENCE_STEPS + 1):  # 1..k by 2 × 2 runs, the rest by 1 × 4 resumed from them
        assert got[step] == pytest.approx(four_device_losses[step], rel=1e-6), (step, got[step])
    out = scenario["terminated"].out
    assert "[0] step " in out and "[1] step " not in out  # progress lines: process 0 only


def test_every_process_reports_its_input_and_goodput_names_the_slow_one(scenario):
    """Process 1's batches came SLOW_INPUT s late in both 2-process attempts: its own data-wait share, in its own
    telemetry file, is the largest, and the goodput report puts it first."""
    w = scenario["workdir"]
    steps = {i: [json.loads(line)["step"] for line in open(w / "telemetry" / f"process-{i}.jsonl")] for i in (0, 1)}
    assert set(range(1, 6)) <= set(steps[1]), steps  # every log step of the 2-process attempts, on process 1 too
    r = subprocess.run([sys.executable, "-m", "trainer.goodput", str(w), "--json"], cwd=REPO, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]
    found = json.loads(r.stdout)["input"]
    shares = {x["name"].rsplit(" ", 1)[1]: x["data_wait_share"] for x in found["processes"]}
    print(f"mean data-wait share: process 0 {shares['0']:.2f}, process 1 {shares['1']:.2f}")
    assert found["processes"][0]["name"].endswith("process 1") and shares["1"] > 2 * shares["0"], found
    assert len(found["hosts"]) == 1  # both on this machine
    text = subprocess.run([sys.executable, "-m", "trainer.goodput", str(w)], cwd=REPO, capture_output=True,
                          text=True, timeout=60).stdout
    assert re.search(r"process 1 +data wait .*<- slowest process", text), text
