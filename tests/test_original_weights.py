"""The original's published weights, as a user of them meets them: a clu checkpoint folder (checkpoints-0/ with
ckpt-N.flax holding the whole train state, beside TensorFlow's ckpt-N.index / .data-*) in either of the
original's environments, converted by naming the original's config file or ours, picked by step, evaluated, and
fine-tuned; each bad input one message. The weights are the shared reference's STATM-SAVi++ parameters, saved
here as clu saves a train state (the published files themselves are not fetched: no test reaches the network)."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import REPO, SHARED
from model_fixtures import reference_agreement

from configs import statm_savi_pp
from model import seed_import
from trainer import checkpoint
from trainer.exits import BadInput

PP = os.path.join(SHARED, "reference", "statm_savi_pp_seed_forward.npz")
OURS = os.path.join(REPO, "configs", "statm_savi_pp.py") + ":movi_e"
GROUPNORM = ("init_bn", "bn1", "bn2", "proj_bn")


def convert_cli(*args):
    return subprocess.run([sys.executable, "-m", "model.seed_import", "convert", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)


def clu_state(params: dict, step: int, environment: int) -> bytes:
    """The original's train state as clu's checkpoint writes it: msgpack of {step, optimizer: {target, state},
    variables, rng}; Environment 1's older flax keeps GroupNorm scales and biases as (1, 1, 1, C)."""
    from flax import serialization

    def layout(path, v):
        old = environment == 1 and path.split("/")[-2] in GROUPNORM
        return v.reshape(1, 1, 1, -1) if old else v

    target = seed_import.unflatten({p: layout(p, v) for p, v in params.items()})
    slots = jax.tree_util.tree_map(lambda v: {"grad_ema": v * 0.1, "grad_sq_ema": v * v}, target)
    return serialization.msgpack_serialize({
        "step": step, "optimizer": {"target": target, "state": {"step": step, "param_states": slots}},
        "variables": {}, "rng": np.array([0, 42], np.uint32)})


def original_config_file(path, seed_config: dict) -> str:
    """A config file of the original's kind: it imports only ml_collections and defines get_config()."""
    path.write_text(f"import ml_collections\n\n\ndef get_config():\n"
                    f"    return ml_collections.ConfigDict({seed_config!r})\n")
    return str(path)


@pytest.fixture(scope="module")
def original(tmp_path_factory):
    """Two original workdirs: Environment 1 with two saves (ckpt-2 at step 2000, ckpt-3 at step 3000, TensorFlow's
    files beside them) and Environment 2 with one (ckpt-1 at step 3000), plus the original's config file."""
    tmp = tmp_path_factory.mktemp("original")
    completed = tmp / "pp.npz"
    subprocess.run([sys.executable, os.path.join(SHARED, "reference", "regen.py"), PP, str(completed)], check=True,
                   timeout=600)
    meta, arrays, params = seed_import.load_reference(str(completed))
    env1, env2 = tmp / "env1" / "checkpoints-0", tmp / "env2" / "checkpoints-0"
    for d in (env1, env2):
        d.mkdir(parents=True)
    earlier = {p: v if p.endswith("/pos_embedding") else v * 0.5 for p, v in params.items()}  # grids are constants
    (env1 / "ckpt-2.flax").write_bytes(clu_state(earlier, 2000, environment=1))
    (env1 / "ckpt-3.flax").write_bytes(clu_state(params, 3000, environment=1))
    (env1 / "ckpt-3.index").write_bytes(b"\x00tf index")
    (env1 / "ckpt-3.data-00000-of-00001").write_bytes(b"\x00tf data")
    (env2 / "ckpt-1.flax").write_bytes(clu_state(params, 3000, environment=2))
    config = original_config_file(tmp / "statm_savi++_like.py", meta["seed_config"])
    return {"tmp": tmp, "env1": env1, "env2": env2, "config": config, "arrays": arrays, "meta": meta}


@pytest.fixture(scope="module")
def converted(original):
    """Environment 1 by the original's config file (its workdir given), Environment 2 by our config."""
    t = original["tmp"]
    one = convert_cli("--checkpoint", t / "env1", "--original_config", original["config"], "--out", t / "out1")
    two = convert_cli("--checkpoint", original["env2"], "--config", OURS, "--out", t / "out2")
    earlier = convert_cli("--checkpoint", original["env1"], "--step", 2000, "--config", OURS, "--out", t / "out0")
    return one, two, earlier


def restored(out):
    return checkpoint.restore_params(str(out), None)


