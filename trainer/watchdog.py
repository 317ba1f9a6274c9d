"""A step-progress watchdog: when no training step completes within `timeout_seconds`, every process prints
why and exits with EXIT_HUNG, so that the scheduler restarts the job from its last checkpoint instead of
holding GPUs in a collective that will never finish (a rank stuck in NCCL, a dead peer on a fabric that does
not report it). Device collectives have no timeout of their own; this is the backstop.

The clock runs only between steps: it starts after the first step (the compile, or a cache load) and is
paused around evaluations, which take their own, longer time. A step is "complete" when the loop gets back
to the host, which it does at the latest one step later, when it reads that step's finite flag.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time

from trainer.exits import exit_hung


class Watchdog:
    def __init__(self, timeout_seconds: float, process_index: int = 0, exit=os._exit):
        self.timeout = float(timeout_seconds)
        self.process_index = process_index
        self._exit = exit
        self._lock = threading.Lock()
        self._deadline: float | None = None  # None: not armed, or paused
        self._step = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self, step: int) -> None:
        """Step `step` is done: the next one has `timeout` seconds. The first beat arms the watchdog."""
        if self.timeout <= 0:
            return
        with self._lock:
            self._step, self._deadline = step, time.monotonic() + self.timeout
        if self._thread is None:
            self._thread = threading.Thread(target=self._watch, name="step-watchdog", daemon=True)
            self._thread.start()

    @contextlib.contextmanager
    def paused(self):
        """Evaluation and other long non-step work: the clock restarts from zero afterwards."""
        with self._lock:
            armed, self._deadline = self._deadline is not None, None
        try:
            yield
        finally:
            if armed:
                with self._lock:
                    self._deadline = time.monotonic() + self.timeout

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(min(1.0, self.timeout / 4)):
            with self._lock:
                late = self._deadline is not None and time.monotonic() > self._deadline
                step = self._step
            if late:
                return exit_hung(f"no training step completed within {self.timeout:g} s after step {step}: a peer "
                                 "process is dead or a collective is stuck (raise --config.step_timeout_seconds if "
                                 "steps are really this slow)", self.process_index, self._exit)
