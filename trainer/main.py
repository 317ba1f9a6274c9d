"""python -m trainer.main --config configs/NAME.py --workdir DIR [--mode train|eval] [--step N] [--config.k=v ...]

Trains with periodic evaluation and resumes from WORKDIR/checkpoints; `--mode eval` evaluates the latest
checkpoint (or --step N) on the full validation split. Exit codes: 0 done, 1 bad input (one message that
names the thing and the fix, e.g. a broken config rule or no checkpoint that restores), 3 a non-finite step
with nonfinite_updates=stop (not applied; nothing after it saved).
"""

from __future__ import annotations

import json
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from cli.config_flags import check_config_overrides
from data.records.codec import DataError
from trainer import evaluate, summary, train
from trainer.checkpoint import CheckpointError
from trainer.run import TrainingDiverged

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Work directory: checkpoints, metrics, TensorBoard, pictures.")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "eval"], "Train (and evaluate), or only evaluate.")
_STEP = flags.DEFINE_integer("step", None, "--mode eval: the checkpoint step (default: the latest).")


def main(argv) -> int:
    del argv
    logging.set_verbosity(logging.WARNING)
    config = _CONFIG.value
    try:
        if _MODE.value == "eval":
            print(json.dumps(evaluate.evaluate_checkpoint(config, _WORKDIR.value, _STEP.value), indent=1))
        else:
            print(summary.report(train.train_and_evaluate(config, _WORKDIR.value), _WORKDIR.value), flush=True)
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    except (DataError, ValueError, FileNotFoundError, OSError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    check_config_overrides(sys.argv)
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)