def test_both_environments_convert_to_the_same_parameters_that_reproduce_the_original(original, converted):
    one, two, _ = converted
    for r in (one, two):
        assert r.returncode == 0, r.stderr[-3000:]
    assert f"reading {original['env1'] / 'ckpt-3.flax'} (the original's step 3000)" in one.stdout
    a, b = restored(original["tmp"] / "out1"), restored(original["tmp"] / "out2")
    jax.tree_util.tree_map(np.testing.assert_array_equal, a, b)
    arrays = original["arrays"]
    agree, decided = reference_agreement(a, arrays, original["meta"]["seed_config"])
    assert agree == 1.0 and decided > 0.9 * arrays["outputs/segmentations"].size, (agree, decided)
    origin = json.loads((original["tmp"] / "out1" / "model_config.json").read_text())["origin"]
    assert origin["checkpoint"] == str(original["env1"] / "ckpt-3.flax") and origin["step"] == 3000


def test_step_picks_the_checkpoint_that_stored_it(original, converted):
    _, two, earlier = converted
    assert earlier.returncode == 0, earlier.stderr[-3000:]
    assert f"reading {original['env1'] / 'ckpt-2.flax'} (the original's step 2000)" in earlier.stdout
    a, half = restored(original["tmp"] / "out2"), restored(original["tmp"] / "out0")
    jax.tree_util.tree_map(lambda x, y: np.testing.assert_array_equal(x * 0.5, y), a, half)
    missing = convert_cli("--checkpoint", original["env1"], "--step", 2500, "--config", OURS, "--out",
                          original["tmp"] / "none")
    assert missing.returncode == 1 and "no checkpoint of step 2500" in missing.stderr
    assert "ckpt-3.flax: step 3000; ckpt-2.flax: step 2000" in missing.stderr


def one_message(argv, capsys) -> str:
    assert seed_import.main(["convert", *map(str, argv)]) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return err


def test_each_bad_input_is_one_message_that_names_the_file_and_the_fix(original, converted, capsys, tmp_path):
    env1, out = original["env1"], original["tmp"] / "bad"
    (tmp_path / "state.pkl").write_bytes(b"\x80\x04\x95" + bytes(20))
    (tmp_path / "junk.flax").write_bytes(b"\x00\x01garbage")
    from flax import serialization
    (tmp_path / "bare.flax").write_bytes(serialization.msgpack_serialize({"step": 5, "rng": np.zeros(2)}))
    (tmp_path / "empty").mkdir()
    cases = {
        tmp_path / "state.pkl": "a Python pickle",
        env1 / "ckpt-3.data-00000-of-00001": "TensorFlow's half of a clu checkpoint",
        original["tmp"] / "out1": "an Orbax checkpoint or a workdir of this trainer",
        tmp_path / "junk.flax": "not msgpack (its first bytes: 00 01",
        tmp_path / "bare.flax": "no parameter tree (FrameEncoder_0/...)",
        tmp_path / "empty": "no ckpt-N.flax file",
    }
    for path, says in cases.items():
        err = one_message(["--checkpoint", path, "--config", OURS, "--out", out], capsys)
        assert str(path) in err and says in err, err
    small = os.path.join(REPO, "configs", "statm_savi.py") + ":movi_a"
    err = one_message(["--checkpoint", env1, "--config", small, "--out", out], capsys)
    assert f"{env1 / 'ckpt-3.flax'}: parameter tree does not match the architecture of {small}" in err
    assert "missing (" in err and "unexpected (" in err
    assert "they match configs/statm_savi_pp.py:movi_a: pass --config configs/statm_savi_pp.py:movi_a" in err
    params = seed_import.flatten(restored(original["tmp"] / "out2"))
    lost = sorted(p for p in params if p.startswith("Recurrence/"))[0]  # a tree of no known config: one short
    short = {p.removeprefix("Recurrence/"): np.asarray(v) for p, v in params.items() if p != lost}
    (tmp_path / "short.flax").write_bytes(clu_state(short, 7, environment=2))
    err = one_message(["--checkpoint", tmp_path / "short.flax", "--config", OURS, "--out", out], capsys)
    assert "the closest known config is configs/statm_savi_pp.py:movi_a, with 1 difference: missing (1): " \
           f"{lost}" in err, err


def test_weights_converted_for_another_model_say_which_keys_differ(converted, original):
    config = statm_savi_pp.get_config("movi_e")
    assert checkpoint.converted_origin(str(original["tmp"] / "out2"), config)["step"] == 3000
    config.model.slot_size, config.num_slots = 64, 12
    config.model.remat = not config.model.remat  # how the model runs, not what it is: never a difference
    with pytest.raises(BadInput) as e:
        checkpoint.converted_origin(str(original["tmp"] / "out2"), config)
    text = str(e.value)
    assert "2 keys differ" in text and "model.slot_size: 128 in the weights, 64 in the config" in text, text
    assert "num_slots: 24 in the weights, 12 in the config" in text and f"({OURS})" in text, text
