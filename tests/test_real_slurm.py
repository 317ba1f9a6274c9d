"""The SLURM launchers under a real Slurm 22.05 (tests/real_slurm.py: slurmctld, three emulated nodes, munge):
train.sbatch through completion, a preemption by a higher-priority job, the time limit's warning signal, a plain
scancel, the verdicts on every process's code (bad input behind 76, a kill -9, a restart in place, a node
excluded), the CPUs a task gets, preflight.sbatch with its rehearsal, convert.sbatch as an array, and the losses
of one node against two."""

import json
import os
import sys
import time

import pytest
import real_slurm
from conftest import CHILD_XLA_FLAGS, COMPILATION_CACHE, REPO
from fake_slurm import executable
from trainer_runs import losses

from launch.requeue import newest_step, read_history
from trainer import exits

pytestmark = pytest.mark.slow
TRAIN = os.path.join(REPO, "launch", "slurm", "train.sbatch")
# The shipped scripts ask for 8 GPUs and 12 CPUs per task on H800 nodes; these fit the emulated nodes.
SMALL = ["--gres=none", "--mem=2000", "--cpus-per-task=1", "--open-mode=append"]
TINY = os.path.join(REPO, "configs", "tiny.py")
FAST = ["--config.checkpoint_every_steps=2", "--config.log_loss_every_steps=1", "--config.eval_every_steps=1000000"]


@pytest.fixture(scope="module")
def slurm(tmp_path_factory):
    reason = real_slurm.unavailable()
    if reason:
        pytest.skip(reason)
    cluster = real_slurm.Cluster(str(tmp_path_factory.mktemp("slurm"))).start()
    yield cluster
    cluster.stop()


