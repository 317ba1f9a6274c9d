"""What a cluster scheduler relies on: retention, a corrupt newest checkpoint falling back to the one before,
one metrics row per step after restarts, and a non-finite step that never reaches a checkpoint."""

import glob
import json
import os
import shutil
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import REPO
from trainer_runs import final_params, losses, state_data_files, train

from data.pipeline import datasets
from data.records import codec, shards
from trainer.checkpoint import Checkpoints


def test_retention_keeps_the_newest_and_every_period(tmp_path):
    ckpts = Checkpoints(str(tmp_path), every_steps=1, keep=2, keep_period=4)
    for step in range(1, 11):
        ckpts.save(step, {"w": jnp.full((3,), float(step))}, {"global_next_index": step}, {})
    ckpts.close()
    assert Checkpoints(str(tmp_path), 1).all_steps() == [4, 8, 9, 10]


@pytest.mark.slow
def test_no_restorable_checkpoint_is_one_error_and_changes_nothing(tiny_synthetic, tmp_path):
    """Checkpoints exist but none restores (here: another model's tree): exit 1, one message, no fresh start;
    with --allow_fresh_start they are moved aside, kept whole, and the run trains from scratch."""
    ckpts = Checkpoints(str(tmp_path / "w"), every_steps=1)
    for step in (1, 2):
        ckpts.save(step, {"w": jnp.zeros(3)}, {"global_next_index": 4 * step}, {})
    ckpts.close()
    before = sorted(os.listdir(tmp_path / "w" / "checkpoints"))
    r = train(tiny_synthetic, tmp_path / "w")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "no checkpoint in" in r.stderr and "step 2: " in r.stderr and "step 1: " in r.stderr
    assert "Nothing was changed" in r.stderr and r.stdout.count("cannot be restored") == 2
    assert sorted(os.listdir(tmp_path / "w" / "checkpoints")) == before
    fresh = train(tiny_synthetic, tmp_path / "w", "--allow_fresh_start", "--config.num_train_steps=2")
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    aside = glob.glob(str(tmp_path / "w" / "checkpoints.unrestorable-*"))
    assert len(aside) == 1 and sorted(os.listdir(aside[0])) == before
    assert f"they are kept in {aside[0]} and training starts from scratch" in fresh.stdout
    assert Checkpoints(str(tmp_path / "w"), 1).all_steps() == [1, 2]


def metric_rows(workdir):
    return [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]


@pytest.mark.slow
def test_corrupt_checkpoints_fall_back_to_the_newest_good_step(tiny_synthetic, tmp_path):
    """Truncated files in step 4 and deleted files in step 2: each step gets one warning, and the run resumes
    from step 1 exactly as if it had never stopped, with one metrics row per step."""
    straight = train(tiny_synthetic, tmp_path / "straight", "--config.num_train_steps=12")
    assert straight.returncode == 0, straight.stderr[-3000:]
    first = train(tiny_synthetic, tmp_path / "w", "--config.num_train_steps=4")
    assert first.returncode == 0, first.stderr[-3000:]
    ckpt_dir = tmp_path / "w" / "checkpoints"
    assert Checkpoints(str(tmp_path / "w"), 2).all_steps() == [1, 2, 4]
    for path in state_data_files(ckpt_dir / "4"):
        with open(path, "r+b") as f:
            f.truncate(16)  # (halving is not enough: the restore reads ranges in a file's first half)
    for path in state_data_files(ckpt_dir / "2"):
        os.remove(path)
    resumed = train(tiny_synthetic, tmp_path / "w", "--config.num_train_steps=12")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for step in (4, 2):
        assert f"warning: checkpoint step {step} in {ckpt_dir} cannot be restored" in resumed.stdout
    assert "step 1 in" not in resumed.stdout
    # Resumed from step 1, so steps 2-12 were trained again: the same losses as the uninterrupted run, and the
    # rows the first attempt logged for steps 2 to 4 were replaced, not repeated.
    rows = [r["step"] for r in metric_rows(tmp_path / "w") if "train/loss" in r]
    assert rows == list(range(1, 13))
    assert losses(tmp_path / "w") == losses(tmp_path / "straight")
    p1, _ = final_params(tmp_path / "straight", 12)
    p2, _ = final_params(tmp_path / "w", 12)
    jax.tree_util.tree_map(np.testing.assert_array_equal, p1, p2)


def poison(data_dir, out, element):
    """A copy of the dataset whose record feeding train-stream `element` (seed 42, the tiny config's) has NaN
    first-frame boxes: the conditioning, and so the loss, of that step is NaN."""
    shutil.copytree(data_dir, out)
    source = datasets.open_split(str(out), "train", 10)
    index = int(datasets.EpochShuffledSource(source, 42).permutation(0)[element])
    f, local = source.locate(index)
    path = source.paths[f]
    count = shards.read_json(path + ".json")["num_records"]
    videos = [codec.decode(source.read_bytes(index - local + i)) for i in range(count)]
    videos[local]["boxes"] = videos[local]["boxes"].copy()
    videos[local]["boxes"][:, 0] = np.nan
    shards.write_shard(path, [(v["video_name"], int(v["num_instances"]), codec.encode(v)) for v in videos])
    return str(out)


@pytest.mark.slow
def test_nonfinite_step_is_never_saved_and_the_run_resumes(tiny_synthetic, tmp_path):
    data = poison(tiny_synthetic, tmp_path / "poisoned", element=9)  # batch 4: step 3
    w = tmp_path / "w"
    # Logged every 100 steps: step 3's flag is read one step late, before step 4 would be saved.
    r = train(data, w, "--config.num_train_steps=12", "--config.log_loss_every_steps=100")
    assert r.returncode == 3, r.stderr[-3000:]
    assert "non-finite loss or gradient at step 3 (not applied)" in r.stderr and "Traceback" not in r.stderr
    assert "The newest checkpoint, step 2, is from before it and is kept" in r.stderr
    assert Checkpoints(str(w), 2).all_steps() == [1, 2]
    for step in (1, 2):  # saved step numbers are the state's own
        params, data_state = final_params(w, step)
        assert data_state == {"global_next_index": 4 * step}
    resumed = train(data, w, "--config.num_train_steps=12", "--config.nonfinite_updates=skip")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "non-finite loss or gradient at step 3: update skipped (1 so far)" in resumed.stdout
    rows = {r["step"]: r for r in metric_rows(w) if "train/loss" in r}
    assert sorted(rows) == list(range(3, 13)) and not np.isfinite(rows[3]["train/loss"])
    # The poisoned video comes back in the second epoch (6 steps each): skipped again, counted on.
    skips = [rows[s]["train/skipped_updates"] for s in range(3, 13)]
    bad = [s for s in range(3, 13) if not np.isfinite(rows[s]["train/loss"])]
    assert skips[0] == 1 and skips == sorted(skips) and skips[-1] == len(bad)
    params, _ = final_params(w, 12)
    assert all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves(params))


def test_processes_probing_one_workdir_do_not_trip_each_other(tmp_path):
    """Every process of a multi-host run checks the shared workdir at the same moment: each probe is its own.
    Three processes probe one directory over and over during the same second."""
    loop = ("import sys, time; from trainer.run import check_workdir\n"
            "start = float(sys.argv[2])\n"
            "while time.time() < start: time.sleep(0.001)\n"
            "while time.time() < start + 1.5: check_workdir(sys.argv[1])\n")
    start = time.time() + 8  # after every process has imported the trainer
    procs = [subprocess.Popen([sys.executable, "-c", loop, str(tmp_path), str(start)], cwd=REPO,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    assert os.listdir(tmp_path) == []
