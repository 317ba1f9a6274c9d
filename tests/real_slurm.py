"""A real Slurm on this machine for the launch tests: Debian bookworm's slurmctld, slurmd, slurm-client and munge
(Slurm 22.05), started as root under a test directory, without systemd, and torn down by PID.

One controller and three emulated nodes, `slurm-n1` to `slurm-n3` (a `slurmd -N NAME` each, with its own `Port=`,
slurm.conf(5)): a job with `-N1` is the one-node layout, `-N2` the two-node one, and the third node is where a
two-node job goes when one of its nodes is excluded. JAX's coordinator is the
first node name of the step (jax/_src/clusters/slurm_cluster.py), so the names resolve through an /etc/hosts line
that `stop()` removes again. Two partitions, `low` (the default) and `high`, with partition-priority preemption
(`PreemptType=preempt/partition_prio`, `PreemptMode=REQUEUE`, `GraceTime` on `low`): a job in `high` preempts one
in `low` as a cluster's higher-priority job does.

Packages are installed when missing only where that is expected (CI=true, or STATM_INSTALL_SLURM=1) and the
machine is Debian with root; elsewhere the tests that need this skip with the reason (`unavailable()`).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable

PACKAGES = ("munge", "slurm-client", "slurmctld", "slurmd")
BINARIES = ("munged", "slurmctld", "slurmd", "sbatch", "scontrol", "scancel", "squeue", "srun")
NODES = ("slurm-n1", "slurm-n2", "slurm-n3")
CPUS_PER_NODE = 16  # more than the machine has: SlurmdParameters=config_overrides lets an emulated node claim them
MEMORY_PER_NODE_MB = 8000
# A requeued job waits this long before it starts again (AuthInfo cred_expire, slurm.conf(5); the default, 120 s,
# would dominate the tests).
CRED_EXPIRE_SECONDS = 5
HOSTS = "/etc/hosts"
HOSTS_MARK = "# statm-savi tests: emulated Slurm nodes"
POLICY_RC_D = "/usr/sbin/policy-rc.d"


def _missing_binaries() -> list[str]:
    return [b for b in BINARIES if shutil.which(b) is None and not os.path.exists(f"/usr/sbin/{b}")]


def install_packages(log: Callable[[str], None] = print) -> None:
    """apt-get install PACKAGES without starting their services: a policy-rc.d that exits 101 forbids every
    init script action during the install (invoke-rc.d(8), POLICY-RC.D INTERFACE), and any previous one is
    put back afterwards."""
    previous = None
    if os.path.exists(POLICY_RC_D):
        with open(POLICY_RC_D, "rb") as f:
            previous = (f.read(), os.stat(POLICY_RC_D).st_mode)
    with open(POLICY_RC_D, "w") as f:
        f.write("#!/bin/sh\n# statm-savi tests: no service starts while Slurm and munge install\nexit 101\n")
    os.chmod(POLICY_RC_D, 0o755)
    try:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        started = time.monotonic()
        update = subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, text=True)
        r = subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *PACKAGES], env=env,
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"apt-get install {' '.join(PACKAGES)} failed ({r.returncode}):\n"
                               f"{update.stderr[-1000:]}{r.stdout[-2000:]}{r.stderr[-2000:]}")
        log(f"installed {' '.join(PACKAGES)} in {time.monotonic() - started:.0f} s")
    finally:
        if previous is None:
            os.remove(POLICY_RC_D)
        else:
            with open(POLICY_RC_D, "wb") as f:
                f.write(previous[0])
            os.chmod(POLICY_RC_D, previous[1])


def unavailable() -> str | None:
    """Why a real Slurm cannot run here (the tests skip with it), or None once it can: installs the packages
    where that is expected (CI=true or STATM_INSTALL_SLURM=1), and in CI any failure is an error, not a skip."""
    if not _missing_binaries():
        return None if os.geteuid() == 0 else "the real Slurm tests start slurmd and munged as root"
    wanted = os.environ.get("CI") == "true" or os.environ.get("STATM_INSTALL_SLURM") == "1"
    if not wanted:
        return (f"Slurm is not installed ({', '.join(_missing_binaries())} missing): "
                f"apt-get install {' '.join(PACKAGES)}, or set STATM_INSTALL_SLURM=1 to let the tests do it as root")
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError("CI needs a real Slurm: run as root on Debian (apt-get), or install "
                           + " ".join(PACKAGES))
    install_packages()
    if _missing_binaries():
        raise RuntimeError(f"after installing {PACKAGES}, still missing: {_missing_binaries()}")
    return None


def free_ports(count: int) -> list[int]:
    socks, ports = [], []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


CONF = """\
# A real Slurm for the statm-savi launch tests (tests/real_slurm.py); every path is under {root}.
ClusterName=statm-test
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.socket,cred_expire={cred_expire}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.%n.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.%n.log
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
ReturnToService=2
JobRequeue=1
MinJobAge=600
KillWait=30
InactiveLimit=0
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
{nodes}
PartitionName=low Nodes=ALL Default=YES PriorityTier=1 PreemptMode=REQUEUE GraceTime=60 MaxTime=INFINITE State=UP
PartitionName=high Nodes=ALL PriorityTier=10 PreemptMode=OFF MaxTime=INFINITE State=UP
"""


class Cluster:
    """`start()` writes slurm.conf, starts munged, slurmctld and one slurmd per node and waits for the nodes to
    be idle; `env()` is what a client command needs (SLURM_CONF); `stop()` kills every daemon by PID."""

    def __init__(self, root: str, nodes: tuple[str, ...] = NODES):
        self.root = os.path.abspath(root)
        self.nodes = nodes
        self.procs: list[subprocess.Popen] = []
        self.conf = os.path.join(self.root, "slurm.conf")

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
        return {**env, "SLURM_CONF": self.conf, **extra}

    def _write_conf(self) -> None:
        ctld_port, *node_ports = free_ports(1 + len(self.nodes))
        lines = [f"NodeName={n} NodeHostname={n} NodeAddr=127.0.0.1 Port={p} CPUs={CPUS_PER_NODE} "
                 f"RealMemory={MEMORY_PER_NODE_MB} State=UNKNOWN" for n, p in zip(self.nodes, node_ports, strict=True)]
        for d in ("munge", "state", "log", *(f"spool/{n}" for n in self.nodes)):
            os.makedirs(os.path.join(self.root, d), exist_ok=True)
        with open(self.conf, "w") as f:
            f.write(CONF.format(root=self.root, host=socket.gethostname(), ctld_port=ctld_port,
                                cred_expire=CRED_EXPIRE_SECONDS, nodes="\n".join(lines)))

    def _add_hosts(self) -> None:
        with open(HOSTS) as f:
            text = f.read()
        if HOSTS_MARK not in text:
            with open(HOSTS, "a") as f:
                f.write(("" if text.endswith("\n") else "\n") + f"127.0.0.1 {' '.join(self.nodes)} {HOSTS_MARK}\n")

    @staticmethod
    def remove_hosts() -> None:
        try:
            with open(HOSTS) as f:
                lines = f.readlines()
            kept = [line for line in lines if HOSTS_MARK not in line]
            if kept != lines:
                with open(HOSTS, "w") as f:
                    f.writelines(kept)
        except OSError:
            pass

    def _daemon(self, *cmd: str, log: str) -> None:
        out = open(os.path.join(self.root, "log", log), "ab")
        self.procs.append(subprocess.Popen(list(cmd), stdout=out, stderr=subprocess.STDOUT, env=self.env(),
                                           start_new_session=True))

    def start(self, timeout_seconds: float = 60) -> Cluster:
        self._write_conf()
        self._add_hosts()
        key = os.path.join(self.root, "munge", "munge.key")
        with open(key, "wb") as f:
            f.write(os.urandom(1024))
        os.chmod(key, 0o400)
        munge = os.path.join(self.root, "munge")
        self._daemon("munged", "--foreground", "--force", f"--socket={munge}/munge.socket", f"--key-file={key}",
                     f"--pid-file={munge}/munged.pid", f"--seed-file={munge}/munged.seed",
                     f"--log-file={munge}/munged.log", log="munged.out")
        self._wait(lambda: os.path.exists(f"{munge}/munge.socket"), 20, "munged's socket")
        self._daemon("slurmctld", "-D", "-i", "-f", self.conf, log="slurmctld.out")
        for node in self.nodes:
            self._daemon("slurmd", "-D", "-N", node, "-f", self.conf, log=f"slurmd.{node}.out")
        self._wait(lambda: self.idle_nodes() >= len(self.nodes), timeout_seconds, "every node idle")
        return self

    def _wait(self, condition: Callable[[], bool], seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if condition():
                return
            dead = [p.args[0] for p in self.procs if p.poll() is not None]
            if dead:
                break
            time.sleep(0.2)
        raise RuntimeError(f"real Slurm: no {what} within {seconds:g} s (exited: {dead}); logs in {self.root}/log:\n"
                           + self.log_tail())

    def log_tail(self, chars: int = 3000) -> str:
        out = []
        for name in sorted(os.listdir(os.path.join(self.root, "log"))):
            with open(os.path.join(self.root, "log", name), errors="replace") as f:
                out.append(f"--- {name}\n{f.read()[-chars:]}")
        return "\n".join(out)

    def run(self, *cmd: str, check: bool = True, **extra_env: str) -> subprocess.CompletedProcess:
        r = subprocess.run(list(cmd), env=self.env(**extra_env), capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)}: exit {r.returncode}\n{r.stdout}{r.stderr}")
        return r

    def idle_nodes(self) -> int:
        r = self.run("sinfo", "-h", "-N", "-o", "%N %T", check=False)
        return sum(1 for line in r.stdout.splitlines() if line.split()[-1:] == ["idle"])

    def sbatch(self, *args: str, **extra_env: str) -> int:
        r = self.run("sbatch", "--parsable", *args, **extra_env)
        return int(r.stdout.strip().split(";")[0])

    def job(self, job: int) -> dict[str, str]:
        """`scontrol show job -o JOB` as a dict (JobState, Restarts, ExcNodeList, NodeList, ...)."""
        r = self.run("scontrol", "show", "job", "-o", str(job), check=False)
        return dict(re.findall(r"(\w+)=(\S*)", r.stdout))

    def wait_job(self, job: int, done: Callable[[dict[str, str]], bool], seconds: float) -> dict[str, str]:
        deadline = time.monotonic() + seconds
        info: dict[str, str] = {}
        while time.monotonic() < deadline:
            info = self.job(job)
            if done(info):
                return info
            time.sleep(0.5)
        raise TimeoutError(f"job {job} after {seconds:g} s: {info}\n{self.log_tail(1500)}")

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.procs.clear()
        self.remove_hosts()


FINISHED = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE")


def finished(info: dict[str, str]) -> bool:
    return info.get("JobState") in FINISHED