def job_env(run_dir, data_dir, **extra):
    return {"REPO": REPO, "PYTHON": sys.executable, "CONFIG": TINY, "DATA_DIR": str(data_dir), "RUN_DIR": str(run_dir),
            "CACHE_DIR": COMPILATION_CACHE, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": CHILD_XLA_FLAGS, **extra}


def submit_train(slurm, run_dir, data_dir, *sbatch_args, trainer=(), **env):
    os.makedirs(run_dir, exist_ok=True)
    return slurm.sbatch(*SMALL, "-o", f"{run_dir}/slurm-%j.out", *sbatch_args, TRAIN, *FAST, *trainer,
                        **job_env(run_dir, data_dir, **env))


def output(run_dir, job) -> str:
    with open(os.path.join(run_dir, f"slurm-{job}.out"), errors="replace") as f:
        return f.read()


def restores(run_dir) -> list[int]:
    with open(os.path.join(run_dir, "events.jsonl")) as f:
        return [e["step"] for e in map(json.loads, f) if e.get("event") == "restore"]


def wait_for_step(slurm, job, run_dir, step, seconds=240):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if (newest_step(str(run_dir)) or 0) >= step:
            return
        assert slurm.job(job).get("JobState") in ("PENDING", "RUNNING", "CONFIGURING"), output(run_dir, job)
        time.sleep(0.5)
    raise TimeoutError(f"no checkpoint of step {step} within {seconds} s\n{output(run_dir, job)[-3000:]}")


def done(info):
    return real_slurm.finished(info)


STEPS = 16


@pytest.fixture(scope="module")
def one_node_run(slurm, tiny_synthetic, tmp_path_factory):
    """train.sbatch on one node, two tasks, uninterrupted to the end."""
    run_dir = tmp_path_factory.mktemp("one_node")
    job = submit_train(slurm, run_dir, tiny_synthetic, "--nodes=1", "--ntasks-per-node=2",
                       trainer=[f"--config.num_train_steps={STEPS}"])
    return run_dir, job, slurm.wait_job(job, done, 300)


@pytest.fixture(scope="module")
def preempted_two_node_run(slurm, tiny_synthetic, tmp_path_factory):
    """train.sbatch on two nodes, one task each, preempted by a job in the high partition once a checkpoint
    exists: Slurm signals the steps' tasks (PreemptMode=REQUEUE, GraceTime=60)."""
    run_dir = tmp_path_factory.mktemp("preempted")
    job = submit_train(slurm, run_dir, tiny_synthetic, "--nodes=2", "--ntasks-per-node=1",
                       trainer=[f"--config.num_train_steps={STEPS}"])
    wait_for_step(slurm, job, run_dir, 2)
    high = slurm.sbatch("-p", "high", "--nodes=2", f"--nodelist={slurm.job(job)['NodeList']}", "--exclusive",
                        "--mem=100", "-o", f"{run_dir}/high-%j.out", "--wrap", "sleep 1")
    info = slurm.wait_job(job, done, 400)
    return run_dir, job, info, slurm.job(high)


def test_train_sbatch_runs_to_completion(one_node_run):
    run_dir, job, info = one_node_run
    assert (info["JobState"], info["Restarts"]) == ("COMPLETED", "0"), output(run_dir, job)[-3000:]
    (entry,) = read_history(str(run_dir))
    assert entry["codes"] == {"0": 0, "1": 0} and (entry["action"], entry["code"]) == ("exit", 0)
    assert newest_step(str(run_dir)) == STEPS and "training finished" in output(run_dir, job)


def test_a_preemption_saves_on_every_process_requeues_and_resumes(preempted_two_node_run):
    run_dir, job, info, high = preempted_two_node_run
    text = output(run_dir, job)
    assert (info["JobState"], info["Restarts"]) == ("COMPLETED", "1"), text[-3000:]
    assert high["JobState"] == "COMPLETED"
    first, second = read_history(str(run_dir))
    assert first["codes"] == {"0": exits.PREEMPTED, "1": exits.PREEMPTED} and first["action"] == "requeue", first
    assert first["nodes"] == ["slurm-n1", "slurm-n2"] and first["exclude"] == []
    assert restores(run_dir) == [first["newest_step"]] and first["newest_step"] >= 2
    assert (second["attempt"], second["action"], second["code"]) == (f"{job}.1", "exit", 0)
    assert "batch script: SIGTERM" not in text.split("requeueing job")[0]  # a preemption signals only the steps


def test_two_nodes_give_the_losses_of_one(one_node_run, preempted_two_node_run):
    """Two emulated nodes with one process each, preempted and resumed, against one node with two processes."""
    one, two = losses(one_node_run[0]), losses(preempted_two_node_run[0])
    assert sorted(one) == sorted(two) == list(range(1, STEPS + 1))
    assert one == two


@pytest.fixture(scope="module")
def time_limited_then_cancelled(slurm, tiny_synthetic, tmp_path_factory):
    """A one-minute time limit with the warning 50 s before it: the tasks save and the job requeues; once its
    second start has restored that step, a plain `scancel JOB` ends it. This Slurm sent that warning between 2
    and 44 s after each start (its limit checks are periodic), so it may come while the tasks still import: the
    trainer keeps the signal until JAX listens (trainer/early_signals.py). Once the job is requeued, its limit
    is raised to 10 minutes (as root may), so that its second start is not warned again."""
    run_dir = tmp_path_factory.mktemp("time_limit")
    job = submit_train(slurm, run_dir, tiny_synthetic, "--nodes=1", "--ntasks-per-node=2", "--time=1",
                       "--signal=TERM@50", trainer=["--config.num_train_steps=100000"])
    slurm.wait_job(job, lambda i: i.get("Restarts") == "1", 240)
    slurm.run("scontrol", "update", f"JobId={job}", "TimeLimit=10")
    slurm.wait_job(job, lambda i: i.get("JobState") == "RUNNING", 240)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not (os.path.exists(run_dir / "events.jsonl") and restores(run_dir)):
        time.sleep(0.5)
    saved = newest_step(str(run_dir))
    wait_for_step(slurm, job, run_dir, saved + 2)
    slurm.run("scancel", str(job))
    info = slurm.wait_job(job, done, 120)
    time.sleep(real_slurm.CRED_EXPIRE_SECONDS + 5)  # a requeued job would be pending or running again by now
    return run_dir, job, info, slurm.job(job)


def test_the_time_limits_warning_saves_requeues_and_continues(time_limited_then_cancelled):
    run_dir, job, _, _ = time_limited_then_cancelled
    history = read_history(str(run_dir))
    assert history[0]["codes"] == {"0": exits.PREEMPTED, "1": exits.PREEMPTED}, output(run_dir, job)[-3000:]
    assert history[0]["action"] == "requeue" and restores(run_dir)[0] == history[0]["newest_step"]


def test_a_plain_scancel_ends_the_run_for_good_with_its_checkpoint_intact(time_limited_then_cancelled):
    run_dir, job, info, later = time_limited_then_cancelled
    text = output(run_dir, job)
    assert info["JobState"] == "CANCELLED" and later["JobState"] == "CANCELLED" and later["Restarts"] == "1", text
    last = read_history(str(run_dir))[-1]
    assert last["job_state"] != "RUNNING" and last["action"] == "exit", last
    assert set(last["codes"].values()) == {exits.PREEMPTED}  # the tasks saved before the job ended
    assert last["newest_step"] == newest_step(str(run_dir)) and last["newest_step"] > restores(run_dir)[-1]
    from trainer_runs import final_params

    params, data = final_params(run_dir, last["newest_step"], on_this_device=True)  # the newest checkpoint restores
    assert params and data


# ------------------------------------------------------------------------------- verdicts, with a stand-in trainer


def submit_probe(slurm, tmp_path, *sbatch_args, **env):
    """train.sbatch with tests/slurm_probe.py in place of the trainer (launch.requeue is the real one)."""
    (tmp_path / "probes").mkdir(exist_ok=True)
    python = executable(tmp_path / "python", f'#!/bin/bash\nif [ "$2" = launch.requeue ]; then exec {sys.executable} '
                        f'"$@"; fi\nexec {sys.executable} {REPO}/tests/slurm_probe.py "$@"\n')
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    return run_dir, slurm.sbatch(*SMALL, "-o", f"{run_dir}/slurm-%j.out", *sbatch_args, TRAIN,
                                 **job_env(run_dir, "/nonexistent", PYTHON=python, PROBE_DIR=str(tmp_path / "probes"),
                                           PROBE_SKIP_JAX="1", **env))


@pytest.mark.parametrize("code, requeued, status", [
    (exits.BAD_INPUT, False, 1), (exits.DIVERGED, False, 3), (exits.INTERNAL_ERROR, False, 70),
    (exits.FILESYSTEM, True, 0), (exits.PREEMPTED, True, 0), (exits.FENCED, False, 77), (exits.GAVE_UP, False, 78),
    (137, True, 0), (0, False, 0)])
def test_train_sbatch_requeues_only_what_a_restart_can_fix(slurm, tmp_path, code, requeued, status):
    """Both processes end with `code` (137: killed by SIGKILL, no record); in-place restarts are off here."""
    run_dir, job = submit_probe(slurm, tmp_path, "--nodes=1", "--ntasks-per-node=2", PROBE_EXIT=str(code),
                                MAX_RESTARTS_IN_PLACE="0")
    info = slurm.wait_job(job, lambda i: done(i) or i.get("Restarts") == "1", 120)
    if requeued:
        slurm.run("scancel", str(job))  # it would start again after cred_expire
    assert info["Restarts"] == ("1" if requeued else "0"), output(run_dir, job)
    assert requeued or info["ExitCode"] == f"{status}:0", (info["ExitCode"], output(run_dir, job))


def test_attempts_without_progress_end_the_job_after_restarts_in_place(slurm, tmp_path):
    """Every process hangs (76) on every try and no checkpoint advances: two restarts in place, then the third
    attempt without progress ends the job with 78, all inside one allocation."""
    run_dir, job = submit_probe(slurm, tmp_path, "--nodes=2", "--ntasks-per-node=1", PROBE_EXIT="76")
    info = slurm.wait_job(job, done, 120)
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("FAILED", "78:0", "0"), output(run_dir, job)
    history = read_history(str(run_dir))
    assert [(e["action"], e["without_progress"]) for e in history] == [("restart", 1), ("restart", 2), ("exit", 3)]
    assert "3 attempts in a row ended without a new checkpoint" in output(run_dir, job)


def test_the_trainer_started_in_the_batch_shell_is_one_process(slurm, tiny_synthetic, tmp_path):
    """The batch shell of `sbatch -n2` has SLURM_PROCID=0 and SLURM_NTASKS=2 but is no step: a trainer started
    there directly (not under srun) trains alone."""
    job = slurm.sbatch("--nodes=1", "--ntasks=2", "--mem=2000", f"--chdir={REPO}", "-o", f"{tmp_path}/slurm-%j.out",
                       "--wrap",
                       f"{sys.executable} -m trainer.main --config {TINY} --workdir {tmp_path}/w "
                       f"--config.data.data_dir={tiny_synthetic} --config.num_train_steps=2 "
                       f"--config.compilation_cache_dir={COMPILATION_CACHE}", **job_env(tmp_path, tiny_synthetic))
    info = slurm.wait_job(job, done, 180)
    assert info["JobState"] == "COMPLETED", (tmp_path / f"slurm-{job}.out").read_text()[-3000:]
    assert newest_step(str(tmp_path / "w")) == 2


def test_bad_input_behind_its_peers_hung_ends_the_job(slurm, tmp_path):
    run_dir, job = submit_probe(slurm, tmp_path, "--nodes=1", "--ntasks-per-node=2", PROBE_EXITS="1,76")
    info = slurm.wait_job(job, done, 120)
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("FAILED", "1:0", "0"), output(run_dir, job)
    (entry,) = read_history(str(run_dir))
    assert entry["status"] == 76 and entry["codes"] == {"0": 1, "1": 76}  # srun said 76; process 0 decided


def test_a_task_killed_by_sigkill_requeues_the_job(slurm, tmp_path):
    run_dir, job = submit_probe(slurm, tmp_path, "--nodes=1", "--ntasks-per-node=2", PROBE_EXITS="137,76",
                                PROBE_LATER_EXITS="0,0")
    info = slurm.wait_job(job, lambda i: done(i) and i.get("Restarts") == "1", 180)
    assert info["JobState"] == "COMPLETED", output(run_dir, job)
    first, second = read_history(str(run_dir))
    assert first["codes"] == {"1": 76} and first["action"] == "requeue" and first["exclude"] == []
    assert second["action"] == "exit" and second["code"] == 0


def test_a_fault_every_node_answered_restarts_in_place_with_the_tasks_cpus(slurm, tmp_path):
    """A filesystem error on every process: the step runs again inside the same allocation (no requeue). Each
    task gets the 12 CPUs asked of sbatch, which srun no longer inherits since 22.05."""
    run_dir, job = submit_probe(slurm, tmp_path, "--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=12",
                                PROBE_EXITS="74,74", PROBE_LATER_EXITS="0,0")
    info = slurm.wait_job(job, done, 120)
    assert (info["JobState"], info["Restarts"]) == ("COMPLETED", "0"), output(run_dir, job)
    assert [(e["attempt"], e["action"]) for e in read_history(str(run_dir))] == [
        (f"{job}.0", "restart"), (f"{job}.0.1", "exit")]
    probes = [json.loads((tmp_path / "probes" / f"{i}.json").read_text()) for i in (0, 1)]
    assert [p["cpus_per_task"] for p in probes] == ["12", "12"]
    assert [p["node"] for p in probes] == ["slurm-n1", "slurm-n2"]


def test_a_node_that_left_no_record_is_excluded_from_the_next_start(slurm, tmp_path):
    """Two nodes, one task each: the task on the second node is SIGKILLed (as on a lost node) while the first's
    records 76. The job is requeued without that node and starts again on the first and the third."""
    run_dir, job = submit_probe(slurm, tmp_path, "--nodes=2", "--ntasks-per-node=1",
                                PROBE_EXITS="76,137", PROBE_LATER_EXITS="0,0")
    info = slurm.wait_job(job, lambda i: done(i) and i.get("Restarts") == "1", 180)
    assert (info["JobState"], info["ExcNodeList"], info["NodeList"]) == ("COMPLETED", "slurm-n2", "slurm-n[1,3]"), \
        output(run_dir, job)
    first, second = read_history(str(run_dir))
    assert first["exclude"] == ["slurm-n2"] and first["nodes"] == ["slurm-n1", "slurm-n2"], first
    assert second["nodes"] == ["slurm-n1", "slurm-n3"] and second["code"] == 0
    assert "excluded node(s) slurm-n2" in output(run_dir, job)


# ------------------------------------------------------------------------------------------ preflight, convert


def test_preflight_sbatch_passes_every_row_with_its_rehearsal(slurm, tiny_synthetic, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    job = slurm.sbatch(*SMALL, "--nodes=1", "--ntasks-per-node=2", "-o", f"{run_dir}/slurm-%j.out",
                       os.path.join(REPO, "launch", "slurm", "preflight.sbatch"),
                       **job_env(run_dir, tiny_synthetic, INPUT_SECONDS="2"))
    info = slurm.wait_job(job, done, 400)
    text = output(run_dir, job)
    assert info["JobState"] == "COMPLETED", text[-4000:]
    (verdict,) = (run_dir / "preflight").glob("*/verdict.json")
    rows = {row["check"]: row for row in json.loads(verdict.read_text())}
    assert rows and all(r["ok"] for r in rows.values()), rows
    assert rows["every process started"]["figure"] == "2 of 2 processes"  # SLURM_NTASKS, through srun
    assert rows["SIGTERM reaches every process and it saves"]["figure"].startswith("2 of 2 exited 75")
    assert rows["resumes from the saved step"]["ok"]
    assert "step time assumed 0.08250 s" in text  # 0.165 GPU-seconds per step over 2 tasks


def test_convert_sbatch_runs_as_an_array(slurm, movi_sample_dir, tmp_path):
    from data.records import shards

    out = tmp_path / "movi_a_128"
    job = slurm.sbatch("--array=1-3", "--mem=1000", "--cpus-per-task=1", "-o", f"{tmp_path}/convert-%A_%a.out",
                       os.path.join(REPO, "launch", "slurm", "convert.sbatch"), REPO=REPO, PYTHON=sys.executable,
                       TFDS_DIR=movi_sample_dir, DATASET="movi_a/128x128:1.0.0", OUT_DIR=str(out))
    # --array=1-3: the sample's 2 shards over 3 tasks, one with nothing to do.
    for task in (1, 2, 3):
        info = slurm.wait_job(f"{job}_{task}", done, 300)
        assert info["JobState"] == "COMPLETED", (tmp_path / f"convert-{job}_{task}.out").read_text()[-3000:]
    assert "slice 0 of 3" in (tmp_path / f"convert-{job}_1.out").read_text()
    info = shards.read_dataset_info(str(out))
    assert sorted(info["splits"]) == ["train", "validation"]
    for split in info["splits"].values():  # dataset_info.json is written once every shard of every split is done
        assert split["num_records"] > 0 and all(shards.shard_done(str(out / f)) for f in split["files"])
