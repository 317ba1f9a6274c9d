"""python -m trainer.main --config configs/NAME.py --workdir DIR [--mode train|eval] [--step N]
                         [--allow_fresh_start] [--coordinator_address H:P --num_processes N --process_id I]
                         [--config.k=v ...]

Trains with periodic evaluation and resumes from WORKDIR/checkpoints; `--mode eval` evaluates the latest
checkpoint (or --step N) on the full validation split. Every attempt appends to WORKDIR/events.jsonl
(`python -m trainer.goodput WORKDIR` reports on it).

Exit codes: trainer/exits.py (`python -m trainer.exits table`; docs/training.md, "Exit codes"): 0 done, 1 bad input,
3 diverged, 70 internal error, 74 filesystem error (resumable), 75 preempted (resumable), 76 hung (resumable),
77 workdir taken over by another run, 78 gave up after repeated filesystem errors without progress.

Multi-process: JAX detects SLURM, Open MPI and Kubernetes itself; the three layout flags (or
JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID) override it. `python -m launch.local` rehearses
a cluster run on one machine.
"""

from __future__ import annotations

from trainer import early_signals

if __name__ == "__main__":  # before the heavy imports below: a SIGTERM while they run is kept, not fatal
    early_signals.hold()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402

import jax  # noqa: E402
from absl import app, flags, logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from cli.config_flags import check_config_overrides  # noqa: E402
from configs.validate import ConfigError, expand_path, expand_paths, validate  # noqa: E402
from trainer import checkpoint, evaluate, exits, goodput, lease, runtime, summary, train  # noqa: E402
from trainer.events import EventLog  # noqa: E402
from trainer.peers import start_peer_monitor  # noqa: E402
from trainer.run import Preempted, TrainingDiverged  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Work directory: checkpoints, metrics, TensorBoard, pictures.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"], "Train (and evaluate), or only evaluate.")
_STEP = flags.DEFINE_integer("step", None, "--mode eval: the checkpoint step (default: the latest).")
_ALLOW_FRESH_START = flags.DEFINE_bool(
    "allow_fresh_start", False, "When checkpoints exist but none restores, move them aside and train from "
    "scratch (default: stop with exit 1 and change nothing).")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "Multi-process: host:port of process 0's "
                                   "coordinator (default: JAX_COORDINATOR_ADDRESS, or the cluster's).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Multi-process: the number of processes.", lower_bound=1)
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "Multi-process: this process's index.", lower_bound=0)
_EXIT_RECORD_DIR = flags.DEFINE_string(
    "exit_record_dir", None, "Each process writes its exit code to DIR/process-<index>.json (a scheduler script "
    "decides on every process's code, not on srun's highest one: launch/requeue.py).")


def workdir_path() -> str:
    """--workdir with ~ and $VARS expanded (a shell leaves `--workdir=~/x` alone)."""
    return expand_path(_WORKDIR.value)


def run(config, events: EventLog) -> int:
    try:
        if _MODE.value == "eval":
            result = evaluate.evaluate_checkpoint(config, workdir_path(), _STEP.value)
            if jax.process_index() == 0:
                print(json.dumps(result, indent=1))
        else:
            result = train.train_and_evaluate(config, workdir_path(), events, _ALLOW_FRESH_START.value)
            if jax.process_index() == 0:
                print(summary.report(result, workdir_path()), flush=True)
    except Preempted as e:
        print(f"{e} (exit {exits.PREEMPTED})", flush=True)
        return exits.PREEMPTED
    except evaluate.EvaluationCut as e:  # --mode eval: nothing to save
        print(f"{e}; nothing was saved: rerun the same command to evaluate again (exit {exits.PREEMPTED})", flush=True)
        return exits.PREEMPTED
    except jax.errors.JaxRuntimeError as e:
        if jax.process_count() == 1 or "RESOURCE_EXHAUSTED" in str(e):
            return failure(e, config, events)
        # A collective that fails (Gloo: "connection reset by peer"; NCCL: a remote error) means a peer died.
        exits.exit_hung(f"a collective failed, most likely because another process died ({str(e)[:300]})")
    except runtime.BarrierTimeout as e:
        exits.exit_hung(str(e))
    except TrainingDiverged as e:
        return say_error(exits.DIVERGED, str(e))
    except Exception as e:  # mapped by what it means (trainer/exits.py), each with one message
        return failure(e, config, events)
    return exits.DONE


