"""One run per workdir: process 0 of a training run holds WORKDIR/lease.json while it runs.

The file names its holder (host, pid, job, start time), a random token and the holder's timeout. The holder
renews it every timeout / 6 by setting its mtime, and checks before every save that the file still carries its
token (`check`, fencing): a holder whose lease was taken over stops before writing another checkpoint.
A second run waits up to lease_wait_seconds for the lease to be released, or to turn stale, then refuses.
A lease is stale when it has not changed for its holder's timeout, or at once when its holder ran on this host
(same hostname, boot and pid namespace) and that process no longer exists (a `kill -9`).

What it relies on, so that it works on NFS and Lustre without flock:
- link(2) of a unique file to the lease name is an atomic create-if-absent, also on NFS; when the reply is
  lost, the unique file's link count (2) says whether it worked (open(2), "O_EXCL" notes on NFS).
- One winner per takeover: checking that a lease is stale and replacing it are two operations, and on NFS the
  gap between them is a round trip or more, so several waiters can each see the same stale lease. Each first
  claims that lease by linking a file named after its signature (inode, mtime, size) with the same atomic
  create-if-absent; only the waiter whose link succeeded checks the signature again and replaces the lease, then
  reads the lease back and goes on only if it carries its own token.
- rename(2) replaces the name atomically (a takeover), and a reader sees the old file or the new one.
- Close-to-open consistency (nfs(5), "Data and metadata coherence"): opening a file revalidates its
  attributes, so a waiter that opens the lease and fstat()s the descriptor sees the latest renewal.
- No clocks are compared across hosts: staleness is the absence of change (inode, mtime, size) for the
  holder's timeout, timed by the waiter's own monotonic clock.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable

from trainer.exits import BadInput, WorkdirTakenOver

FILENAME = "lease.json"
_held: Lease | None = None  # this process's lease, until it is released as its own (`taken_over`)


class LeaseHeld(BadInput):
    """The workdir is held by another live run."""


def _read_text(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def _process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` in clock ticks (field 22 of /proc/PID/stat): tells a reused pid apart."""
    text = _read_text(f"/proc/{pid}/stat")
    return text.rsplit(")", 1)[1].split()[19] if text else None


def _host_identity() -> dict:
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = None
    return {"host": socket.gethostname(), "boot_id": _read_text("/proc/sys/kernel/random/boot_id"),
            "pid_namespace": namespace}


def job_description() -> str | None:
    """The scheduler's name for this job, when there is one."""
    env = os.environ
    if env.get("SLURM_JOB_ID"):
        return f"SLURM job {env['SLURM_JOB_ID']} (restart {env.get('SLURM_RESTART_COUNT', '0')})"
    if env.get("KUBERNETES_SERVICE_HOST"):
        return f"Kubernetes pod {socket.gethostname()}"
    return None


def describe(holder: dict) -> str:
    job = f", {holder['job']}" if holder.get("job") else ""
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder.get("started", 0)))
    return f"host {holder.get('host')}, pid {holder.get('pid')}{job}, started {started}"


