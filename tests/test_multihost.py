"""Multi-process training on 127.0.0.1 through `python -m launch.local`: 2 processes × 2 CPU devices against
1 process × 4, a SIGTERM to one process, a `kill -9` of one process; each followed by a restart on 1 × 4.

All runs share one config (12 steps, saves every 4) and the session's compilation cache. On CPU, JAX's cache
keys differ between processes, so process 1 compiles its steps in every run (~20 s of each 2-process run)."""

import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import COMPILATION_CACHE, REPO
from test_trainer import losses, train

STEPS = 12
OVERRIDES = (f"--config.num_train_steps={STEPS}", "--config.checkpoint_every_steps=4",
             f"--config.compilation_cache_dir={COMPILATION_CACHE}")
HEARTBEAT = 5  # seconds: the timeouts of the kill -9 test
pytestmark = pytest.mark.slow


def launch(data_dir, workdir, *overrides, log):
    """`python -m launch.local` 2 × 2 in its own session, output to `log`."""
    cmd = [sys.executable, "-m", "launch.local", "--num_processes", "2", "--devices_per_process", "2",
           "--grace_seconds", "60", "--", "--config", os.path.join(REPO, "configs", "tiny.py"),
           "--workdir", str(workdir), f"--config.data.data_dir={data_dir}", *OVERRIDES, *overrides]
    return subprocess.Popen(cmd, cwd=REPO, stdout=open(log, "w"), stderr=subprocess.STDOUT, start_new_session=True)


def finish(proc, log, timeout=300):
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, open(log).read()


def rank_pid(launcher_pid: int, rank: int) -> int:
    """The pid of one trainer process of a launcher (its children, from /proc)."""
    with open(f"/proc/{launcher_pid}/task/{launcher_pid}/children") as f:
        for pid in f.read().split():
            with open(f"/proc/{pid}/cmdline", "rb") as c:
                if f"--process_id={rank}".encode() in c.read().split(b"\0"):
                    return int(pid)
    raise LookupError(f"rank {rank} of launcher {launcher_pid} not found")


def wait_for_step(workdir, step: int, proc, timeout=240) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if max(losses(workdir), default=0) >= step if os.path.exists(os.path.join(workdir, "metrics.jsonl")) else 0:
            return
        time.sleep(0.1)
    raise AssertionError(f"step {step} never logged in {workdir} (launcher exit {proc.poll()})")


def assert_close(got: dict, want: dict, steps) -> None:
    for s in steps:
        assert got[s] == pytest.approx(want[s], rel=1e-6), (s, got[s], want[s])


@pytest.fixture(scope="module")
def reference(tiny_synthetic, tmp_path_factory):
    """The uninterrupted 1 × 4 run."""
    work = tmp_path_factory.mktemp("one_by_four")
    r = train(tiny_synthetic, work, *OVERRIDES, devices=4)
    assert r.returncode == 0, r.stderr[-3000:]
    return losses(work)


def test_two_by_two_gives_the_losses_of_one_by_four(tiny_synthetic, tmp_path, reference):
    code, out = finish(launch(tiny_synthetic, tmp_path / "w", log=tmp_path / "log"), tmp_path / "log")
    assert code == 0, out[-4000:]
    assert "[launch] exit codes [0, 0]: exiting with 0" in out
    got = losses(tmp_path / "w")
    assert sorted(got) == list(range(1, STEPS + 1))  # one metrics row per step: only process 0 writes
    assert_close(got, reference, range(1, STEPS + 1))
    assert out.count("validation (6 videos, all frames)") == 1  # the summary comes from process 0 alone
    assert "[0] step 12/12" in out and "[1] step" not in out


def test_sigterm_to_one_process_saves_the_same_step_on_both(tiny_synthetic, tmp_path, reference):
    w = tmp_path / "w"
    proc = launch(tiny_synthetic, w, log=tmp_path / "log")
    wait_for_step(w, 2, proc)
    os.kill(rank_pid(proc.pid, 1), signal.SIGTERM)
    code, out = finish(proc, tmp_path / "log")
    assert code == 75, out[-4000:]
    assert "[launch] exit codes [75, 75]: exiting with 75" in out
    saved = {int(line.split("saved step ")[1].split(";")[0]) for line in out.splitlines() if "saved step" in line}
    assert len(saved) == 1 and 2 <= next(iter(saved)) < STEPS, out[-3000:]  # both processes name one step
    step = saved.pop()
    assert out.count(f"received a termination signal: saved step {step};") == 2
    assert_close(losses(w), reference, range(1, step + 1))
    resumed = train(tiny_synthetic, w, *OVERRIDES, devices=4)  # 1 process × 4 devices
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from step {step} " in resumed.stdout
    got = losses(w)
    assert sorted(got) == list(range(1, STEPS + 1))
    assert_close(got, reference, range(step + 1, STEPS + 1))


def test_kill9_of_one_process_ends_the_other_within_the_timeout(tiny_synthetic, tmp_path, reference):
    w = tmp_path / "w"
    timeouts = (f"--config.heartbeat_timeout_seconds={HEARTBEAT}", f"--config.barrier_timeout_seconds={HEARTBEAT}",
                "--config.step_timeout_seconds=30")
    proc = launch(tiny_synthetic, w, *timeouts, log=tmp_path / "log")
    wait_for_step(w, 5, proc)  # after the save of step 4
    os.kill(rank_pid(proc.pid, 1), signal.SIGKILL)
    killed = time.time()
    code, out = finish(proc, tmp_path / "log")
    lines = [line for line in out.splitlines() if line.startswith("[launch] rank 0 exited")]
    assert lines == ["[launch] rank 0 exited with 76"], out[-4000:]
    assert code == 128 + signal.SIGKILL  # the launcher reports the first failure: the killed process
    took = time.time() - killed
    print(f"the surviving process exited {took:.1f} s after the kill")
    assert took < HEARTBEAT + 15, out[-3000:]
    assert "most likely because another process died" in out or "failed process" in out, out[-3000:]
    resumed = train(tiny_synthetic, w, *OVERRIDES, devices=4)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    start = int(resumed.stdout.split("resumed from step ")[1].split()[0])
    assert start >= 4
    got = losses(w)
    assert sorted(got) == list(range(1, STEPS + 1))
    assert_close(got, reference, range(1, STEPS + 1))