def failure(e: Exception, config, events: EventLog) -> int:
    """The exit code and the one message of an error that ended the run; a filesystem error that keeps coming
    back without progress turns into GAVE_UP after config.max_attempts_without_progress attempts."""
    workdir = os.path.abspath(workdir_path())
    taken = lease.taken_over() if not isinstance(e, exits.WorkdirTakenOver) else None
    if taken is not None:  # the workdir is another run's now: a restart of this one must not write there again
        return say_error(exits.FENCED, f"this run lost the lease of workdir {workdir} ({taken}) and then failed "
                         f"({exits.one_line(e)}); the other run owns the workdir, so this one is not restarted")
    outcome = exits.classify(e, events.training_started, checkpoint.describe_newest(workdir))
    if outcome.code == exits.FILESYSTEM and _MODE.value == "train":
        outcome = give_up_if_stalled(outcome, config, events, workdir)
    if outcome.traceback:
        traceback.print_exception(e)
    return say_error(outcome.code, outcome.message)


def say_error(code: int, message: str) -> int:
    """The one `error:` line of a run that failed, ending with its exit code and the code's name."""
    print(f"error: {message} (exit {code}: {exits.name(code)})", file=sys.stderr, flush=True)
    return code


def give_up_if_stalled(outcome: exits.Outcome, config, events: EventLog, workdir: str) -> exits.Outcome:
    newest, resumed = checkpoint.newest_complete_step(workdir), events.resumed_from
    if newest is not None and resumed is not None and newest > resumed:
        return outcome  # this attempt saved past the step it resumed from: progress
    try:
        earlier = goodput.stalled_attempts(goodput.read_events(workdir), events.attempt, resumed)
    except (OSError, ValueError):
        earlier = 0  # no readable event log: nothing to count
    limit = config.max_attempts_without_progress
    if earlier + 1 < limit:
        return outcome
    since = resumed if resumed is not None else newest
    return exits.Outcome(exits.GAVE_UP, f"giving up: {earlier + 1} attempts in a row have ended with a filesystem "
                         f"error without saving past step {since} (--config.max_attempts_without_progress={limit}), "
                         f"so another restart would most likely fail the same way. Fix the filesystem, then rerun the "
                         f"same command. The last error: {outcome.message}")


def record_and_return(code: int) -> int:
    """An exit before jax.distributed starts: this process's index from the layout flags or the environment."""
    index = _PROCESS_ID.value
    for key in ("JAX_PROCESS_ID", "SLURM_PROCID"):
        index = index if index is not None else (int(os.environ[key]) if os.environ.get(key) else None)
    exits.record(code, index or 0)
    return code


def main(argv) -> int:
    del argv
    logging.set_verbosity(logging.WARNING)
    events = EventLog()  # from process start: imports and start-up count in the goodput report
    config = _CONFIG.value
    exits.record_to(_EXIT_RECORD_DIR.value)
    expand_paths(config)
    try:
        validate(config, num_devices=None)  # the rules that need no devices: before any process waits on another
    except ConfigError as e:
        return record_and_return(say_error(exits.BAD_INPUT, str(e)))
    # Before any JAX computation: it also arms the SIGTERM notifier.
    runtime.initialize_distributed(runtime.Layout(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value),
                                   config.heartbeat_timeout_seconds)
    if early_signals.deliver():
        logging.warning("a SIGTERM came while the run started: it stops at its first step and saves")
    runtime.forward_sigusr1_to_sigterm()
    peers = start_peer_monitor(config.heartbeat_timeout_seconds)  # multi-process: a dead peer -> exit 76
    code = exits.INTERNAL_ERROR
    try:
        if os.path.isdir(workdir_path()):  # a restart: log it from here (a new workdir is checked first)
            events.attach(os.path.abspath(workdir_path()), _MODE.value == "train" and jax.process_index() == 0)
        code = run(config, events)
    finally:  # on every path: the peer monitor, the coordination service, the event log
        if peers:
            peers.stop()
        runtime.shutdown_distributed()
        events.phase("shutdown")  # pending async saves were awaited when the run closed
        events.note("exit", code=code)
        events.close()
        exits.record(code, jax.process_index())
    return code


if __name__ == "__main__":
    check_config_overrides(sys.argv)
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)
