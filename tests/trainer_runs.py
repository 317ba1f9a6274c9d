"""Helpers for the tests that run `python -m trainer.main` on the tiny config and read what it left behind."""

import glob
import json
import os
import subprocess
import sys

import orbax.checkpoint as ocp
from conftest import COMPILATION_CACHE, REPO, without_child_flags

from launch.local import child_env

CONFIG = os.path.join(REPO, "configs", "tiny.py")


def train(data_dir, workdir, *overrides, devices=1, mode="train", shared_cache=True, default_xla=False):
    """`python -m trainer.main` on the tiny config; with `shared_cache`, the session's compilation cache instead
    of the default WORKDIR/compilation_cache; with `default_xla`, compiled at XLA's default optimisation level
    as training runs are, instead of the tests' CHILD_XLA_FLAGS."""
    env = child_env(devices)
    if default_xla:
        env["XLA_FLAGS"] = without_child_flags(env["XLA_FLAGS"])
    cache = [f"--config.compilation_cache_dir={COMPILATION_CACHE}"] if shared_cache else []
    return subprocess.run([sys.executable, "-m", "trainer.main", "--config", CONFIG, "--workdir", str(workdir),
                           "--mode", mode, f"--config.data.data_dir={data_dir}", *cache, *overrides],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


def losses(workdir):
    rows = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


def final_params(workdir, step, on_this_device=False):
    """The params and data position of a checkpoint; `on_this_device` restores a checkpoint that other processes
    or devices wrote onto this process's first device."""
    handlers = dict(state=ocp.StandardCheckpointHandler(), data=ocp.JsonCheckpointHandler(),
                    meta=ocp.JsonCheckpointHandler())
    mngr = ocp.CheckpointManager(os.path.join(str(workdir), "checkpoints"), item_names=("state", "data", "meta"),
                                 item_handlers=handlers)
    target = None
    if on_this_device:
        import jax

        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        meta = mngr.item_metadata(step)["state"]
        target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), meta)
    restored = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                          data=ocp.args.JsonRestore()))
    return restored["state"]["params"], restored["data"]


def state_data_files(step_dir):
    """The TensorStore data files of a step's train state. All of them: OCDBT may leave a file that no longer
    holds anything the restore reads, so corrupting only the largest one does not always break the step."""
    return glob.glob(str(step_dir / "state" / "ocdbt.process_0" / "d" / "*"))
