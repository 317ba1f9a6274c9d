"""Rehearse a cluster run on one machine: N trainer processes × M fake CPU devices on 127.0.0.1.

python -m launch.local --num_processes 2 --devices_per_process 2 -- \\
    --config configs/tiny.py --config.data.data_dir=DIR --workdir WORKDIR

Each process is `python -m trainer.main` with --coordinator_address / --num_processes / --process_id added, its
output prefixed with its rank. The launcher behaves like `srun --kill-on-bad-exit`, with a grace period:
- a process that exits non-zero (or dies) gives the others --grace_seconds to end by themselves (a preemption
  or a dead peer ends them all within the trainer's own timeouts), then they get SIGTERM, then SIGKILL;
- Ctrl-C or SIGTERM to the launcher is passed on as SIGTERM, the preemption path (save, exit 75); a second
  one kills at once;
- children die with the launcher even when it is killed with SIGKILL (PR_SET_PDEATHSIG).
Exit status: as srun's, the highest exit code (a death by signal N as 128 + N): 0 when all are done, 75 when
all saved at a SIGTERM.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import os
import signal
import subprocess
import sys
import threading
import time

from trainer import exits
from trainer.runtime import free_port

KILL_AFTER_TERM_SECONDS = 20


def _die_with_parent(launcher: int) -> None:
    """Runs in the child between fork and exec: SIGKILL when the launcher dies, however it dies. The death
    signal covers only a parent that dies after prctl (prctl(2), PR_SET_PDEATHSIG); a launcher killed between
    the fork and this call has left the child to a new parent already, so the child ends itself."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != launcher:
        os.kill(os.getpid(), signal.SIGKILL)


def child_env(devices: int, base: dict[str, str] | None = None) -> dict[str, str]:
    """CPU-only JAX with `devices` fake devices; a layout from the environment would override the flags."""
    env = dict(os.environ if base is None else base)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    env.update(JAX_PLATFORMS="cpu", XLA_FLAGS=" ".join([*flags, f"--xla_force_host_platform_device_count={devices}"]),
               PYTHONUNBUFFERED="1")
    for key in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID", "JAX_NUM_CPU_DEVICES"):
        env.pop(key, None)
    return env


def commands(num_processes: int, port: int, trainer_args: list[str], module: str = "trainer.main") -> list[list[str]]:
    address = f"127.0.0.1:{port}"
    return [[sys.executable, "-m", module, *trainer_args, f"--coordinator_address={address}",
             f"--num_processes={num_processes}", f"--process_id={rank}"] for rank in range(num_processes)]


def _relay(rank: int, stream, out, lock: threading.Lock) -> None:
    for line in iter(stream.readline, b""):
        with lock:
            out.write(f"[{rank}] ".encode() + line)
            out.flush()
    stream.close()


def exit_status(codes: dict[int, int]) -> int:
    """One status for the group, as srun gives it: the highest, with a death by signal N as 128 + N. (Which
    process failed first is a race that a poll loop cannot settle: a dead peer ends the others within ms.)"""
    return max(128 - c if c < 0 else c for c in codes.values())


