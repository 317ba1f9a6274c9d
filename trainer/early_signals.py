"""A SIGTERM that comes before JAX listens for it is kept, and delivered once JAX does.

JAX's preemption notifier takes SIGTERM over when `jax.distributed.initialize()` runs (trainer/runtime.py; XLA's
tsl/distributed_runtime/preemption/preemption_notifier.cc installs its own handler, replacing any Python one);
until then a SIGTERM (a scheduler's time-limit warning, a preemption of a job that is just starting) would end
the process before it saves anything, with no exit code of ours. `hold()`, called first thing by
`python -m trainer.main`, notes such a signal; `deliver()`, right after the initialisation, sends it again to
this process, now to JAX's notifier: the run then stops at its first poll and saves, as for any SIGTERM. This
module imports nothing heavy, so that `hold()` runs within moments of the start.
"""

from __future__ import annotations

import os
import signal

_received: list[int] = []


def hold() -> None:
    """Notes the first SIGTERM; a second one, before JAX listens, ends the process as SIGTERM always did (a
    start that hangs, say on an unreachable coordinator, still stops at the scheduler's second signal)."""

    def note(signum, _frame):
        _received.append(signum)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    signal.signal(signal.SIGTERM, note)


def deliver() -> bool:
    """After JAX's notifier took SIGTERM over: a SIGTERM held so far is sent again. True if one was."""
    if not _received:
        return False
    os.kill(os.getpid(), signal.SIGTERM)
    return True
