"""launch/: the local launcher (status, children, signals), which GPUs train.sbatch's processes drive (under the
fake SLURM, tests/fake_slurm.py: this machine has no GPUs or gres), and shellcheck on every shell script. Every
other behaviour of the SLURM scripts is tested under a real Slurm in tests/test_real_slurm.py."""

import functools
import glob
import json
import os
import signal
import subprocess
import sys
import threading

import fake_slurm
import pytest
from conftest import REPO
from fake_slurm import executable, free_slurm_job_id
from launch_helpers import wait_for

from launch.local import child_env, exit_status

SBATCH = os.path.join(REPO, "launch", "slurm", "train.sbatch")

# --------------------------------------------------------------------------------------------- launcher


def test_launcher_reports_one_status():
    assert exit_status({0: 75, 1: 75}) == 75
    assert exit_status({0: 0, 1: 0}) == 0
    assert exit_status({0: 76, 1: -9}) == 137  # the highest, a signal as 128 + N (srun's rule)
    assert exit_status({0: 1, 1: 0}) == 1


def test_launcher_gives_each_process_its_fake_devices():
    env = child_env(3, {"XLA_FLAGS": "--xla_force_host_platform_device_count=8 --xla_cpu_foo", "JAX_PROCESS_ID": "4"})
    assert env["XLA_FLAGS"] == "--xla_cpu_foo --xla_force_host_platform_device_count=3"
    assert env["JAX_PLATFORMS"] == "cpu" and "JAX_PROCESS_ID" not in env  # the flags give the layout


def start_launcher(data_dir, tmp_path):
    """`python -m launch.local` 2 × 1 on a real training run, whose processes would live for a minute."""
    cmd = [sys.executable, "-m", "launch.local", "--num_processes", "2", "--", "--config",
           os.path.join(REPO, "configs", "tiny.py"), "--workdir", str(tmp_path / "w"),
           f"--config.data.data_dir={data_dir}"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    children = []
    assert wait_for(lambda: len(children.extend(child_pids(proc.pid)) or children) >= 2, 30), "no children"
    return proc, children[:2]


def child_pids(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(c) for c in f.read().split()]
    except FileNotFoundError:
        return []


def gone(pid: int) -> bool:
    """Exited (a zombie waiting for its reaper counts as exited)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_launcher_children_die_with_it_even_on_kill9(tiny_synthetic, tmp_path):
    proc, children = start_launcher(tiny_synthetic, tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert wait_for(lambda: all(gone(c) for c in children), 10), [c for c in children if not gone(c)]


# JAX, imported by this pytest process, warns at every fork; the child only execs `sleep` (or dies) right away.
@pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called")
def test_a_child_whose_launcher_died_before_it_armed_the_death_signal_ends_itself():
    """The race behind a once-seen survivor: the launcher killed between a child's fork and its prctl. Here the
    child is told another pid is its launcher, as it would find after that launcher's death."""
    from launch.local import _die_with_parent

    child = subprocess.Popen(["sleep", "30"], preexec_fn=functools.partial(_die_with_parent, os.getpid() + 1))
    assert child.wait(timeout=10) == -signal.SIGKILL


def test_launcher_passes_ctrl_c_on_and_ends_with_its_children(tiny_synthetic, tmp_path):
    proc, children = start_launcher(tiny_synthetic, tmp_path)
    os.kill(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert "[launch] SIGINT: passing SIGTERM to every process" in out, out[-2000:]
    assert proc.returncode != 0 and all(gone(c) for c in children), out[-2000:]


@pytest.mark.filterwarnings("ignore:os.fork\\(\\) was called")  # the child execs python at once
def test_launcher_signal_handler_never_waits_for_the_output_lock():
    """The handler runs in the main thread, possibly inside say() with the lock held: it must not take it."""
    from launch.local import Group

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    try:
        group = Group([[sys.executable, "-c", "print('x' * 100)"]], dict(os.environ), 1.0)
        done = threading.Event()

        def output_flowing_then_ctrl_c():
            with group.lock:  # as inside say()
                group.on_signal(signal.SIGINT, None)
            done.set()

        threading.Thread(target=output_flowing_then_ctrl_c, daemon=True).start()
        assert done.wait(5), "the signal handler blocked on the output lock: a Ctrl-C would deadlock the launcher"
        assert group.wait() in (0, 128 + signal.SIGTERM) and group.handled == 1
    finally:
        signal.signal(signal.SIGINT, before[0])
        signal.signal(signal.SIGTERM, before[1])


# ------------------------------------------------------------------------ SLURM GPU layouts, fake (no GPUs here)


def sbatch(tmp_path, job: int, **env):
    bindir = tmp_path / "bin"
    fake_slurm.install(bindir)
    # The stand-in interpreter runs the probe in place of the trainer; the script's question to trainer.exits
    # (whether a code requeues) goes to the real module.
    python = executable(bindir / "python", f'#!/bin/bash\nif [ "$2" = launch.requeue ]; then exec {sys.executable} '
                        f'"$@"; fi\nexec {sys.executable} {REPO}/tests/slurm_probe.py "$@"\n')
    log = tmp_path / "slurm.log"
    log.write_text("")
    (tmp_path / "probes").mkdir(exist_ok=True)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "FAKE_SLURM_LOG": str(log), "REPO": REPO,
           "PROBE_DIR": str(tmp_path / "probes"),
           "PYTHON": python, "SLURM_JOB_ID": str(job), "SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "2",
           "SLURM_NNODES": "1", "SLURM_JOB_NODELIST": "localhost", "SLURM_SUBMIT_DIR": REPO,
           "DATA_DIR": "/data/movi_e", "RUN_DIR": str(tmp_path / "runs" / "pp"), "JAX_PLATFORMS": "cpu", **env}
    for key in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "XLA_FLAGS"):
        env.pop(key, None)
    r = subprocess.run(["bash", SBATCH, "--config.num_train_steps=10"], env=env, capture_output=True, text=True,
                       timeout=180)
    return r, log.read_text()


