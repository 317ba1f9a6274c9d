"""One Orbax CheckpointManager in WORKDIR/checkpoints: train state + data-iterator state + run metadata.

Saves are asynchronous. `should_save` is polled every step (it also carries the preemption sync point) and
says when to `save`: every checkpoint_every_steps, the first step of a fresh run, the step agreed after a
SIGTERM. Retention keeps the newest `keep` steps plus every step divisible by
`keep_period`. Restores use an abstract target carrying the *current* shardings, so a checkpoint restores
onto any device count; a newest step that cannot be restored falls back to the one before it.
"""

from __future__ import annotations

import os
import time
from typing import Any

import orbax.checkpoint as ocp

ITEMS = ("state", "data", "meta")


class CheckpointError(RuntimeError):
    """No saved step of the workdir can be restored."""


class _Manager(ocp.CheckpointManager):
    """Orbax's manager, with preemption polls kept in step order.

    JAX's sync manager remembers the step of the latest poll and, on a SIGTERM, agrees on that step + 1.
    Orbax's finalize thread also polls, with the step it has just written, which may be several steps old:
    a SIGTERM arriving then can set the sync point to a step the loop has already passed, and the run
    ignores the signal until SIGKILL. Polls older than the newest are answered here."""

    _newest_poll = -1

    def reached_preemption(self, step: int) -> bool:
        if step < self._newest_poll:
            return False
        self._newest_poll = step
        return super().reached_preemption(step)


class Checkpoints:
    def __init__(self, workdir: str, every_steps: int, keep: int = 3, keep_period: int = 0,
                 barrier_timeout_seconds: int = 300):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")  # Orbax needs absolute paths
        # Multi-process: every process writes its shards, process 0 commits; the barriers between them wait on
        # the coordination service at most barrier_timeout_seconds (a dead peer then fails the save).
        self._options = ocp.CheckpointManagerOptions(
            save_interval_steps=every_steps, max_to_keep=keep, keep_period=keep_period or None,
            enable_async_checkpointing=True, cleanup_tmp_directories=True, create=True,
            async_options=ocp.AsyncOptions(timeout_secs=int(barrier_timeout_seconds)))
        self.manager = _Manager(self.directory, item_names=ITEMS, options=self._options)

    def save(self, step: int, state: Any, data_state: dict, meta: dict, force: bool = False) -> bool:
        if step in self.manager.all_steps():
            return False  # never the same step twice (StepAlreadyExistsError)
        return self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state), meta=ocp.args.JsonSave(meta)),
            force=force)

    def should_save(self, step: int) -> bool:
        """Due by the interval, the first step of a fresh run, or the step all processes agreed to stop at
        after a SIGTERM (JAX's preemption sync point, which must be polled every step)."""
        return self.manager.should_save(step)

    def reached_preemption(self, step: int) -> bool:
        return self.manager.reached_preemption(step)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict, dict]:
        r = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore(),
            meta=ocp.args.JsonRestore()))
        return r["state"], r["data"], r["meta"]

    def restore_newest_good(self, abstract_state: Any) -> tuple[int, Any, dict, dict] | None:
        """The newest step that restores, as (step, state, data state, meta); None when there is no step.

        A step that fails (a truncated or deleted file, a TensorStore or Orbax error) gets one warning that
        names it and the cause, and the step before it is tried. CheckpointError when every step fails."""
        failures = []
        for step in reversed(self.all_steps()):
            try:
                return (step, *self.restore(step, abstract_state))
            except Exception as e:  # Orbax and TensorStore raise many types; each becomes one line
                cause = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"
                failures.append(f"step {step}: {cause}")
                print(f"warning: checkpoint step {step} in {self.directory} cannot be restored ({cause}); trying "
                      "the step before it", flush=True)
        if failures:
            raise CheckpointError(f"no checkpoint in {self.directory} can be restored: " + "; ".join(failures)
                                  + ". Nothing was changed: to train from scratch, pass --allow_fresh_start (the "
                                  "directory is kept under another name) or use another --workdir")
        return None

    def set_aside(self) -> str:
        """Moves the checkpoint directory to checkpoints.unrestorable-TIME (kept, not deleted) and starts an
        empty one; returns the new name of the old directory."""
        self.close()
        aside = f"{self.directory}.unrestorable-{time.strftime('%Y%m%d-%H%M%S')}"
        os.rename(self.directory, aside)
        self.manager = _Manager(self.directory, item_names=ITEMS, options=self._options)
        return aside

    def wait_until_finished(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.wait_until_finished()
        self.manager.close()


def restore_params(directory: str, abstract_params: Any) -> Any:
    """Params written by `python -m model.seed_import convert` (DIR/params), onto the current shardings."""
    path = os.path.join(os.path.abspath(directory), "params")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"init_from={directory!r}: no Orbax params at {path} "
                                "(create it with `python -m model.seed_import convert ... --out DIR`)")
    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(path, abstract_params)
