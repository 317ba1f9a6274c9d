"""One Orbax CheckpointManager in WORKDIR/checkpoints: train state + data-iterator state + run metadata.

Saves are asynchronous. `should_save` is polled every step (it also carries the preemption sync point) and
says when to `save`: every checkpoint_every_steps, the first step of a fresh run, the step agreed after a
SIGTERM. Retention keeps the newest `keep` steps plus every step divisible by
`keep_period`. Restores use an abstract target carrying the *current* shardings, so a checkpoint restores
onto any device count; a newest step that cannot be restored falls back to the one before it, and is set
aside (moved to WORKDIR/checkpoints_set_aside/, outside retention) so that its step can be saved again.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint.path import atomicity

from trainer import runtime
from trainer.exits import BadInput, Resumable, one_line

ITEMS = ("state", "data", "meta")
SET_ASIDE = "checkpoints_set_aside"


class CheckpointError(BadInput):
    """No saved step of the workdir can be restored."""


class CheckpointUnverified(Resumable):
    """A step just written does not read back."""


class _QuietOrbaxErrors(logging.Filter):
    """Orbax logs every failure of its background threads with a traceback, once per thread, and then raises it
    to the caller (its futures keep the thread's exception and raise it on join: orbax/checkpoint/_src/futures/
    future.py; CheckpointManager.save and wait_until_finished join them); the caller (trainer.main) says it
    once."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno >= logging.ERROR and f"{os.sep}orbax{os.sep}" in record.pathname)


