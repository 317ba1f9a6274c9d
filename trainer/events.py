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
    """Buffers events until `attach(workdir)` (the workdir is checked first), then appends them."""

    def __init__(self):
        self.attempt = uuid.uuid4().hex[:12]
        self._last = process_start_time()
        self._pending = [self._line("start", self._last, pid=os.getpid(),
                                    slurm_restart_count=os.environ.get("SLURM_RESTART_COUNT"))]
        self._f = None

    def _line(self, event: str, t: float, **fields) -> dict:
        return {"t": round(t, 4), "event": event, "attempt": self.attempt, **fields}

    def attach(self, workdir: str, write: bool) -> None:
        """From now on (process 0: `write`), events go to WORKDIR/events.jsonl. Once is enough."""
        if write and self._f is None:
            self._f = open(os.path.join(workdir, FILENAME), "a")  # noqa: SIM115 - closed in close()
            for line in self._pending:
                self._write(line)
        self._pending = [] if write else self._pending

    def _write(self, line: dict) -> None:
        if self._f is None:
            self._pending.append(line)
            return
        self._f.write(json.dumps(line) + "\n")
        self._f.flush()

    def phase(self, event: str, **fields) -> float:
        """Ends the phase `event` now; returns its length in seconds."""
        assert event in PHASES, event
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
            self._f.close()
            self._f = None
