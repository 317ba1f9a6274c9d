"""Config rules (configs/validate.py): each broken rule is one message naming the keys and the fix, raised before
any data is opened or anything compiled; every shipped config passes."""

import importlib
import os
import subprocess
import sys

import pytest
from conftest import REPO
from model_fixtures import load_config

from configs import validate as V
from configs import variants

PAPER = ("statm_savi", "statm_savi_pp", "savi", "savi_pp")  # each with a MOVi variant: configs/variants.py
CONFIGS = ("demo", "tiny", *(f"{m}:{v}" for m in PAPER for v in variants.VARIANTS))


def config(name="demo"):
    return load_config(name)


def problems_after(**changes):
    c = config()
    for key, value in changes.items():
        *parents, leaf = key.split("__")
        node = c
        for p in parents:
            node = node[p]
        node[leaf] = value
    with pytest.raises(V.ConfigError) as e:
        V.validate(c)
    return str(e.value)


@pytest.mark.parametrize("name", CONFIGS)
def test_shipped_configs_are_valid(name):
    assert V.problems(config(name)) == []


def test_num_slots_must_match_the_conditioning():
    msg = problems_after(max_instances=10, num_slots=5)
    assert "num_slots=5 with conditioning_key='boxes' and max_instances=10" in msg
    assert "max_instances + 1 = 11" in msg and "--config.num_slots=11" in msg and "--config.max_instances=4" in msg
    c = config()
    c.num_slots, c.conditioning_key = 5, "none"  # learned slots: any positive count
    assert V.problems(c) == []
    c = config()
    c.max_instances = 4  # num_slots follows max_instances by reference in every shipped config
    assert c.num_slots == 5 and V.problems(c) == []


def test_data_resolution_must_equal_the_decoder_output():
    msg = problems_after(data__resolution=48)
    assert "data.resolution=48 but the decoder paints 32x32 frames" in msg
    assert "model.decoder.resolution=8 through strides (2, 2)" in msg and "--config.data.resolution=32" in msg
    msg = problems_after(data__resolution=64)
    assert "--config.model.decoder.resolution=16" in msg  # a decoder that reaches 64
    assert V.decoder_output_size(8, (2, 2, 2, 1), (True, True, True, False)) == 64  # the small decoder
    assert V.decoder_output_size(8, (2, 2, 2, 2), (True,) * 4) == 128  # ++
    assert V.decoder_output_size(16, (2, 1), (False, True)) == 8  # an ordinary strided layer shrinks


def test_decoder_targets_must_be_provided_by_the_data():
    msg = problems_after(model__decoder__targets={"video": 3, "normals": 3})
    assert "model.decoder.targets has 'normals', which the data does not provide" in msg
    assert "'video': 3, 'flow': 3, 'depth': 1" in msg
    assert "model.decoder.targets['flow']=2: the data provides flow with 3 channel(s)" in problems_after(
        model__decoder__targets={"flow": 2})


@pytest.mark.parametrize("key", ["conditioning_key", "readout_bias_init", "nonfinite_updates", "data.train_crop",
                                 "data.depth_transform", "model.dtype", "model.time_loop", "model.encoder.backbone",
                                 "model.recurrence.predictor", "model.decoder.conv_transpose"])
def test_unknown_choice_strings(key):
    msg = problems_after(**{key.replace(".", "__"): "bogus"})
    assert f"{key}='bogus': expected one of {list(V.CHOICES[key])}" in msg


@pytest.mark.parametrize("key,value", [("batch_size", 0), ("num_train_steps", -5), ("checkpoint_every_steps", 0),
                                       ("eval_every_steps", 0), ("log_loss_every_steps", 0),
                                       ("data__eval_frames", 0), ("checkpoint_keep", 0)])
def test_values_that_must_be_positive(key, value):
    assert f"{key.replace('__', '.')}={value}: must be > 0" in problems_after(**{key: value})


def test_batch_must_split_over_devices_processes_and_micro_batches():
    c = config()
    c.batch_size = 6
    assert V.problems(c, num_devices=4) == [
        "batch_size=6 cannot be split over 4 device(s) in 1 process(es): it must be a multiple of 4; valid values "
        "include [4, 8, 12, 16]"]
    c.batch_size, c.grad_accum_steps = 4, 3
    assert "with grad_accum_steps=3: it must be a multiple of 3" in V.problems(c)[0]
    c.grad_accum_steps, c.eval_batch_size = 1, 3
    assert V.problems(c, num_devices=2, num_processes=2) == []  # the eval batch is rounded up instead
    assert [V.eval_batch_size(c, n, p) for n, p in ((1, 1), (2, 2), (8, 1), (16, 2))] == [3, 4, 8, 16]


