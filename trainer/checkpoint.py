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
    """Orbax's manager, with preemption polls counted rather than stepped.

    JAX's sync manager agrees, on a SIGTERM, to stop at the newest poll's counter + 1, over all processes, and
    a poll answers True only at exactly that counter (XLA's preemption_sync_manager.cc: ComputeSyncCallCounter,
    ReachedSyncPoint). Orbax polls with the step. A notice that comes before the first poll of a resumed run
    (while it restores or compiles) is agreed at counter 1, which a loop counting from the restored step never
    polls: the run would train on until SIGKILL. So each new step polled here is one more poll: counters 1, 2,
    ... in the same order on every process. Orbax's finalize thread also polls, with the step it has just
    written, which may be several steps old; polls older than the newest are answered False without reaching
    JAX, which would otherwise move the agreement to a counter the loop has passed."""

    _newest_poll = -1
    _polls = 0

    def reached_preemption(self, step: int) -> bool:
        if step < self._newest_poll:
            return False
        if step > self._newest_poll:
            self._polls += 1
            self._newest_poll = step
        return super().reached_preemption(self._polls)

    def rewind_polls(self, step: int) -> None:
        """Polls from `step` on count again (after an evaluation polled past it)."""
        self._newest_poll = step


def holder_temporary_path(directory: str, tag: str, fence: Callable[[], None] | None = None) -> type:
    """Orbax's atomic save (orbax/checkpoint/_src/path/atomicity.py: AtomicRenameTemporaryPath), its tmp directories
    named for this run: STEP.orbax-checkpoint-tmp-TAG, TAG from the workdir lease's token, the same on every
    process. Orbax's own name, STEP.orbax-checkpoint-tmp, is the same for every run, and its `create` removes such
    a directory it finds: a run that was taken over, with a save still in flight, would write into (and, dropping
    its save, remove) the new holder's save of the same step. Orbax reads any name holding the suffix as a tmp
    directory (its validate_atomic_rename_temporary_path, _get_final_directory). The same class names each item's
    directory inside the step's.

    `fence()` (process 0) is called when a step's directory is created and when it is finalized, both in the
    async save's thread: a save that was in flight when the workdir was taken over neither creates its directory
    nor lands among the new holder's steps. `fence` raises (WorkdirTakenOver) and the step's directory is removed,
    with whatever the save wrote into it."""

    class HolderTemporaryPath(atomicity.AtomicRenameTemporaryPath):
        @classmethod
        def from_final(cls, final_path, **kwargs):
            return cls(final_path.parent / f"{final_path.name}{atomicity.TMP_DIR_SUFFIX}-{tag}", final_path, **kwargs)

        def _fenced(self) -> bool:  # the step's own directory, not an item's inside it
            return fence is not None and os.path.abspath(str(self.get_final().parent)) == directory

        async def create(self, *args, **kwargs):
            if self._fenced():
                fence()
            return await super().create(*args, **kwargs)

        async def finalize(self, *args, **kwargs):
            if self._fenced():
                try:
                    fence()
                except Exception:
                    discard(str(self.get()))
                    raise
            return await super().finalize(*args, **kwargs)

    return HolderTemporaryPath


def discard(tmp: str, attempts: int = 20) -> bool:
    """Removes a dropped save's tmp directory; True once it is gone.

    Renamed first (rename(2) is atomic, on NFS too): a writer still in flight, such as Orbax's non-blocking
    step-metadata store (orbax/checkpoint/_src/metadata/checkpoint.py, which writes without creating
    parents), then finds no directory instead of landing in one that rmtree has just listed, and what cannot
    be removed yet (an NFS client's .nfsXXXX silly-rename of a file still open) is left under a dot name
    that no step listing or tmp cleanup reads. Then removed, retried while a late file keeps it non-empty."""
    parent, name = os.path.split(tmp.rstrip("/"))
    gone = os.path.join(parent, f".dropped-{name}-{os.getpid()}")
    try:
        os.rename(tmp, gone)
    except FileNotFoundError:
        return True
    except OSError:
        gone = tmp
    for _ in range(attempts):
        shutil.rmtree(gone, ignore_errors=True)
        if not os.path.lexists(gone):
            return True
        time.sleep(0.1)
    print(f"warning: the directory of a save dropped after this run lost its workdir could not be removed: {gone} "
          "(safe to delete)", file=sys.stderr, flush=True)
    return False


