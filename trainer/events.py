"""The run's event log, WORKDIR/events.jsonl: what every attempt (start to exit, or to a kill) spent its time on.

Each line ends a phase: {"t": wall-clock time at its end, "event": the phase, "seconds": its length, ...}.
The phases of one attempt tile its time from process start to its last line, so a report can account for all
of it (trainer/goodput.py). Appended and flushed line by line by process 0 only: a shared filesystem is enough
(no Cloud Logging), and a `kill -9` loses at most the phase in progress.
"""

from __future__ import annotations

import json
import os
import time
import uuid

FILENAME = "events.jsonl"
PHASES = ("startup", "restore", "initialise", "first_step", "train", "save", "eval", "shutdown")


def process_start_time() -> float:
    """When this process was created (Linux: its start in clock ticks after boot, against the uptime now, to
    10 ms), so that interpreter start-up and imports are counted too."""
    try:
        with open("/proc/self/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return time.time()


class EventLog:
    """Buffers events until `attach(workdir)` (the workdir is checked first), then appends them. A write that
    fails (a full disk) costs that line and one warning, never the run."""

    def __init__(self):
        self.attempt = uuid.uuid4().hex[:12]
        self.resumed_from: int | None = None  # the step this attempt restored (0: fresh), once it has
        self.path: str | None = None
        self._warned = False
        self._last = process_start_time()
        self._pending = [self._line("start", self._last, pid=os.getpid(),
                                    slurm_restart_count=os.environ.get("SLURM_RESTART_COUNT"))]
        self._f = None

    def _line(self, event: str, t: float, **fields) -> dict:
        return {"t": round(t, 4), "event": event, "attempt": self.attempt, **fields}

    def attach(self, workdir: str, write: bool) -> None:
        """From now on (process 0: `write`), events go to WORKDIR/events.jsonl. Once is enough."""
        if write and self._f is None:
            self.path = os.path.join(workdir, FILENAME)
            try:
                self._f = open(self.path, "a")  # noqa: SIM115 - closed in close()
            except OSError as e:
                self._warn(e)
                return
            for line in self._pending:
                self._write(line)
        self._pending = [] if write else self._pending

    def own(self) -> None:
        """Once this run holds the workdir's lease: from now on its lines go to a file no earlier holder still
        appends to (trainer/lease.py: append_alone)."""
        if self._f is None:
            return
        from trainer.lease import append_alone

        try:
            self._f.close()
            self._f = append_alone(self.path)
        except OSError as e:
            self._f = None
            self._warn(e)

    @property
    def training_started(self) -> bool:
        """Whether the state was restored or initialised: errors after this point are the run's, not setup's."""
        return self.resumed_from is not None

    def _warn(self, e: OSError) -> None:
        if not self._warned:
            print(f"warning: cannot write the event log {self.path} ({e.strerror or e}); lines are lost until it "
                  "can", flush=True)
            self._warned = True

    def _write(self, line: dict) -> None:
        if self._f is None:
            self._pending.append(line)
            return
        try:
            self._f.write(json.dumps(line) + "\n")
            self._f.flush()
        except OSError as e:
            self._warn(e)

    def phase(self, event: str, **fields) -> float:
        """Ends the phase `event` now; returns its length in seconds."""
        assert event in PHASES, event
        if event in ("restore", "initialise"):
            self.resumed_from = int(fields["step"])
        now = time.time()
        seconds, self._last = now - self._last, now
        self._write(self._line(event, now, seconds=round(seconds, 4), **fields))
        return seconds

    def since_last(self) -> float:
        return time.time() - self._last

    def note(self, event: str, **fields) -> None:
        """A moment, not a phase (a signal, an exit): no time of its own."""
        self._write(self._line(event, time.time(), **fields))

    def close(self) -> None:
        if self._f is not None:
            try:
                self._f.close()
            except OSError as e:
                self._warn(e)
            self._f = None
