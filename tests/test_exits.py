"""Exit codes by what an error means (trainer/exits.py), the final checkpoint's read-back, the training stream's
fingerprint and the count of attempts without progress."""

import errno
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
from conftest import REPO

from configs import tiny
from configs.validate import ConfigError
from data.pipeline import datasets
from data.records.codec import DataError
from trainer import exits, goodput
from trainer.checkpoint import CheckpointError, Checkpoints, CheckpointUnverified

NEWEST = "The newest complete checkpoint is step 4 in /w/checkpoints"
TENSORSTORE_ENOSPC = ValueError(  # as Orbax raised it from a full tmpfs
    'RESOURCE_EXHAUSTED: Error writing "w/0" in OCDBT database at local file "/w/checkpoints/6.orbax-checkpoint-tmp/'
    'state/": Failed to write 52239 bytes to file 12: No space left on device [os_error_code=\'28\']')


@pytest.mark.parametrize("exc, started, code", [
    (ConfigError(["batch_size=3: must be a multiple of 4"]), False, exits.BAD_INPUT),
    (DataError("/d/train.array_record-00000", 3, "truncated record"), True, exits.BAD_INPUT),
    (CheckpointError("no checkpoint in /w can be restored"), False, exits.BAD_INPUT),
    (exits.BadInput("workdir /w is not writable"), False, exits.BAD_INPUT),
    (OSError(errno.ENOENT, "No such file or directory", "/w/x"), False, exits.BAD_INPUT),
    (OSError(errno.ENOENT, "No such file or directory", "/w/x"), True, exits.FILESYSTEM),
    (OSError(errno.EIO, "Input/output error", "/w/x"), False, exits.FILESYSTEM),
    (OSError(errno.ESTALE, "Stale file handle", "/w/x"), True, exits.FILESYSTEM),
    (TENSORSTORE_ENOSPC, True, exits.FILESYSTEM),
    (CheckpointUnverified("the final checkpoint does not read back"), True, exits.FILESYSTEM),
    (exits.WorkdirTakenOver("lost the lease"), True, exits.FENCED),
    (ValueError("operands could not be broadcast together"), True, exits.INTERNAL_ERROR),
    (KeyError("params"), False, exits.INTERNAL_ERROR),
])
def test_errors_map_by_what_they_mean(exc, started, code):
    outcome = exits.classify(exc, started, NEWEST)
    assert outcome.code == code, outcome
    assert outcome.traceback == (code == exits.INTERNAL_ERROR)


def test_a_full_disk_names_the_path_and_the_newest_checkpoint():
    outcome = exits.classify(TENSORSTORE_ENOSPC, True, NEWEST)
    assert outcome.message.startswith("the disk is full or over its quota on /w/checkpoints/6.orbax-checkpoint-tmp")
    assert NEWEST in outcome.message and "Free space" in outcome.message
    chained = RuntimeError("commit failed")
    chained.__cause__ = OSError(errno.EDQUOT, "Disk quota exceeded", "/w/metrics.jsonl")
    assert "disk is full or over its quota on /w/metrics.jsonl" in exits.classify(chained, True, NEWEST).message


def test_the_codes_are_distinct_and_the_restart_rule_is_one_module():
    assert len({c.code for c in exits.CODES}) == len(exits.CODES)
    assert set(exits.RESTART) == {exits.FILESYSTEM, exits.PREEMPTED, exits.HUNG}
    assert min(exits.FENCED, exits.GAVE_UP) > exits.HUNG  # srun reports the highest code of its tasks
    ask = [sys.executable, "-m", "trainer.exits", "restart"]
    assert [subprocess.run([*ask, str(c)], cwd=REPO).returncode for c in (74, 75, 76, 137, 1, 3, 70, 77, 78, 0)] == [
        0, 0, 0, 0, 1, 1, 1, 1, 1, 1]
    table = subprocess.run([sys.executable, "-m", "trainer.exits", "table"], cwd=REPO, capture_output=True, text=True)
    docs = open(os.path.join(REPO, "docs", "training.md")).read()
    assert table.stdout.strip() in docs  # the documented table is the module's