class Lease:
    def __init__(self, workdir: str, timeout_seconds: float, log: Callable[[str], None] = print,
                 clock: Callable[[], float] = time.monotonic):
        self.path = os.path.join(workdir, FILENAME)
        self.timeout = float(timeout_seconds)
        self._log, self._clock = log, clock
        self.token = uuid.uuid4().hex
        self.lost: str | None = None  # why the lease is no longer ours, once the renewal thread finds out
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._claims_seen: dict[str, tuple[int, float]] = {}  # claim -> (inode, when this waiter first saw it)

    # ---------------------------------------------------------------- taking it
    def _content(self) -> str:
        return json.dumps({**_host_identity(), "pid": os.getpid(), "pid_start": _process_start(os.getpid()),
                           "job": job_description(), "started": time.time(), "token": self.token,
                           "timeout_seconds": self.timeout})

    def _unique_file(self) -> str:
        tmp = f"{self.path}.{self.token}.tmp"
        with open(tmp, "w") as f:
            f.write(self._content())
            f.flush()
            os.fsync(f.fileno())
        return tmp

    def _link_new(self, path: str) -> bool:
        """Creates `path` (this run's lease content) if it is absent, atomically: whether this call made it."""
        tmp = self._unique_file()
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError:
            return os.stat(tmp).st_nlink == 2  # NFS: the link may exist although its reply was lost
        finally:
            os.remove(tmp)

    def _create(self) -> bool:
        return self._link_new(self.path)

    def _observe(self) -> tuple[dict | None, tuple | None]:
        """(holder, signature) of the lease now: (None, None) when there is none, (None, signature) while it is
        being written."""
        try:
            with open(self.path) as f:
                st = os.fstat(f.fileno())
                text = f.read()
        except FileNotFoundError:
            return None, None
        signature = (st.st_ino, st.st_mtime_ns, st.st_size)
        try:
            return json.loads(text), signature
        except json.JSONDecodeError:
            return None, signature

    def _dead_here(self, holder: dict) -> bool:
        """Its process ran on this host (same boot, same pid namespace) and no longer exists."""
        here = _host_identity()
        if any(holder.get(k) != here[k] for k in here) or not isinstance(holder.get("pid"), int):
            return False
        return _process_start(holder["pid"]) != holder.get("pid_start")

    def _claim(self, signature: tuple, timeout: float) -> str | None:
        """Links a claim on the stale lease with this `signature`: its path when this waiter made it, None when
        another waiter did. A claim normally lives for a few file operations; one that this waiter has seen
        unchanged for a whole lease timeout (the longer of the stale holder's, `timeout`, and its own) belongs to
        a waiter that died in between, and the next generation is claimed."""
        timeout = max(timeout, self.timeout)
        base = f"{self.path}.takeover-{signature[0]}-{signature[1]}-{signature[2]}"
        for generation in range(1000):
            claim = f"{base}-{generation}"
            if self._link_new(claim):
                return claim
            try:
                inode = os.stat(claim).st_ino
            except FileNotFoundError:
                return None  # its claimant is done with it: the lease has changed
            first_seen = self._claims_seen.get(claim)
            if first_seen is None or first_seen[0] != inode:
                self._claims_seen[claim] = (inode, self._clock())
                return None
            if self._clock() - first_seen[1] < timeout:
                return None
        return None

    def _take_over(self, holder: dict, signature: tuple, reason: str) -> bool:
        claim = self._claim(signature, float(holder.get("timeout_seconds", self.timeout)))
        if claim is None:
            return False  # another waiter takes this lease over
        tmp = self._unique_file()
        try:
            if self._observe()[1] != signature:  # renewed or replaced meanwhile: not stale after all
                return False
            os.replace(tmp, self.path)
            if (self._observe()[0] or {}).get("token") != self.token:  # read back before doing anything
                return False
        finally:
            base, generation = claim.rsplit("-", 1)
            for path in (tmp, *(f"{base}-{g}" for g in range(int(generation) + 1))):  # dead claimants' too
                try:
                    os.remove(path)
                except FileNotFoundError:
                    pass
        self._log(f"warning: taking over the lease of workdir {os.path.dirname(self.path)} from "
                  f"{describe(holder)}: {reason}")
        return True

    def acquire(self, wait_seconds: float, poll_seconds: float = 1.0) -> Lease:
        """Takes the lease (waiting up to `wait_seconds` for it) and starts renewing it; LeaseHeld otherwise."""
        start = self._clock()
        seen, since = None, start
        while True:
            if self._create():
                break
            holder, signature = self._observe()
            now = self._clock()
            if signature != seen:
                seen, since = signature, now
            if holder is None and signature is not None:  # not JSON: judged by its changes and our timeout
                holder = {"host": "unknown (the lease file is not readable JSON)", "timeout_seconds": self.timeout}
            if holder is not None:
                silent, timeout = now - since, float(holder.get("timeout_seconds", self.timeout))
                if self._dead_here(holder):
                    if self._take_over(holder, signature, f"its process {holder.get('pid')} no longer exists"):
                        break
                elif silent >= timeout:
                    if self._take_over(holder, signature, f"not renewed for {silent:.0f} s (its timeout: "
                                       f"{timeout:g} s)"):
                        break
                if now - start >= wait_seconds:  # also when another waiter is taking a stale lease over
                    raise LeaseHeld(self._held_message(holder, signature, now - start, timeout))
            time.sleep(min(poll_seconds, max(self.timeout / 6, 0.05)))
        self._thread = threading.Thread(target=self._renew_loop, name="workdir-lease", daemon=True)
        self._thread.start()
        global _held
        _held = self
        return self

    def _held_message(self, holder: dict, signature: tuple, waited: float, timeout: float) -> str:
        renewed = time.strftime("%H:%M:%S", time.localtime(signature[1] / 1e9))
        return (f"workdir {os.path.dirname(self.path)} is in use by another run ({describe(holder)}); its lease was "
                f"last renewed at {renewed}, and did not go away in the {waited:.0f} s waited "
                "(--config.lease_wait_seconds). Stop that run, or use another --workdir. A holder that is gone is "
                f"taken over once its lease has not been renewed for {timeout:g} s, or at once on the same host")

    # ---------------------------------------------------------------- holding it
    def _lost_reason(self) -> str | None:
        """Why the lease file is no longer this run's, read from it now; None while it is."""
        holder, _ = self._observe()
        if holder is None:
            return "its lease file was removed"
        return None if holder.get("token") == self.token else f"it is held by {describe(holder)}"

    def _renew_loop(self) -> None:
        while not self._stop.wait(max(self.timeout / 6, 0.05)):
            try:
                self.lost = self._lost_reason()
                if self.lost is not None:
                    return
                os.utime(self.path)
            except OSError:
                continue  # a transient error: the next beat tries again; a long outage makes the lease stale

    def check(self) -> None:
        """Before every save: WorkdirTakenOver when the lease is no longer this run's."""
        if self.lost is None:
            self.lost = self._lost_reason()
        if self.lost is not None:
            raise WorkdirTakenOver(f"this run lost the lease of workdir {os.path.dirname(self.path)} ({self.lost}): "
                                   "another run took it over, so this one stops here and writes no further "
                                   "checkpoint. The other run now owns the workdir; if none should, restart this "
                                   "command once it has ended")

    def release(self) -> None:
        """Stops renewing and removes the file if it is still this run's. Never raises: a lease that is already
        gone, or held by another run, is said in one line and left as it is."""
        global _held
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        workdir = os.path.dirname(self.path)
        try:
            holder, _ = self._observe()
            if holder is not None and holder.get("token") == self.token:
                os.remove(self.path)
                _held = None if _held is self else _held
            elif holder is None:  # removed by another run (one that took it over, then released it)
                self.lost = self.lost or "its lease file was removed"
                self._log(f"the lease of workdir {workdir} was already gone when this run released it")
            else:
                self.lost = self.lost or f"it is held by {describe(holder)}"
                self._log(f"the lease of workdir {workdir} is no longer this run's ({self.lost}): left to its holder")
        except FileNotFoundError:  # ours when read, gone before the remove
            self._log(f"the lease of workdir {workdir} was already gone when this run released it")
            _held = None if _held is self else _held
        except OSError as e:
            self._log(f"warning: could not release the lease of workdir {workdir} ({e}); it turns stale by itself "
                      f"after {self.timeout:g} s")


def append_alone(path: str):
    """`path` opened for appending on a new inode that holds its lines so far (copied, then renamed over it).

    A run whose lease is taken over may still hold its own descriptors on the old inode: what it writes after
    waking goes there (an unlinked file, or ESTALE on NFS), never into the file of the run that took over. Two
    runs never append to one file, which NFS does not make safe (each client appends at the size it has cached).
    Called after the lease is taken, for every file a run appends to."""
    tmp = f"{path}.{uuid.uuid4().hex}.tmp"
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        data = b""
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return open(path, "a")  # noqa: SIM115 - the caller closes it


def taken_over() -> str | None:
    """Why this process's lease is another run's now (read from the file), or None: after a takeover, whatever
    error follows ends the run as fenced, not as a resumable filesystem error."""
    lease = _held
    if lease is None:
        return None
    if lease.lost is None:
        try:
            lease.lost = lease._lost_reason()
        except OSError:
            return None
    return lease.lost