class _QuietUnretrievedFutures(logging.Filter):
    """Orbax's writes run as asyncio tasks; when one fails (a full disk), asyncio also reports each of its
    sibling tasks' failures when they are collected ("exception was never retrieved"): the same error again."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "exception was never retrieved" not in record.getMessage()


logging.getLogger("absl").addFilter(_QuietOrbaxErrors())
logging.getLogger("asyncio").addFilter(_QuietUnretrievedFutures())


def _quiet_orbax_teardown(hook):
    """When one read or write of a step fails (a full disk, a truncated file), Orbax abandons its sibling
    coroutines and closes its event loop; TensorStore then completes them into the closed loop. Python reports
    each as an unraisable exception with a traceback (RuntimeError "Event loop is closed", or the sibling's
    own error in an abandoned Orbax coroutine), hundreds of them. Nothing is lost: the first failure reaches
    the caller, which reports it once."""

    def quiet(unraisable):
        code = getattr(unraisable.object, "cr_code", None)
        abandoned = code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename
        closed = unraisable.exc_type is RuntimeError and str(unraisable.exc_value) == "Event loop is closed"
        if not (abandoned or closed):
            hook(unraisable)

    return quiet


sys.unraisablehook = _quiet_orbax_teardown(sys.unraisablehook)


def newest_complete_step(workdir: str) -> int | None:
    """The newest finalized step directory in WORKDIR/checkpoints, read from the directory alone (no Orbax:
    also when Orbax cannot start)."""
    try:
        names = os.listdir(os.path.join(os.path.abspath(workdir), "checkpoints"))
    except OSError:
        return None
    return max((int(n) for n in names if n.isdigit()), default=None)


def describe_newest(workdir: str) -> str:
    step = newest_complete_step(workdir)
    where = os.path.join(os.path.abspath(workdir), "checkpoints")
    return f"The newest complete checkpoint is step {step} in {where}" if step is not None else (
        f"No complete checkpoint exists yet in {where}")


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

    def rewind_polls(self, step: int) -> None:
        """Polls from `step` on reach JAX again (after an evaluation polled counters past it)."""
        self._newest_poll = step


def fenced_temporary_path(fence: Callable[[], None]) -> type:
    """Orbax's atomic save, a tmp directory STEP.orbax-checkpoint-tmp-* renamed to STEP once written
    (orbax/checkpoint/_src/path/atomicity.py: AtomicRenameTemporaryPath.create and .finalize, run in the async
    save's thread), with `fence()` called at both ends. A save that was in flight when this run's workdir was
    taken over neither creates its tmp directory nor lands among the new holder's steps: `fence` raises
    (WorkdirTakenOver) and the tmp directory it wrote into is removed."""

    class FencedTemporaryPath(atomicity.AtomicRenameTemporaryPath):
        async def create(self, *args, **kwargs):
            fence()
            return await super().create(*args, **kwargs)

        async def finalize(self, *args, **kwargs):
            try:
                fence()
            except Exception:
                shutil.rmtree(str(self.get()), ignore_errors=True)
                raise
            return await super().finalize(*args, **kwargs)

    return FencedTemporaryPath


class Checkpoints:
    def __init__(self, workdir: str, every_steps: int, keep: int = 3, keep_period: int = 0,
                 barrier_timeout_seconds: int = 300, fence: Callable[[], None] | None = None):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")  # Orbax needs absolute paths
        self._barrier_timeout = int(barrier_timeout_seconds)
        # Multi-process: every process writes its shards, process 0 commits; the barriers between them wait on
        # the coordination service at most barrier_timeout_seconds (a dead peer then fails the save).
        self._options = ocp.CheckpointManagerOptions(
            save_interval_steps=every_steps, max_to_keep=keep, keep_period=keep_period or None,
            enable_async_checkpointing=True, cleanup_tmp_directories=True, create=True,
            async_options=ocp.AsyncOptions(timeout_secs=int(barrier_timeout_seconds)),
            temporary_path_class=fenced_temporary_path(fence) if fence is not None else None)
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

    def evaluation_polls(self, step: int):
        """A poll for between the batches of an evaluation at `step`: True once a SIGTERM's sync point is reached.

        JAX's sync point is the call counter of the newest poll when the notice arrives, plus one (XLA's
        preemption_sync_manager.cc, ComputeSyncCallCounter), so each batch polls a counter one higher than the
        last (step + 1, step + 2, ...): the batch after the notice reaches it, the same batch on every process.
        `resume_polls` puts the training loop's counter back."""
        counter = [step]

        def poll() -> bool:
            counter[0] += 1
            return self.manager.reached_preemption(counter[0])

        return poll

    def resume_polls(self, step: int) -> None:
        """After an evaluation: the next training poll (step + 1) reaches JAX again."""
        self.manager.rewind_polls(step)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self.manager.all_steps())

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict, dict]:
        r = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore(),
            meta=ocp.args.JsonRestore()))
        return r["state"], r["data"], r["meta"]

    def restore_newest_good(self, abstract_state: Any, is_primary: bool = True) -> tuple[int, Any, dict, dict] | None:
        """The newest step that restores, as (step, state, data state, meta); None when there is no step.

        A step that fails (a truncated or deleted file, a TensorStore or Orbax error) gets one warning that
        names it and the cause, and the step before it is tried. Once one restores, the newer ones that failed
        are set aside (`set_aside_step`), so that the run saves their step numbers again. CheckpointError, and
        nothing moved, when every step fails."""
        failures = []
        for step in reversed(self.all_steps()):
            try:
                restored = (step, *self.restore(step, abstract_state))
            except Exception as e:  # Orbax and TensorStore raise many types; each becomes one line
                cause = one_line(e, 300)
                failures.append((step, cause))
                print(f"warning: checkpoint step {step} in {self.directory} cannot be restored ({cause}); trying "
                      "the step before it", flush=True)
                continue
            if failures:  # every process has read (or failed on) the bad steps before process 0 moves them
                runtime.all_processes_reach(f"restored_{step}", self._barrier_timeout)
            for bad, _ in failures:
                if is_primary:
                    print(f"warning: checkpoint step {bad} is set aside in {self.set_aside_step(bad)} (kept for "
                          f"inspection); step {bad} will be saved again", flush=True)
            self.manager.reload()  # Orbax caches the step list; reload() reads the directory again
            return restored
        if failures:
            raise CheckpointError(f"no checkpoint in {self.directory} can be restored: "
                                  + "; ".join(f"step {bad}: {cause}" for bad, cause in failures)
                                  + ". Nothing was changed: to train from scratch, pass --allow_fresh_start (the "
                                  "directory is kept under another name) or use another --workdir")
        return None

    def set_aside_step(self, step: int) -> str:
        """Moves one step's directory to WORKDIR/checkpoints_set_aside/step_N-TIME (kept, never counted by
        retention); returns where."""
        root = os.path.join(os.path.dirname(self.directory), SET_ASIDE)
        os.makedirs(root, exist_ok=True)
        aside = os.path.join(root, f"step_{step}-{time.strftime('%Y%m%d-%H%M%S')}")
        os.rename(os.path.join(self.directory, str(step)), aside)
        return aside

    def verify(self, step: int, abstract_state: Any, data_state: dict) -> None:
        """Reads back what a restore of `step` reads first, without the array values: the state's tree metadata
        (each array's shape and dtype against `abstract_state`), the OCDBT index (every array listed), the data
        position and the metadata. CheckpointUnverified with the first problem found."""
        import tensorstore as ts

        path = os.path.join(self.directory, str(step))
        try:
            absl_log, level = logging.getLogger("absl"), logging.getLogger("absl").level
            absl_log.setLevel(logging.ERROR)  # a warning that the item holds no step metadata: it never does
            try:
                with ocp.StandardCheckpointer() as reader:
                    tree = reader.metadata(os.path.join(path, "state")).item_metadata
            finally:
                absl_log.setLevel(level)
            saved = {m.name: m for m in jax.tree_util.tree_leaves(tree)}
            expected = {jax.tree_util.keystr(k, simple=True, separator="."): v
                        for k, v in jax.tree_util.tree_leaves_with_path(abstract_state)}
            if sorted(saved) != sorted(expected):
                raise ValueError(f"{len(saved)} arrays in the metadata, the state has {len(expected)}")
            for key, want in expected.items():
                if tuple(saved[key].shape) != tuple(want.shape) or saved[key].dtype != want.dtype:
                    raise ValueError(f"array {key}: {saved[key].shape} {saved[key].dtype}, expected {want.shape} "
                                     f"{want.dtype}")
            store = ts.KvStore.open({"driver": "ocdbt", "base": f"file://{path}/state/"}).result()
            listed = {k.decode().rsplit("/", 1)[0] for k in store.list().result()}
            if set(expected) - listed:
                raise ValueError(f"arrays missing from the OCDBT index: {sorted(set(expected) - listed)[:3]}")
            with open(os.path.join(path, "data", "metadata")) as f:
                if json.load(f) != data_state:
                    raise ValueError("the data position read back differs from the one saved")
            with open(os.path.join(path, "meta", "metadata")) as f:
                json.load(f)
        except Exception as e:  # Orbax, TensorStore and the filesystem raise many types: one line
            raise CheckpointUnverified(
                f"the final checkpoint, step {step} in {self.directory}, does not read back ({one_line(e, 300)}). "
                "Rerun the same command: it resumes from the newest step that restores (one that does not is set "
                f"aside) and saves step {step} again if needed") from e

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
        raise BadInput(f"init_from={directory!r}: no Orbax params at {path} "
                       "(create it with `python -m model.seed_import convert ... --out DIR`)")
    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(path, abstract_params)
