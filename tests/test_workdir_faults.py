"""A long run's workdir against what a cluster does to it, end to end on the tiny config in subprocesses: a
corrupt step reached again, a second copy of the job, a holder killed or fenced off, a full disk, transient
filesystem errors, config edits between restarts, a SIGTERM during evaluation."""

import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from conftest import COMPILATION_CACHE, REPO
from trainer_runs import CONFIG, final_params, state_data_files, train

from launch.local import child_env
from trainer import exits, goodput
from trainer.checkpoint import Checkpoints
from trainer.lease import FILENAME as LEASE

STEPS = 6  # a save every 2 steps (the tiny config): steps 1, 2, 4, 6
FAULTS = os.path.join(REPO, "tests", "faults.py")


def start(data_dir, workdir, *overrides, faults=(), devices=1):
    """A trainer process that the test steers (tests/faults.py), its output in WORKDIR.out / .err."""
    os.makedirs(workdir, exist_ok=True)
    cmd = [sys.executable, FAULTS, *faults, "--", "--config", CONFIG, "--workdir", str(workdir),
           f"--config.data.data_dir={data_dir}", f"--config.compilation_cache_dir={COMPILATION_CACHE}",
           f"--config.num_train_steps={STEPS}", *overrides]
    env = child_env(devices)
    out, err = open(f"{workdir}.out", "w"), open(f"{workdir}.err", "w")
    return subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=err)


def finish(proc, workdir, timeout=300):
    proc.wait(timeout=timeout)
    return proc.returncode, open(f"{workdir}.out").read(), open(f"{workdir}.err").read()


def wait_for(path, proc, timeout=240):
    deadline = time.time() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, f"the process ended ({proc.returncode}) before {path} appeared"
        assert time.time() < deadline, f"{path} did not appear"
        time.sleep(0.1)


def run_faulty(data_dir, workdir, *overrides, faults=(), devices=1):
    return finish(start(data_dir, workdir, *overrides, faults=faults, devices=devices), workdir)


def assert_equal_params(a, b, step=STEPS):
    pa, da = final_params(a, step)
    pb, db = final_params(b, step)
    assert da == db
    jax.tree_util.tree_map(np.testing.assert_array_equal, pa, pb)


def one_error(stderr, code):
    """One `error:` line that ends with the documented code, and no traceback."""
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].endswith(f"(exit {code}: {exits.name(code)})"), stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    return errors[0]


@pytest.fixture(scope="module")
def solo(tiny_synthetic, tmp_path_factory):
    """The reference: STEPS steps, uninterrupted."""
    work = tmp_path_factory.mktemp("solo") / "w"
    r = train(tiny_synthetic, work, f"--config.num_train_steps={STEPS}")
    assert r.returncode == 0, r.stderr[-3000:]
    return work


