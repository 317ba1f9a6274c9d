"""Preemption as a cluster delivers it, on real training subprocesses: `kill -9` at random moments (some while
an async checkpoint write is in flight), a SIGTERM and a SIGUSR1, each followed by a restart; then the
goodput report over all of it. One chaos run (bench/chaos.py, small) serves every test here."""

import os
import signal
import subprocess
import sys
import threading
import time

import jax.numpy as jnp
import pytest
from conftest import COMPILATION_CACHE, REPO

from bench import chaos
from trainer import goodput
from trainer.checkpoint import Checkpoints

STEPS = 60
KILLS = 3


@pytest.fixture(scope="module")
def chaos_run(tiny_synthetic, tmp_path_factory):
    work = tmp_path_factory.mktemp("chaos")
    overrides = [f"--config.num_train_steps={STEPS}", "--config.checkpoint_every_steps=3",
                 f"--config.compilation_cache_dir={COMPILATION_CACHE}"]
    straight = chaos.run_attempt(chaos.command(tiny_synthetic, str(work / "straight"), overrides),
                                 chaos.environment(), str(work / "straight"), "none", None, str(work / "straight"))
    assert straight.returncode == 0, straight.stderr[-3000:]
    started = time.time()
    attempts = chaos.chaos(tiny_synthetic, str(work / "chaos"), overrides, KILLS, seed=0)
    return {"work": work, "attempts": attempts, "wall": time.time() - started}


@pytest.mark.slow
def test_kill9_at_random_moments_ends_bitwise_equal(chaos_run):
    attempts = chaos_run["attempts"]
    print(chaos.summary(attempts))
    assert attempts[-1].returncode == 0, attempts[-1].stderr[-3000:]
    killed = [a for a in attempts if a.returncode == -signal.SIGKILL]
    assert len(killed) >= KILLS, chaos.summary(attempts)
    assert sum(a.action == "kill_during_save" for a in killed) >= 1  # killed while a step was being written
    # Parameters, optimizer state and data position bitwise; the same loss at every step; one row per step.
    assert chaos.compare(str(chaos_run["work"] / "straight"), str(chaos_run["work"] / "chaos"), STEPS) == []


@pytest.mark.slow
@pytest.mark.parametrize("action", ["sigterm", "sigusr1"])
def test_a_termination_signal_saves_and_exits_resumably(chaos_run, action):
    attempts = chaos_run["attempts"]
    i = next(i for i, a in enumerate(attempts) if a.action == action)
    a, after = attempts[i], attempts[i + 1]
    assert a.returncode == chaos.EXIT_RESUMABLE, (a.returncode, a.stderr[-3000:])
    assert "Traceback" not in a.stderr
    # The agreed step is at or after the newest step logged when the signal was sent, and the next attempt
    # continues from exactly that step.
    assert a.saved_step is not None and a.saved_step >= a.signalled_at_step, a.stdout[-2000:]
    assert after.resumed_from == a.saved_step, after.stdout[-2000:]
    assert a.signal_to_exit < 20, a.signal_to_exit  # measured: about 2 s on 2 cores (docs/training.md)
    print(f"{action}: saved step {a.saved_step}, exit {a.signal_to_exit:.2f} s after the signal")


@pytest.mark.slow
def test_goodput_report_accounts_for_every_second(chaos_run):
    workdir = str(chaos_run["work"] / "chaos")
    r = goodput.report(workdir)
    attempts = chaos_run["attempts"]
    assert [a["exit_code"] for a in r["attempts"]] == [
        None if a.returncode == -signal.SIGKILL else a.returncode for a in attempts]
    assert r["attempts"][0]["resumed_from"] == 0 and all(a["to_first_step"] > 0 for a in r["attempts"])
    # The parts add up to the wall time, and that wall time is the one the harness measured (which also holds
    # the last process's interpreter teardown after its exit event).
    assert abs(r["accounted"] - r["wall"]) <= 0.01 * r["wall"], r
    assert 0 <= chaos_run["wall"] - r["wall"] <= 0.01 * chaos_run["wall"] + 1.0, (chaos_run["wall"], r["wall"])
    parts = r["parts"]
    for key in ("productive", "startup", "restore", "save", "eval", "redone", "down"):
        assert parts[key] > 0, (key, parts)
    assert 0 < r["goodput"] < 1
    cli = subprocess.run([sys.executable, "-m", "trainer.goodput", workdir], cwd=REPO, capture_output=True,
                         text=True, timeout=60)
    assert cli.returncode == 0 and "goodput" in cli.stdout and "steps redone" in cli.stdout, cli.stderr