def test_the_final_checkpoint_is_read_back(tmp_path):
    state = {"params": {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.zeros(3)}, "step": jnp.int32(4)}
    abstract = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    ckpts = Checkpoints(str(tmp_path), every_steps=1)
    ckpts.save(4, state, {"global_next_index": 16}, {})
    ckpts.wait_until_finished()
    ckpts.verify(4, abstract, {"global_next_index": 16})
    with pytest.raises(CheckpointUnverified, match="data position"):
        ckpts.verify(4, abstract, {"global_next_index": 20})
    other = {**abstract, "params": {**abstract["params"], "b": jax.ShapeDtypeStruct((4,), jnp.float32)}}
    with pytest.raises(CheckpointUnverified, match="array params.b"):
        ckpts.verify(4, other, {"global_next_index": 16})
    os.remove(tmp_path / "checkpoints" / "4" / "state" / "manifest.ocdbt")
    with pytest.raises(CheckpointUnverified, match="step 4 .* does not read back"):
        ckpts.verify(4, abstract, {"global_next_index": 16})
    ckpts.close()


def test_the_stream_fingerprint_ignores_what_does_not_change_the_training_stream(tiny_synthetic):
    config = tiny.get_config()
    config.data.data_dir = tiny_synthetic
    source = datasets.open_split(tiny_synthetic, "train", config.max_instances)

    def fingerprint(**changes):
        c = config.copy_and_resolve_references()
        c.data.update(changes)
        return datasets.data_fingerprint(source, datasets.spec_from_config(c), c.seed)

    base = fingerprint()
    assert datasets.stream_changes(base, fingerprint(eval_frames=6, fused_train_ops=False, worker_count=2,
                                                     prefetch_buffer_size=1)) == {}
    frames = config.data.train_frames
    changed = datasets.stream_changes(base, fingerprint(train_frames=frames + 1))
    assert changed == {"data.train_frames": (frames, frames + 1)}
    assert set(datasets.stream_changes(base, fingerprint(resolution=32))) == {"data.resolution"}


def test_stalled_attempts_count_filesystem_failures_from_the_same_step():
    def attempt(name, resumed, code):
        rows = [{"t": 0, "event": "start", "attempt": name}]
        if resumed is not None:
            rows.append({"t": 1, "event": "restore", "attempt": name, "seconds": 1, "step": resumed})
        return rows + [{"t": 2, "event": "exit", "attempt": name, "code": code}]

    rows = attempt("a", 0, 74) + attempt("b", 2, 75) + attempt("c", 4, 74) + attempt("d", None, 74) + attempt(
        "e", 4, 74) + [{"t": 3, "event": "start", "attempt": "now"}]
    assert goodput.stalled_attempts(rows, "now", 4) == 3  # e, d (before restoring), c; b was a preemption
    assert goodput.stalled_attempts(rows, "now", 6) == 0  # e resumed from another step: the chain ends
    assert goodput.stalled_attempts(rows, "now", None) == 0


def test_a_storage_failure_while_reading_a_record_is_an_os_error_not_bad_data(tiny_synthetic):
    source = datasets.open_split(tiny_synthetic, "train", 10)

    class Failing:
        def __init__(self, message):
            self.message = message

        def read(self, indices):
            raise RuntimeError(self.message)

    source._readers[0] = Failing(f"INTERNAL: pread failed: {os.strerror(errno.EIO)} [reading a chunk]")
    with pytest.raises(OSError) as e:
        source.read_bytes(0)
    assert e.value.errno == errno.EIO and exits.classify(e.value, True, NEWEST).code == exits.FILESYSTEM
    source._readers[0] = Failing("DATA_LOSS: corrupt chunk header")
    with pytest.raises(DataError) as e:
        source.read_bytes(0)
    assert exits.classify(e.value, True, NEWEST).code == exits.BAD_INPUT