# ----------------------------------------------------------------------------------- a corrupt step reached again
@pytest.mark.slow
def test_a_corrupt_newest_step_is_set_aside_and_saved_again(tiny_synthetic, tmp_path, solo):
    w = tmp_path / "w"
    shutil.copytree(solo, w)
    for path in state_data_files(w / "checkpoints" / str(STEPS)):
        with open(path, "r+b") as f:
            f.truncate(16)
    again = train(tiny_synthetic, w, f"--config.num_train_steps={STEPS}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"checkpoint step {STEPS} in {w / 'checkpoints'} cannot be restored" in again.stdout
    assert "resumed from step 4" in again.stdout and "TensorStore details" not in again.stdout
    # Orbax's abandoned reads of the bad step are not reported one by one (thousands of lines of tracebacks)
    assert "Traceback" not in again.stderr and "Exception ignored" not in again.stderr, again.stderr[-3000:]
    (aside,) = glob.glob(str(w / "checkpoints_set_aside" / f"step_{STEPS}-*"))
    assert f"checkpoint step {STEPS} is set aside in {aside}" in again.stdout and os.listdir(aside)
    assert Checkpoints(str(w), 2).all_steps()[-1] == STEPS  # saved again, and it restores, bitwise as never stopped
    assert_equal_params(solo, w)
    later = train(tiny_synthetic, w, f"--config.num_train_steps={STEPS}")
    assert later.returncode == 0 and "cannot be restored" not in later.stdout, later.stdout[-3000:]
    assert f"resumed from step {STEPS}" in later.stdout


# ----------------------------------------------------------------------------------- two runs, one workdir
@pytest.mark.slow
def test_a_second_run_waits_then_refuses_and_the_first_ends_as_if_alone(tiny_synthetic, tmp_path, solo):
    w, go = tmp_path / "w", str(tmp_path / "go")
    first = start(tiny_synthetic, w, faults=["--pause_at_step", "3", "--until", go])
    wait_for(go + ".paused", first)
    t = time.time()
    second = train(tiny_synthetic, w, f"--config.num_train_steps={STEPS}", "--config.lease_wait_seconds=3",
                   "--config.learning_rate=0.01")
    line = one_error(second.stderr, exits.BAD_INPUT)
    assert f"workdir {w} is in use by another run" in line and f"pid {first.pid}" in line, line
    assert time.time() - t >= 3
    open(go, "w").close()
    code, out, err = finish(first, w)
    assert code == 0, err[-3000:]
    assert_equal_params(solo, w)
    assert not os.path.exists(w / LEASE)  # released at the end


@pytest.mark.slow
def test_a_killed_holder_is_taken_over_at_once_on_the_same_host(tiny_synthetic, tmp_path, solo):
    w, go = tmp_path / "w", str(tmp_path / "go")
    holder = start(tiny_synthetic, w, "--config.eval_every_steps=3", faults=["--pause_at_step", "3", "--until", go])
    wait_for(go + ".paused", holder)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert json.load(open(w / LEASE))["pid"] == holder.pid  # left behind by the kill
    t = time.time()
    nxt = train(tiny_synthetic, w, f"--config.num_train_steps={STEPS}")
    assert nxt.returncode == 0, nxt.stderr[-3000:]
    assert f"warning: taking over the lease of workdir {w} from host" in nxt.stdout
    assert f"its process {holder.pid} no longer exists" in nxt.stdout and "resumed from step " in nxt.stdout
    assert time.time() - t < 120  # no wait for the lease timeout (120 s by default)
    assert_equal_params(solo, w)


@pytest.mark.slow
def test_a_fenced_holder_stops_before_its_next_save(tiny_synthetic, tmp_path, solo):
    """Its lease taken over (here: rewritten as a run on another host would take a stale one over), the holder
    writes no further checkpoint or picture and exits 77; that other run's lease, once not renewed, is taken
    over too."""
    w, go = tmp_path / "w", str(tmp_path / "go")
    holder = start(tiny_synthetic, w, "--config.eval_every_steps=3", faults=["--pause_at_step", "3", "--until", go])
    wait_for(go + ".paused", holder)
    other = {**json.load(open(w / LEASE)), "host": "node-b", "pid": 4242, "token": "other", "timeout_seconds": 3}
    with open(w / f"{LEASE}.new", "w") as f:
        json.dump(other, f)
    os.replace(w / f"{LEASE}.new", w / LEASE)
    open(go, "w").close()
    code, out, err = finish(holder, w)
    line = one_error(err, exits.FENCED)
    assert code == exits.FENCED and "lost the lease" in line and "host node-b, pid 4242" in line, err[-3000:]
    # Step 2's async save may have been in flight when the lease was taken: committed before, or dropped at its
    # commit (trainer/checkpoint.py: holder_temporary_path). Step 4 never came.
    assert Checkpoints(str(w), 2).all_steps() in ([1], [1, 2])
    assert_only_steps(w)
    assert not glob.glob(str(w / "pictures" / "step0000003*"))  # its evaluation of step 3 came after the loss
    assert json.load(open(w / LEASE))["token"] == "other"  # the fenced run leaves the other's lease alone
    nxt = train(tiny_synthetic, w, f"--config.num_train_steps={STEPS}", "--config.lease_wait_seconds=30")
    assert nxt.returncode == 0, nxt.stderr[-3000:]
    assert "from host node-b, pid 4242" in nxt.stdout and "not renewed for" in nxt.stdout
    assert_equal_params(solo, w)


def assert_only_steps(w):
    """No tmp directory of a dropped save, nor one set aside under another name, among the steps."""
    names = os.listdir(w / "checkpoints")
    assert all(n.isdigit() for n in names), names


def workdir_files(w, skip=()) -> dict:
    """Every file under the workdir but the lease and `skip`, with its bytes (checkpoints by name only)."""
    out = {}
    for root, dirs, files in os.walk(w):
        for name in dirs + files:
            path = os.path.join(root, name)
            rel = os.path.relpath(path, w)
            if rel.startswith(("lease.json", "compilation_cache")) or rel in skip:
                continue
            out[rel] = None if os.path.isdir(path) or rel.startswith("checkpoints") else open(path, "rb").read()
    return out


@pytest.mark.slow
def test_a_holder_frozen_in_a_save_and_taken_over_writes_nothing_more(tiny_synthetic, tmp_path, solo):
    """A is frozen (SIGSTOP) while its save of step 4 is written but not committed; B takes the stale lease
    over, resumes and finishes. A, woken, exits 77, and the workdir is byte for byte what B left: no step, tmp
    directory, event, metric or telemetry line of A's after the takeover. A's own TensorBoard file is A's alone
    (tensorboardX flushes its buffer at close); B's purge_step hides its steps past the one B restored."""
    w, go = tmp_path / "w", str(tmp_path / "go")
    a = start(tiny_synthetic, w, "--config.lease_timeout_seconds=2",
              faults=["--pause_in_save_of_step", "4", "--until", go])
    wait_for(go + ".paused", a)
    os.kill(a.pid, signal.SIGSTOP)
    own = {os.path.join("tensorboard", n) for n in os.listdir(w / "tensorboard")}
    try:
        b = train(tiny_synthetic, w, f"--config.num_train_steps={STEPS}", "--config.lease_wait_seconds=60")
        assert b.returncode == 0 and "taking over the lease" in b.stdout, b.stdout[-2000:] + b.stderr[-3000:]
        left_by_b = workdir_files(w, skip=own)
        open(go, "w").close()
    finally:
        os.kill(a.pid, signal.SIGCONT)
    code, out, err = finish(a, w)
    assert code == exits.FENCED, err[-3000:]
    assert workdir_files(w, skip=own) == left_by_b
    assert_only_steps(w)
    assert_equal_params(solo, w)


# ----------------------------------------------------------------------------------- the filesystem
def mount_tmpfs(path, size):
    os.makedirs(path)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")


@pytest.mark.slow
def test_a_full_disk_is_one_message_and_the_resume_is_bitwise(tiny_synthetic, tmp_path, solo):
    mnt = tmp_path / "mnt"
    mount_tmpfs(mnt, "16m")
    try:
        w = mnt / "w"
        first = train(tiny_synthetic, w, "--config.num_train_steps=4")
        assert first.returncode == 0, first.stderr[-3000:]
        filler = mnt / "filler"
        st = os.statvfs(mnt)
        with open(filler, "wb") as f:  # leaves less room than one checkpoint needs
            f.write(b"\0" * (st.f_bavail * st.f_frsize - 96 * 1024))
        full = train(tiny_synthetic, w, f"--config.num_train_steps={STEPS}")
        assert full.returncode == exits.FILESYSTEM, full.stderr[-3000:]
        line = one_error(full.stderr, exits.FILESYSTEM)
        assert "the disk is full or over its quota" in line, line
        assert f"The newest complete checkpoint is step 4 in {w / 'checkpoints'}" in line, line
        os.remove(filler)
        resumed = train(tiny_synthetic, w, f"--config.num_train_steps={STEPS}")
        assert resumed.returncode == 0 and "resumed from step 4" in resumed.stdout, resumed.stderr[-3000:]
        assert_equal_params(solo, w)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.slow
def test_a_transient_filesystem_error_is_resumable_until_it_repeats_without_progress(tiny_synthetic, tmp_path,
                                                                                    solo):
    w = tmp_path / "w"
    eio = ["--eio_on_save_after_step", "2"]
    limit = "--config.max_attempts_without_progress=2"
    codes, lines = [], []
    for _ in range(3):
        code, out, err = run_faulty(tiny_synthetic, w, limit, faults=eio)
        codes.append(code)
        lines.append(one_error(err, code))
    # 1: trained from scratch and saved steps 1 and 2 (progress); 2: resumed from 2 and failed again; 3: the
    # second attempt in a row without progress gives up.
    assert codes == [exits.FILESYSTEM, exits.FILESYSTEM, exits.GAVE_UP], (codes, lines)
    assert "filesystem error EIO on " in lines[0] and "The newest complete checkpoint is step 2" in lines[0]
    assert "giving up: 2 attempts in a row" in lines[2], lines[2]
    report = goodput.report(str(w))
    assert [a["exit_code"] for a in report["attempts"]] == codes and report["gave_up"] == 1
    assert "gave up" in goodput.format_report(report)
    fixed = train(tiny_synthetic, w, f"--config.num_train_steps={STEPS}")
    assert fixed.returncode == 0 and "resumed from step 2" in fixed.stdout, fixed.stderr[-3000:]
    assert_equal_params(solo, w)


@pytest.mark.slow
def test_a_bug_keeps_its_traceback_and_everything_that_runs_at_exit_still_runs(tiny_synthetic, tmp_path):
    w = tmp_path / "w"
    code, out, err = run_faulty(tiny_synthetic, w, faults=["--bug_at_step", "3"])
    assert code == exits.INTERNAL_ERROR, err[-3000:]
    assert "Traceback" in err and "ValueError: planted bug at step 3" in err, err[-3000:]
    assert err.rstrip().splitlines()[-1].startswith("error: internal error, most likely a bug (ValueError: planted")
    events = [json.loads(line) for line in open(w / "events.jsonl")]
    assert [e["event"] for e in events[-2:]] == ["shutdown", "exit"] and events[-1]["code"] == exits.INTERNAL_ERROR
    assert not os.path.exists(w / LEASE)  # released
    assert Checkpoints(str(w), 2).all_steps() == [1, 2]  # the save in flight was awaited


# ----------------------------------------------------------------------------------- config edits between restarts
@pytest.mark.slow
def test_config_edits_resume_unless_they_change_the_training_stream(tiny_synthetic, tmp_path):
    w = tmp_path / "w"
    first = train(tiny_synthetic, w, "--config.num_train_steps=4")
    assert first.returncode == 0, first.stderr[-3000:]
    edited = train(tiny_synthetic, w, f"--config.num_train_steps={STEPS}", "--config.data.eval_frames=6",
                   "--config.eval_every_steps=3", "--config.data.fused_train_ops=False")
    assert edited.returncode == 0 and "resumed from step 4" in edited.stdout, edited.stderr[-3000:]
    changed = ["--config.num_train_steps=8", "--config.data.train_frames=2", "--config.seed=7"]
    refused = train(tiny_synthetic, w, *changed)
    line = one_error(refused.stderr, exits.BAD_INPUT)
    assert "data.train_frames: 3 -> 2" in line and "seed: 42 -> 7" in line, line
    assert "data.eval_frames" not in line and "--config.data.reset_position=True" in line
    reset = train(tiny_synthetic, w, *changed, "--config.data.reset_position=True")
    assert reset.returncode == 0, reset.stderr[-3000:]
    assert "the data stream starts from its beginning" in reset.stdout
    assert f"resumed from step {STEPS} (data position {{'global_next_index': 0}})" in reset.stdout
    params, data = final_params(w, 8)
    assert data == {"global_next_index": 8}  # two steps of 4 on the new stream


# ----------------------------------------------------------------------------------- SIGTERM during evaluation
@pytest.mark.slow
def test_a_sigterm_during_a_long_evaluation_saves_and_exits_75(tiny_synthetic, tmp_path):
    w = tmp_path / "w"
    proc = start(tiny_synthetic, w, "--config.eval_every_steps=2", "--config.eval_batch_size=1",
                 faults=["--slow_eval_seconds", "1.5"])
    deadline = time.time() + 240
    while "evaluating step 2: 6 batches of 1" not in open(f"{w}.out").read():
        assert proc.poll() is None and time.time() < deadline, open(f"{w}.err").read()[-3000:]
        time.sleep(0.1)
    t = time.time()
    proc.send_signal(signal.SIGTERM)
    code, out, err = finish(proc, w)
    elapsed = time.time() - t
    assert code == exits.PREEMPTED, err[-3000:]
    assert elapsed < 15, elapsed  # the whole evaluation alone takes 9 s more
    cut = re.search(r"cut short by a termination signal after (\d+) of (\d+) batches", out)
    assert cut and "evaluation at step 2 cut short" in out, out[-3000:]
    print(f"SIGTERM during an evaluation: exit {code} {elapsed:.1f} s after the signal, after batch "
          f"{cut.group(1)} of {cut.group(2)}")
    assert "saved step 2" in out and "Traceback" not in err
    assert Checkpoints(str(w), 2).all_steps()[-1] == 2
