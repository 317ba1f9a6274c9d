"""python -m trainer.main --config configs/NAME.py --workdir DIR [--mode train|eval] [--step N]
                         [--allow_fresh_start] [--coordinator_address H:P --num_processes N --process_id I]
                         [--config.k=v ...]

Trains with periodic evaluation and resumes from WORKDIR/checkpoints; `--mode eval` evaluates the latest
checkpoint (or --step N) on the full validation split. Every attempt appends to WORKDIR/events.jsonl
(`python -m trainer.goodput WORKDIR` reports on it).

Exit codes (README, "Preemption and resumption"):
  0   done;
  1   bad input: one message that names the thing and the fix (a broken config rule, no checkpoint that
      restores, ...). Do not restart;
  3   a non-finite step with nonfinite_updates=stop (not applied; nothing after it saved). Do not restart:
      the same state reproduces it;
  75  SIGTERM or SIGUSR1: the step all processes agreed on is saved. Restart the same command to resume;
  76  a hang: no step completed within config.step_timeout_seconds, a peer process died, or a barrier timed
      out. Nothing was saved at that moment: restart the same command to resume from the last checkpoint.

Multi-process: JAX detects SLURM, Open MPI and Kubernetes itself; the three layout flags (or
JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID) override it. `python -m launch.local` rehearses
a cluster run on one machine.
"""

from __future__ import annotations

import json
import os
import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from cli.config_flags import check_config_overrides
from configs.validate import ConfigError, validate
from data.records.codec import DataError
from trainer import evaluate, runtime, summary, train
from trainer.checkpoint import CheckpointError
from trainer.events import EventLog
from trainer.run import Preempted, TrainingDiverged

EXIT_DONE, EXIT_BAD_INPUT, EXIT_DIVERGED, EXIT_RESUMABLE = 0, 1, 3, 75  # 75: sysexits' EX_TEMPFAIL

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


def run(config, events: EventLog) -> int:
    try:
        if _MODE.value == "eval":
            result = evaluate.evaluate_checkpoint(config, _WORKDIR.value, _STEP.value)
            if jax.process_index() == 0:
                print(json.dumps(result, indent=1))
        else:
            result = train.train_and_evaluate(config, _WORKDIR.value, events, _ALLOW_FRESH_START.value)
            if jax.process_index() == 0:
                print(summary.report(result, _WORKDIR.value), flush=True)
    except Preempted as e:
        print(f"{e} (exit {EXIT_RESUMABLE})", flush=True)
        return EXIT_RESUMABLE
    except jax.errors.JaxRuntimeError as e:
        if jax.process_count() == 1 or "RESOURCE_EXHAUSTED" in str(e):
            raise
        # A collective that fails (Gloo: "connection reset by peer"; NCCL: a remote error) means a peer died.
        runtime.exit_hung(f"a collective failed, most likely because another process died ({str(e)[:300]})")
    except runtime.BarrierTimeout as e:
        runtime.exit_hung(str(e))
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_DIVERGED
    except (DataError, ValueError, FileNotFoundError, OSError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_DONE


def main(argv) -> int:
    del argv
    logging.set_verbosity(logging.WARNING)
    events = EventLog()  # from process start: imports and start-up count in the goodput report
    config = _CONFIG.value
    try:
        validate(config, num_devices=None)  # the rules that need no devices: before any process waits on another
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    # Before any JAX computation: it also arms the SIGTERM notifier.
    runtime.initialize_distributed(runtime.Layout(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value),
                                   config.heartbeat_timeout_seconds)
    runtime.forward_sigusr1_to_sigterm()
    peers = runtime.start_peer_monitor(config.heartbeat_timeout_seconds)  # multi-process: a dead peer -> exit 76
    if os.path.isdir(_WORKDIR.value or ""):  # a restart: log it from here (a new workdir is checked first)
        events.attach(os.path.abspath(_WORKDIR.value), _MODE.value == "train" and jax.process_index() == 0)
    code = run(config, events)
    if peers:
        peers.stop()
    runtime.shutdown_distributed()
    events.phase("shutdown")  # pending async saves were awaited when the run closed
    events.note("exit", code=code)
    events.close()
    return code


if __name__ == "__main__":
    check_config_overrides(sys.argv)
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)
