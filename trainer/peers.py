"""Heartbeats between the processes of a run, on the coordination service's key-value store.

Each process bumps its own counter every few seconds and watches the others'. A peer whose counter has not
moved for `timeout_seconds` (killed, its node lost, its host frozen), or a coordinator that cannot be reached
for as long, ends this process at once with EXIT_HUNG and a message that names it. Without this, a survivor
blocked in a device collective (NCCL does not notice a dead peer) waits until JAX's own heartbeat check
aborts it with a core dump (SIGABRT, exit 134): jax.distributed.initialize takes no failure callback that
works (the client's `missed_heartbeat_callback` fails with std::bad_cast in jaxlib 0.10.2), so JAX's check
is set to fire later than this one (runtime.initialize_distributed).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

from trainer.exits import exit_hung

PREFIX = "statm_savi/heartbeat"
DONE = "done"  # a process that leaves normally says so: the others stop watching it


class PeerMonitor:
    def __init__(self, client, process_index: int, process_count: int, timeout_seconds: float,
                 exit: Callable[[int], None] = os._exit):
        self.client, self.index, self.timeout = client, process_index, float(timeout_seconds)
        self.peers = [j for j in range(process_count) if j != process_index]
        self.interval = min(max(self.timeout / 4, 0.25), 10.0)
        self._exit = exit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="peer-heartbeats", daemon=True)

    def start(self) -> PeerMonitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Before leaving normally (and before jax.distributed's shutdown barrier)."""
        self._stop.set()
        self._thread.join()
        try:
            self.client.key_value_set(f"{PREFIX}/{self.index}", DONE, allow_overwrite=True)
        except Exception:  # the coordinator may be gone already; nobody is left to watch us then
            pass

    def _fail(self, reason: str) -> None:
        exit_hung(reason, self.index, self._exit)

    def _run(self) -> None:
        start = time.monotonic()
        seen = {j: (None, start) for j in self.peers}  # peer -> (last counter value, when it last changed)
        reached, beat = start, 0
        while not self._stop.wait(self.interval):
            now = time.monotonic()
            try:
                self.client.key_value_set(f"{PREFIX}/{self.index}", str(beat), allow_overwrite=True)
                beat += 1
                reached = now
            except Exception as e:  # the coordinator (process 0's service) is gone or unreachable
                if now - reached > self.timeout:
                    return self._fail(f"the coordinator cannot be reached for {self.timeout:g} s "
                                      f"({str(e).splitlines()[0][:200] if str(e) else type(e).__name__})")
                continue
            for j in list(seen):
                try:
                    value = self.client.key_value_try_get(f"{PREFIX}/{j}")
                except Exception:  # not written yet: that peer has not started its heartbeats
                    value = None
                if value == DONE:
                    del seen[j]
                elif value is not None and value != seen[j][0]:
                    seen[j] = (value, now)
            silent = sorted(j for j, (_, changed) in seen.items() if now - changed > self.timeout)
            if silent:
                return self._fail(f"process(es) {silent} sent no heartbeat for {self.timeout:g} s: dead or frozen")


def start_peer_monitor(heartbeat_timeout_seconds: float) -> PeerMonitor | None:
    """Heartbeats between the processes of a multi-process run, on the coordination service; None for one."""
    import jax

    if jax.process_count() == 1:
        return None
    from jax._src import distributed

    return PeerMonitor(distributed.global_state.client, jax.process_index(), jax.process_count(),
                       heartbeat_timeout_seconds).start()
