"""Weight import: both shared reference forward passes verify; bad trees fail with every difference listed."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import REPO, SHARED

from model import build, seed_import

SMALL = os.path.join(SHARED, "reference", "statm_savi_small_seed_forward.npz")
PP = os.path.join(SHARED, "reference", "statm_savi_pp_seed_forward.npz")


def verify_cli(path):
    return subprocess.run([sys.executable, "-m", "model.seed_import", "verify", path], cwd=REPO,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def pp_completed(tmp_path_factory):
    out = tmp_path_factory.mktemp("pp") / "pp_full.npz"
    subprocess.run([sys.executable, os.path.join(SHARED, "reference", "regen.py"), PP, str(out)], check=True,
                   timeout=600)
    return str(out)


def test_small_reference_verifies():
    r = verify_cli(SMALL)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "953,252 trainable parameters" in r.stdout and "PASS" in r.stdout
    for key in ("states", "states_pred", "alphas", "flow"):
        assert f"max |error| {key}" in r.stdout


def test_pp_reference_verifies(pp_completed):
    r = verify_cli(pp_completed)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "23,263,749 trainable parameters" in r.stdout and "depth" in r.stdout and "PASS" in r.stdout


def test_recipe_only_reference_says_how_to_complete_it():
    r = verify_cli(PP)
    assert r.returncode == 1 and "regen.py" in r.stderr and "Traceback" not in r.stderr


def test_verify_detects_a_wrong_parameter(tmp_path):
    d = dict(np.load(SMALL))
    key = "params/TimeSpaceTransformerBlock2_0/LayerNorm_2/bias"
    d[key] = d[key] + 1e-3
    np.savez(tmp_path / "bad.npz", **d)
    r = verify_cli(str(tmp_path / "bad.npz"))
    assert r.returncode == 1 and "FAIL" in r.stdout


def _small_tree():
    meta, arrays, params = seed_import.load_reference(SMALL)
    _, expected = seed_import.model_for(meta["seed_config"], 10, 2, 64, 1)
    return params, expected


def test_tree_mismatch_lists_missing_unexpected_and_misshaped():
    params, expected = _small_tree()
    params = dict(params)
    del params["SlotAttention_0/LayerNorm_0/scale"]
    params["Bogus_0/kernel"] = np.zeros((2, 2), np.float32)
    params["SpatialBroadcastDecoder_0/alpha_logits/kernel"] = np.zeros((32, 1), np.float32)
    with pytest.raises(seed_import.TreeMismatch) as e:
        seed_import.convert_tree(params, expected, "statm_savi_conditional_small.py")
    msg = str(e.value)
    assert "statm_savi_conditional_small.py" in msg
    assert "missing (1): Recurrence/SlotAttention_0/LayerNorm_0/scale" in msg
    assert "unexpected (1): Bogus_0/kernel" in msg
    assert "mis-shaped (1): SpatialBroadcastDecoder_0/alpha_logits/kernel: (32, 1) vs (64, 1)" in msg


def test_groupnorm_layout_of_the_older_environment(pp_completed):
    meta, _, params = seed_import.load_reference(pp_completed)
    _, expected = seed_import.model_for(meta["seed_config"], 10, 1, 128, 1)
    a = seed_import.convert_tree(params, expected, "pp")
    is_gn = lambda p: p.split("/")[-2] in ("init_bn", "bn1", "bn2", "proj_bn")
    old = {p: (v.reshape(1, 1, 1, -1) if is_gn(p) else v) for p, v in params.items()}
    # root + 16 blocks x 2 + 3 projections = 36 GroupNorms, scale and bias each
    assert sum(v.ndim == 4 and v.shape[:3] == (1, 1, 1) for v in old.values()) == 2 * 36
    b = seed_import.convert_tree(old, expected, "pp")
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)


def test_convert_clu_flax_checkpoint_to_orbax(tmp_path):
    """A clu checkpoint's `ckpt-N.flax` (msgpack TrainState with optimizer/target) -> Orbax, no TensorFlow."""
    import orbax.checkpoint as ocp
    from flax import serialization

    params, _ = _small_tree()
    state = {"step": 100, "optimizer": {"target": seed_import.unflatten(params), "state": {"step": 100}}}
    ckpt_dir = tmp_path / "clu"
    ckpt_dir.mkdir()
    (ckpt_dir / "ckpt-1.flax").write_bytes(serialization.msgpack_serialize(state))
    out = tmp_path / "orbax"
    r = subprocess.run([sys.executable, "-m", "model.seed_import", "convert", "--checkpoint", str(ckpt_dir),
                        "--reference_config", SMALL, "--out", str(out)], cwd=REPO, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    restored = ocp.StandardCheckpointer().restore(str(out / "params"))
    flat = seed_import.flatten(restored)
    np.testing.assert_array_equal(flat["Recurrence/SlotAttention_0/LayerNorm_0/scale"],
                                  params["SlotAttention_0/LayerNorm_0/scale"])
    cfg = json.loads((out / "model_config.json").read_text())
    assert cfg["num_slots"] == 11 and cfg["conditioning_key"] == "boxes"
    assert build.count_params(restored) == 953_252