def test_goodput_splits_training_at_the_step_the_next_attempt_restored(tmp_path):
    """Steps past the checkpoint the next attempt restored count as redone; a killed attempt's tail and the
    restart are the time between attempts."""
    rows = [{"t": 0.0, "event": "start", "attempt": "a"},
            {"t": 2.0, "event": "startup", "attempt": "a", "seconds": 2.0},
            {"t": 3.0, "event": "initialise", "attempt": "a", "seconds": 1.0, "step": 0},
            {"t": 5.0, "event": "first_step", "attempt": "a", "seconds": 2.0, "step": 1},
            {"t": 9.0, "event": "train", "attempt": "a", "seconds": 4.0, "step": 5},
            {"t": 10.0, "event": "save", "attempt": "a", "seconds": 1.0, "step": 5},
            {"t": 14.0, "event": "train", "attempt": "a", "seconds": 4.0, "step": 9},  # then kill -9
            {"t": 20.0, "event": "start", "attempt": "b"},
            {"t": 22.0, "event": "startup", "attempt": "b", "seconds": 2.0},
            {"t": 23.0, "event": "restore", "attempt": "b", "seconds": 1.0, "step": 3},
            {"t": 24.0, "event": "first_step", "attempt": "b", "seconds": 1.0, "step": 4},
            {"t": 30.0, "event": "train", "attempt": "b", "seconds": 6.0, "step": 10},
            {"t": 32.0, "event": "eval", "attempt": "b", "seconds": 2.0, "step": 10},
            {"t": 32.5, "event": "shutdown", "attempt": "b", "seconds": 0.5},
            {"t": 32.5, "event": "exit", "attempt": "b", "code": 0}]
    with open(tmp_path / "events.jsonl", "w") as f:
        f.writelines(goodput.json.dumps(row) + "\n" for row in rows)
        f.write('{"t": 33.0, "event": "tra')  # a line cut short by a kill is skipped
    r = goodput.report(str(tmp_path))
    # Attempt a trained steps 2-5 in 4 s and 6-9 in 4 s; b restored step 3: steps 2-3 (2 s) were kept.
    assert r["parts"] == pytest.approx({"productive": 2.0 + 6.0, "startup": 2 + 1 + 2 + 2 + 1, "restore": 1.0,
                                        "save": 1.0, "eval": 2.0, "redone": 2.0 + 4.0, "shutdown": 0.5,
                                        "down": 6.0})
    assert r["wall"] == pytest.approx(32.5) and r["accounted"] == pytest.approx(32.5)
    assert [a["exit_code"] for a in r["attempts"]] == [None, 0]
    assert [a["to_first_step"] for a in r["attempts"]] == [5.0, 4.0]


def test_compilation_cache_is_on_by_default_in_the_workdir(tmp_path):
    """The persistent cache is where a restart finds it: WORKDIR/compilation_cache unless configured."""
    from configs import tiny
    from trainer.run import compilation_cache_dir

    config = tiny.get_config()
    assert compilation_cache_dir(config, str(tmp_path)) == str(tmp_path / "compilation_cache")
    config.compilation_cache_dir = "/shared/cache"
    assert compilation_cache_dir(config, str(tmp_path)) == "/shared/cache"
    config.compilation_cache = False
    assert compilation_cache_dir(config, str(tmp_path)) is None


@pytest.mark.slow
def test_a_cached_step_is_written_for_the_next_restart(chaos_run):
    assert any(name.startswith("jit_train_step-") for name in os.listdir(COMPILATION_CACHE))


def test_preemption_polls_never_go_back_a_step(tmp_path, monkeypatch):
    """JAX's sync point is the newest polled step + 1: Orbax's finalize thread polling an older step must not
    reach JAX, or a SIGTERM then would be agreed on a step the loop has passed (and be ignored)."""
    from orbax.checkpoint import checkpoint_manager

    polled = []
    monkeypatch.setattr(checkpoint_manager.utils, "reached_preemption", lambda step: polled.append(step) or False)
    ckpts = Checkpoints(str(tmp_path), every_steps=2)
    for step in (1, 2, 3):
        ckpts.save(step, {"w": jnp.zeros(3)}, {"global_next_index": step}, {})
    finalize = threading.Thread(target=ckpts.reached_preemption, args=(2,))
    finalize.start()
    finalize.join()
    ckpts.close()
    assert polled and polled == sorted(polled), polled


def test_preemption_polls_are_counted_from_one_whatever_step_the_run_resumed_at(tmp_path, monkeypatch):
    """A notice before the first poll is agreed at counter 1 (JAX: newest poll + 1, and no poll yet), so a run
    resumed at step 40 must poll JAX with 1, 2, ... and not with 41, 42: each new step (an evaluation's batches
    included) is one more poll, a step polled again is the same poll."""
    from orbax.checkpoint import checkpoint_manager

    polled = []
    monkeypatch.setattr(checkpoint_manager.utils, "reached_preemption", lambda counter: polled.append(counter) or False)
    ckpts = Checkpoints(str(tmp_path), every_steps=2)
    for step in (41, 41, 42):
        ckpts.reached_preemption(step)
    poll = ckpts.evaluation_polls(42)
    poll(), poll()  # the evaluation's batches: steps 43, 44
    ckpts.resume_polls(42)
    ckpts.reached_preemption(43)
    ckpts.close()
    assert polled == [1, 1, 2, 3, 4, 5], polled


@pytest.mark.slow
def test_a_sigterm_while_a_resumed_run_starts_saves_the_next_step(tiny_synthetic, tmp_path):
    """The notice comes after the restore, before the first step: the run saves the step after the restored one
    and exits 75, instead of training on until the scheduler's SIGKILL."""
    from test_workdir_faults import run_faulty
    from trainer_runs import train

    w = tmp_path / "w"
    first = train(tiny_synthetic, w, "--config.num_train_steps=4")
    assert first.returncode == 0, first.stderr[-3000:]
    code, out, err = run_faulty(tiny_synthetic, w, "--config.num_train_steps=12", faults=["--term_after_restore"])
    assert code == 75 and "resumed from step 4 " in out, out[-2000:] + err[-3000:]
    assert "received a termination signal: saved step 5;" in out, out[-2000:]


@pytest.mark.slow
def test_a_sigterm_before_jax_listens_is_kept_until_it_does(tiny_synthetic, tmp_path):
    """The notice comes while the run starts, before jax.distributed.initialize arms JAX's notifier: it is held
    (trainer/early_signals.py) and delivered after, so the run saves its first step and exits 75 instead of dying
    of the signal with nothing saved."""
    from test_workdir_faults import run_faulty

    code, out, err = run_faulty(tiny_synthetic, tmp_path / "w", "--config.num_train_steps=12",
                                faults=["--term_before_init"])
    assert code == 75, (code, out[-2000:], err[-3000:])
    assert "received a termination signal: saved step 1;" in out, out[-2000:]