class Checkpoints:
    def __init__(self, workdir: str, every_steps: int, keep: int = 3, keep_period: int = 0,
                 barrier_timeout_seconds: int = 300, fence: Callable[[], None] | None = None, tag: str = ""):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")  # Orbax needs absolute paths
        self._barrier_timeout = int(barrier_timeout_seconds)
        # Multi-process: every process writes its shards, process 0 commits; the barriers between them wait on
        # the coordination service at most barrier_timeout_seconds (a dead peer then fails the save).
        self._options = ocp.CheckpointManagerOptions(
            save_interval_steps=every_steps, max_to_keep=keep, keep_period=keep_period or None,
            enable_async_checkpointing=True, cleanup_tmp_directories=True, create=True,
            async_options=ocp.AsyncOptions(timeout_secs=int(barrier_timeout_seconds)),
            temporary_path_class=holder_temporary_path(self.directory, tag, fence) if tag else None)
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

        JAX's sync point is the newest poll's counter when the notice arrives, plus one (_Manager), so each batch
        polls as a step one further (step + 1, step + 2, ...), which is one more poll: the batch after the notice
        reaches it, the same batch on every process. `resume_polls` lets the training loop's steps count again."""
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


# Converted weights (`python -m model.seed_import convert --out DIR`): DIR/params (Orbax) and DIR/model_config.json,
# the model block they were converted for plus their origin. Keys that choose how the same function is run, not
# what it is, may differ between the weights and the config that loads them.
CONVERTED_MODEL = "model_config.json"
EXECUTION_KEYS = ("model.dtype", "model.remat", "model.time_loop", "model.decoder.conv_transpose",
                  "model.recurrence.slice_size")


def _dotted(tree: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(tree, dict):
        return {prefix[:-1]: tree}
    out: dict[str, Any] = {}
    for k, v in tree.items():
        out.update(_dotted(v, f"{prefix}{k}."))
    return out


def converted_origin(directory: str, config: Any) -> dict:
    """The origin that DIR/model_config.json records ({} for none), after checking that its model is the one of
    `config`: BadInput listing every key that differs."""
    path = os.path.join(os.path.abspath(directory), CONVERTED_MODEL)
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        saved = json.load(f)
    ours = json.loads(json.dumps({"model": config.model.to_dict(), "num_slots": config.num_slots,
                                  "conditioning_key": config.conditioning_key}, default=list))
    a, b = _dotted({k: v for k, v in saved.items() if k != "origin"}), _dotted(ours)
    differ = [f"{k}: {a.get(k, '(absent)')} in the weights, {b.get(k, '(absent)')} in the config"
              for k in sorted(set(a) | set(b)) if k not in EXECUTION_KEYS and a.get(k) != b.get(k)]
    if differ:
        origin = saved.get("origin", {})
        raise BadInput(f"init_from={directory}: the weights were converted for another model than this config's "
                       f"({len(differ)} keys differ: {'; '.join(differ[:12])}{' ...' if len(differ) > 12 else ''}). "
                       f"Use the config they were converted for ({origin.get('config', 'see ' + path)}), or set "
                       "those keys on the command line")
    return saved.get("origin", {})


def restore_params(directory: str, abstract_params: Any, config: Any = None) -> Any:
    """Params written by `python -m model.seed_import convert` (DIR/params), onto the current shardings; with
    `config`, its model is checked against DIR/model_config.json first."""
    path = os.path.join(os.path.abspath(directory), "params")
    if not os.path.isdir(path):
        raise BadInput(f"init_from={directory!r}: no Orbax params at {path} "
                       "(create it with `python -m model.seed_import convert ... --out DIR`)")
    if config is not None:
        converted_origin(directory, config)
    try:
        with ocp.StandardCheckpointer() as ckptr:
            return ckptr.restore(path, abstract_params)
    except (ValueError, KeyError, TypeError) as e:  # Orbax's tree or shape mismatch: its text is not the fix
        raise BadInput(f"init_from={directory}: its parameters do not have the tree of this config's model "
                       f"({type(e).__name__}); convert the original's weights again with this config "
                       "(`python -m model.seed_import convert --config ...`)") from None