@pytest.mark.slow
def test_one_process_per_node_drives_every_gpu(tmp_path):
    job = free_slurm_job_id()
    # 2 nodes, one task per node: the layout of `srun --ntasks-per-node=1` with 8 GPUs per task.
    r, _ = sbatch(tmp_path, job, SLURM_NTASKS_PER_NODE="1", SLURM_NNODES="2", SLURM_CPUS_PER_TASK="12")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    probes = [json.loads(p.read_text()) for p in sorted((tmp_path / "probes").glob("*.json"))]
    assert len(probes) == 2 and {p["count"] for p in probes} == {2}
    assert {p["visible_devices"] for p in probes} == {"all"}  # not JAX's default [SLURM_LOCALID] = GPU 0


@pytest.mark.slow
def test_one_process_per_gpu_gets_its_own_and_one_process_alone_gets_every_gpu(tmp_path):
    job = free_slurm_job_id()
    r, _ = sbatch(tmp_path, job)  # 2 tasks on one node
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    probes = [json.loads(p.read_text()) for p in sorted((tmp_path / "probes").glob("*.json"))]
    assert [p["visible_devices"] for p in probes] == ["0", "1"]  # SLURM_LOCALID: one GPU each
    alone = {k: v for k, v in os.environ.items() if k not in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES")}
    alone.update(SLURM_JOB_ID="7", SLURM_STEP_ID="0", SLURM_PROCID="0", SLURM_LOCALID="3", SLURM_NODEID="0",
                 SLURM_NTASKS="1", SLURM_STEP_NODELIST="localhost", SLURM_STEP_TASKS_PER_NODE="1", REPO=REPO,
                 JAX_PLATFORMS="cpu", PROBE_DIR=str(tmp_path / "probes"))  # srun -n1 --gres=gpu:8 inside an allocation
    subprocess.run([sys.executable, os.path.join(REPO, "tests", "slurm_probe.py")], env=alone, check=True,
                   timeout=120)
    assert json.loads((tmp_path / "probes" / "0.json").read_text())["visible_devices"] == "all"


def test_h800_env_keeps_no_nccl_debugging_override():
    """NCCL's environment-variable documentation lists these under "Debugging": not for production scripts."""
    debugging = ("NCCL_PROTO", "NCCL_ALGO", "NCCL_NVLS_ENABLE", "NCCL_P2P_DISABLE", "NCCL_SHM_DISABLE",
                 "NCCL_IB_DISABLE", "NCCL_P2P_LEVEL", "NCCL_NET_GDR_LEVEL", "NCCL_MIN_NCHANNELS", "NCCL_MAX_NCHANNELS",
                 "NCCL_BUFFSIZE", "NCCL_NTHREADS", "NCCL_CUMEM_ENABLE")
    env = subprocess.run(["bash", "-c", f"source {REPO}/launch/slurm/h800.env && env"], capture_output=True,
                         text=True, check=True, env={"PATH": os.environ["PATH"]}).stdout
    names = {line.split("=", 1)[0] for line in env.splitlines()}
    assert not names & set(debugging), names & set(debugging)
    with open(os.path.join(REPO, "launch", "k8s", "jobset.yaml")) as f:
        assert not [n for n in debugging if n in f.read()]


def test_shellcheck_passes_on_every_shell_script():
    scripts = [os.path.join(REPO, ".ci", "run"), os.path.join(REPO, "launch", "slurm", "h800.env")]
    scripts += glob.glob(os.path.join(REPO, "launch", "slurm", "*.sbatch"))
    assert len(scripts) >= 5, scripts  # train, preflight and convert
    scripts += glob.glob(os.path.join(REPO, "**", "*.sh"), recursive=True)
    shellcheck = os.path.join(os.path.dirname(sys.executable), "shellcheck")
    r = subprocess.run([shellcheck, "--external-sources", *sorted(set(scripts))], capture_output=True, text=True,
                       cwd=REPO)
    assert r.returncode == 0, r.stdout + r.stderr