class Group:
    def __init__(self, cmds: list[list[str]], env: dict[str, str], grace_seconds: float):
        self.grace = grace_seconds
        self.lock = threading.Lock()
        # Signals received and acted on. The handler only appends: Python runs it in the main thread between two
        # bytecodes, possibly inside say() with self.lock held, so taking the lock (or printing) there could
        # deadlock (signal module docs, "Note on signal handlers and exceptions"; threading.Lock is not reentrant).
        self.signals: list[int] = []
        self.handled = 0
        self.deadline: float | None = None  # when the survivors get SIGTERM
        self.kill_at: float | None = None
        self.procs: list[subprocess.Popen] = []
        # Before the first child exists: a Ctrl-C at any moment reaches the children as SIGTERM.
        signal.signal(signal.SIGINT, self.on_signal)
        signal.signal(signal.SIGTERM, self.on_signal)
        for cmd in cmds:
            self.procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                               preexec_fn=functools.partial(_die_with_parent, os.getpid()),
                                               start_new_session=True))
        # A signal that came while the children were being started is acted on by wait()'s first round.
        out = sys.stdout.buffer
        self.relays = [threading.Thread(target=_relay, args=(r, p.stdout, out, self.lock), daemon=True)
                       for r, p in enumerate(self.procs)]
        for t in self.relays:
            t.start()

    def say(self, text: str) -> None:
        with self.lock:
            sys.stdout.buffer.write(f"[launch] {text}\n".encode())
            sys.stdout.buffer.flush()

    def on_signal(self, signum, _frame) -> None:
        self.signals.append(signum)

    def act_on_signals(self) -> None:
        """The first signal: SIGTERM to every process (the preemption path); a second: SIGKILL."""
        while self.handled < len(self.signals):
            signum = self.signals[self.handled]
            self.handled += 1
            if self.handled == 1:
                self.say(f"{signal.Signals(signum).name}: passing SIGTERM to every process (save and exit "
                         f"{exits.PREEMPTED}); again to kill")
                self.terminate()
            else:
                self.say(f"{signal.Signals(signum).name} again: SIGKILL")
                self.kill()

    def live(self) -> list[subprocess.Popen]:
        return [p for p in self.procs if p.poll() is None]

    def terminate(self) -> None:
        for p in self.live():
            p.send_signal(signal.SIGTERM)
        self.kill_at = self.kill_at or time.monotonic() + KILL_AFTER_TERM_SECONDS

    def kill(self) -> None:
        for p in self.live():
            p.kill()

    def wait(self) -> int:
        codes: dict[int, int] = {}
        first_failure = None
        while len(codes) < len(self.procs):
            self.act_on_signals()
            for rank, p in enumerate(self.procs):
                if rank in codes or p.poll() is None:
                    continue
                codes[rank] = p.returncode
                self.say(f"rank {rank} exited with {p.returncode}")
                if p.returncode != 0 and first_failure is None and not self.signals and self.kill_at is None:
                    first_failure = rank
                    self.deadline = time.monotonic() + self.grace
            now = time.monotonic()
            if self.deadline is not None and now > self.deadline and self.kill_at is None and self.live():
                self.say(f"rank {first_failure} failed {self.grace:g} s ago and some are still running: SIGTERM")
                self.terminate()
            if self.kill_at is not None and now > self.kill_at and self.live():
                self.say("still running after SIGTERM: SIGKILL")
                self.kill()
            time.sleep(0.1)
        for t in self.relays:
            t.join(timeout=5)
        status = exit_status(codes)
        self.say(f"exit codes {[codes[r] for r in range(len(self.procs))]}: exiting with {status}")
        return status


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ours, trainer_args = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    parser = argparse.ArgumentParser(prog="python -m launch.local", description=__doc__.splitlines()[0])
    parser.add_argument("--num_processes", type=int, required=True)
    parser.add_argument("--devices_per_process", type=int, default=1)
    parser.add_argument("--port", type=int, default=0, help="the coordinator's port (default: a free one)")
    parser.add_argument("--module", default="trainer.main",
                        help="the program each process runs (python -m MODULE), e.g. launch.preflight.checks")
    parser.add_argument("--grace_seconds", type=float, default=120.0,
                        help="after one process fails, how long the others may take to end by themselves")
    args = parser.parse_args(ours)
    if args.num_processes < 1 or args.devices_per_process < 1:
        parser.error("--num_processes and --devices_per_process must be >= 1")
    if not trainer_args:
        parser.error("no trainer arguments: python -m launch.local --num_processes N -- --config ... --workdir ...")
    group = Group(commands(args.num_processes, args.port or free_port(), trainer_args, args.module),
                  child_env(args.devices_per_process), args.grace_seconds)
    return group.wait()


if __name__ == "__main__":
    sys.exit(main())
