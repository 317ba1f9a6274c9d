"""Converted weights of the original, evaluated without a training run: the shared reference's STATM-SAVi
parameters go through `model.seed_import convert` (Orbax) and the trainer's `init_from` restore, then
(1) reproduce the original's forward segmentations on the reference inputs and (2) are what
`trainer.main --mode eval --config.init_from=DIR` evaluates on a validation split, with the protocol printed."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import COMPILATION_CACHE, REPO, SHARED
from model_fixtures import reference_agreement, regen
from trainer_runs import final_params, losses

from model import build, seed_import
from trainer import checkpoint

SMALL = os.path.join(SHARED, "reference", "statm_savi_small_seed_forward.npz")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(Orbax directory of our params, the reference npz with its parameters drawn by its own regen.py)."""
    tmp = tmp_path_factory.mktemp("converted")
    reference = str(tmp / "small.npz")
    regen(SHARED).main(SMALL, reference)
    meta = json.loads(bytes(np.load(reference)["meta/json"]))
    target = seed_import.target_of_original(meta["seed_config"], meta["seed_config_file"])
    out = seed_import.convert(reference, target, str(tmp / "weights"), log=lambda *_: None)
    return out, reference


def test_restored_weights_reproduce_the_originals_segmentations(converted):
    out, reference = converted
    arrays = dict(np.load(reference))
    meta = json.loads(bytes(arrays["meta/json"]))
    video, boxes = arrays["inputs/video"], arrays["inputs/boxes"]
    model = build.build_model(*build.from_original(meta["seed_config"]))
    shapes = jax.eval_shape(lambda: build.init_params(model, 1, 2, video.shape[2], boxes.shape[2]))
    one = jax.sharding.SingleDeviceSharding(jax.devices()[0])
    abstract = jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=one), shapes)
    params = checkpoint.restore_params(out, abstract)  # the trainer's init_from path
    agree, decided = reference_agreement(params, arrays, meta["seed_config"])
    assert agree == 1.0 and decided > 0.9 * arrays["outputs/segmentations"].size, (agree, decided)


@pytest.mark.slow
def test_mode_eval_evaluates_converted_weights_and_prints_the_protocol(converted, converted_sample, tmp_path):
    out, reference = converted
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    cmd = [sys.executable, "-m", "trainer.main", "--mode", "eval", "--config",
           os.path.join(REPO, "configs", "statm_savi.py") + ":movi_a", f"--config.data.data_dir={converted_sample}",
           f"--config.init_from={out}", "--workdir", str(tmp_path / "eval"), "--config.eval_batch_size=2",
           f"--config.compilation_cache_dir={COMPILATION_CACHE}"]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"evaluating the parameters of init_from={out}" in r.stdout
    assert f" from {reference} (no step stored) for statm_savi_conditional_small.py" in r.stdout, r.stdout[-3000:]
    result = json.loads(r.stdout[r.stdout.index("{\n"):])
    assert result["step"] == 0 and result["num_videos"] == 2 and result["parameters"] == f"init_from={out}"
    assert result["origin"]["checkpoint"] == reference and result["origin"]["step"] is None
    assert {"ari", "fg_ari", "miou", "miou_per_frame", "static_box_miou"} <= set(result)
    assert result["protocol"]["frames"].startswith("the first 24") and "K=10" in result["protocol"]["conditioning"]
    assert "restarts every 6 frames" in result["protocol"]["buffer"]
    assert not os.path.exists(tmp_path / "eval" / "checkpoints") or not os.listdir(tmp_path / "eval" / "checkpoints")


@pytest.mark.slow
def test_fine_tuning_starts_from_converted_weights(converted, converted_sample, tmp_path):
    """Two training steps from the converted weights: finite losses, and the checkpoints are ours; the first
    update has learning rate 0 (warmup), so step 1's parameters are the converted ones."""
    out, _ = converted
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    w = tmp_path / "finetune"
    cmd = [sys.executable, "-m", "trainer.main", "--config", os.path.join(REPO, "configs", "statm_savi.py") + ":movi_a",
           f"--config.data.data_dir={converted_sample}", f"--config.init_from={out}", "--workdir", str(w),
           "--config.batch_size=1", "--config.num_train_steps=2", "--config.checkpoint_every_steps=2",
           "--config.log_loss_every_steps=1", "--config.eval_every_steps=1000",
           f"--config.compilation_cache_dir={COMPILATION_CACHE}",
           "--config.eval_batch_size=2"]  # as the --mode eval test: its evaluation is compiled once
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    got = losses(w)
    assert sorted(got) == [1, 2] and all(np.isfinite(list(got.values()))), got
    step1, _ = final_params(w, 1)
    jax.tree_util.tree_map(np.testing.assert_array_equal, step1, checkpoint.restore_params(out, None))