# The cluster layouts docs/clusters.md promises: 1, 2, 4 and 8 nodes of 8 GPUs, one process per GPU or per node.
@pytest.mark.parametrize("name", [n for n in CONFIGS if ":" in n])
@pytest.mark.parametrize("devices", [8, 16, 32, 64])
def test_cluster_configs_are_valid_on_1_to_8_nodes(name, devices):
    c = config(name)
    for processes in (devices, devices // 8):
        assert V.problems(c, devices, processes) == [], (devices, processes)
        size = V.eval_batch_size(c, devices, processes)
        assert size % devices == 0 and size >= c.eval_batch_size and size // devices <= max(1, c.eval_batch_size // 8)


def test_paths_expand_the_home_directory_and_variables(monkeypatch):
    monkeypatch.setenv("HOME", "/home/u")
    monkeypatch.setenv("RUNS", "/shared/runs")
    c = config()
    c.data.data_dir, c.init_from, c.compilation_cache_dir = "~/data/movi_a", "$RUNS/seed", "~/cache"
    V.expand_paths(c)
    assert (c.data.data_dir, c.init_from, c.compilation_cache_dir) == ("/home/u/data/movi_a", "/shared/runs/seed",
                                                                      "/home/u/cache")


def test_every_problem_in_one_error():
    c = config()
    c.num_slots, c.data.resolution, c.model.dtype = 5, 48, "float16"
    with pytest.raises(V.ConfigError) as e:
        V.validate(c)
    assert len(e.value.problems) == 3 and str(e.value).count("\n  - ") == 3


def test_cli_refuses_a_bad_config_before_opening_data_or_compiling(tmp_path):
    """The data dir does not exist: the config error must come first, as the only message, without a traceback."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    r = subprocess.run([sys.executable, "-m", "trainer.main", "--config", "configs/demo.py", "--workdir",
                        str(tmp_path / "w"), f"--config.data.data_dir={tmp_path}/missing", "--config.num_slots=5",
                        "--config.model.encoder.backbone=resnet", "--config.data.depth_transform=log"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 1, r.stderr[-2000:]
    assert "num_slots=5" in r.stderr and "model.encoder.backbone='resnet'" in r.stderr
    assert "data.depth_transform='log'" in r.stderr
    assert "data directory does not exist" not in r.stderr and "Traceback" not in r.stderr
    assert not os.path.exists(tmp_path / "w")  # nothing was created either


def test_cli_expands_the_home_directory_in_the_workdir_and_the_data_dir(tmp_path):
    """The documented `--config.data.data_dir=~/data/...`: bash leaves `~` after `=` alone; the trainer expands it."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "HOME": str(tmp_path)}
    r = subprocess.run([sys.executable, "-m", "trainer.main", "--config", "configs/tiny.py", "--workdir=~/w",
                        "--config.data.data_dir=~/movi_e_128"], cwd=REPO, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 1, r.stderr[-2000:]
    assert f"{tmp_path}/movi_e_128" in r.stderr and "~" not in r.stderr.split("error:")[-1], r.stderr[-2000:]
    assert os.path.isdir(tmp_path / "w") and not os.path.exists(os.path.join(REPO, "~"))


def test_each_paper_config_changes_per_variant_what_its_docstring_says():
    for v in variants.VARIANTS:
        few = v in ("movi_a", "movi_b", "movi_c")
        pp = config(f"statm_savi_pp:{v}")
        assert (pp.max_instances, pp.num_slots) == ((10, 11) if few else (23, 24))
        assert pp.model.recurrence.num_iterations == (2 if few else 1) and pp.eval_slice_size == (6 if few else 24)
        assert config(f"statm_savi:{v}").max_instances == (10 if few else 23)
        assert config(f"savi:{v}").max_instances == config(f"savi_pp:{v}").max_instances == 23
    assert config("savi_pp:movi_e").num_train_steps == 500_000  # SAVi's savi++_conditional.py
    assert {config(f"{m}:movi_a").num_train_steps for m in ("statm_savi", "statm_savi_pp", "savi")} == {100_000}
    for module in PAPER:
        doc = importlib.import_module(f"configs.{module}").__doc__
        assert f"--config configs/{module}.py:movi_" in doc and ".py (" in doc  # the command, and its source
    with pytest.raises(ValueError, match="unknown MOVi variant 'movi_f'"):
        config("statm_savi:movi_f")


def test_demo_docstring_runs_what_make_demo_runs():
    """configs/demo.py's docstring gives the data command of `make demo`; both must name the same data, with no
    more objects per video than the config has object slots."""
    make = open(os.path.join(REPO, "Makefile")).read()
    make_args = next(line.split("?=", 1)[1].split() for line in make.splitlines()
                     if line.startswith("DEMO_SYNTH_ARGS"))
    doc = importlib.import_module("configs.demo").__doc__.replace("\\\n", " ")
    doc_args = next(line.split() for line in doc.splitlines() if "-m data.synthetic" in line)
    doc_args = doc_args[doc_args.index("demo_data") + 1:]
    assert [a for a in doc_args if a != "--skip_existing"] == make_args
    assert int(make_args[make_args.index("--max_objects") + 1]) <= config().max_instances
