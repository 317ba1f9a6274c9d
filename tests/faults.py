"""`python tests/faults.py [FAULTS] -- TRAINER ARGS`: `python -m trainer.main` with a fault or a pause put in
from outside, for the tests of tests/test_workdir_faults.py. The trainer's own code is unchanged; only the
functions named below are wrapped.

--pause_at_step K --until FILE   after logging step K, write FILE.paused and wait until FILE exists (a live
                                 holder of the workdir that the test controls: it is killed, or its lease is
                                 taken, while it waits)
--eio_on_save_after_step K       every rename that would finalize a checkpoint step > K (Orbax's commit, in its
                                 background thread) fails with EIO, as an NFS server in trouble returns it
                                 (rename(2) lists EIO: "a low-level I/O error occurred"; Orbax finalizes a step
                                 by renaming its tmp directory)
--pause_in_save_of_step K --until FILE
                                 the async save of step K, written but not yet committed (Orbax's
                                 on_commit_callback, in its background thread), writes FILE.paused and waits until
                                 FILE exists: a holder frozen in the middle of a save
--slow_eval_seconds S            every evaluation batch takes S seconds longer (a long evaluation)
--forbid_tensorflow              an import of tensorflow (or one of its modules) fails and is written to stderr as
                                 "FORBIDDEN IMPORT tensorflow..." (the training path must not import it); a probe
                                 (importlib.util.find_spec) finds nothing
--term_before_init               a SIGTERM to itself just before jax.distributed starts (a scheduler's notice that
                                 comes while a run imports and starts)
--term_after_restore             a SIGTERM to itself once a checkpoint is restored, before the first step (a
                                 scheduler's notice that comes while a resumed run starts)
--bug_at_step K                  logging step K raises a ValueError, as a bug in our code would
--slow_input_process I --slow_input_seconds S
                                 on the process started with --process_id=I only, every training batch comes S
                                 seconds late (a host whose input pipeline is short of CPUs)

Under `python -m launch.local --module tests.faults -- FAULTS -- TRAINER ARGS` every process runs it, with its
--process_id among the trainer arguments.
"""

import argparse
import errno
import os
import runpy
import signal
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pause_at(step: int, until: str) -> None:
    from trainer import train

    original = train.log_train_metrics

    def log_then_pause(run, logged_step, *args, **kwargs):
        original(run, logged_step, *args, **kwargs)
        if logged_step == step:
            open(until + ".paused", "w").close()
            while not os.path.exists(until):
                time.sleep(0.05)

    train.log_train_metrics = log_then_pause


def bug_at(step: int) -> None:
    from trainer import train

    original = train.log_train_metrics

    def log_then_fail(run, logged_step, *args, **kwargs):
        original(run, logged_step, *args, **kwargs)
        if logged_step == step:
            raise ValueError(f"planted bug at step {step}")

    train.log_train_metrics = log_then_fail


def eio_on_save_after(step: int) -> None:
    def failing(original):
        def rename(src, dst, *args, **kwargs):
            name = os.path.basename(os.fspath(dst))
            if name.isdigit() and int(name) > step and "checkpoints" in os.fspath(dst):
                raise OSError(errno.EIO, os.strerror(errno.EIO), os.fspath(dst))
            return original(src, dst, *args, **kwargs)
        return rename

    os.rename, os.replace = failing(os.rename), failing(os.replace)


def pause_in_save_of(step: int, until: str) -> None:
    from orbax.checkpoint._src.path import atomicity

    original = atomicity.on_commit_callback

    async def paused(tmp_dir, *args, **kwargs):
        if tmp_dir.get_final().name == str(step):
            open(until + ".paused", "w").close()
            while not os.path.exists(until):
                time.sleep(0.05)
        return await original(tmp_dir, *args, **kwargs)

    atomicity.on_commit_callback = paused


def forbid_tensorflow() -> None:
    import importlib.abc

    def importing() -> bool:  # an `import`, not a probe such as etils' importlib.util.find_spec("tensorflow")
        frame = sys._getframe(2)
        while frame is not None:
            if frame.f_code.co_name == "_find_and_load_unlocked":
                return True
            frame = frame.f_back
        return False

    class Forbid(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if (name == "tensorflow" or name.startswith("tensorflow.")) and importing():
                print(f"FORBIDDEN IMPORT {name}", file=sys.stderr, flush=True)
                raise ImportError(f"{name} is forbidden in this run (tests/faults.py --forbid_tensorflow)")
            return None  # probes see no TensorFlow, as in this project's environment

    sys.meta_path.insert(0, Forbid())


def term_before_init() -> None:
    from trainer import runtime

    original = runtime.initialize_distributed

    def term_then_initialize(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    runtime.initialize_distributed = term_then_initialize


def term_after_restore() -> None:
    from trainer import checkpoint

    original = checkpoint.Checkpoints.restore_newest_good

    def restore_then_term(self, *args, **kwargs):
        restored = original(self, *args, **kwargs)
        if restored is not None:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)  # JAX's notifier agrees on its sync point in its own thread
        return restored

    checkpoint.Checkpoints.restore_newest_good = restore_then_term


def slow_eval(seconds: float) -> None:
    from trainer import evaluate

    original = evaluate.datasets.eval_batches

    def slow(*args, **kwargs):
        for batch in original(*args, **kwargs):
            time.sleep(seconds)
            yield batch

    evaluate.datasets.eval_batches = slow


def slow_input(seconds: float) -> None:
    from data.pipeline import datasets

    original = datasets.train_iterator

    class Late:
        def __init__(self, it):
            self._it = it

        def __iter__(self):
            return self

        def __next__(self):
            time.sleep(seconds)
            return next(self._it)

        def __getattr__(self, name):  # get_state, set_state, close
            return getattr(self._it, name)

    datasets.train_iterator = lambda *args, **kwargs: Late(original(*args, **kwargs))


def main() -> None:
    split = sys.argv.index("--")
    p = argparse.ArgumentParser()
    p.add_argument("--pause_at_step", type=int)
    p.add_argument("--until")
    p.add_argument("--eio_on_save_after_step", type=int)
    p.add_argument("--pause_in_save_of_step", type=int)
    p.add_argument("--slow_eval_seconds", type=float)
    p.add_argument("--term_after_restore", action="store_true")
    p.add_argument("--term_before_init", action="store_true")
    p.add_argument("--forbid_tensorflow", action="store_true")
    p.add_argument("--bug_at_step", type=int)
    p.add_argument("--slow_input_process", type=int)
    p.add_argument("--slow_input_seconds", type=float, default=0.0)
    a = p.parse_args(sys.argv[1:split])
    sys.path.insert(0, REPO)
    if a.pause_at_step is not None:
        pause_at(a.pause_at_step, a.until)
    if a.pause_in_save_of_step is not None:
        pause_in_save_of(a.pause_in_save_of_step, a.until)
    if a.eio_on_save_after_step is not None:
        eio_on_save_after(a.eio_on_save_after_step)
    if a.bug_at_step is not None:
        bug_at(a.bug_at_step)
    if a.term_after_restore:
        term_after_restore()
    if a.term_before_init:
        term_before_init()
    if a.forbid_tensorflow:
        forbid_tensorflow()
    if a.slow_eval_seconds:
        slow_eval(a.slow_eval_seconds)
    if a.slow_input_process is not None and f"--process_id={a.slow_input_process}" in sys.argv[split + 1:]:
        slow_input(a.slow_input_seconds)
    sys.argv = ["trainer.main", *sys.argv[split + 1:]]
    runpy.run_module("trainer.main", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
