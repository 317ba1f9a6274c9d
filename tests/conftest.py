"""Shared fixtures: the converted shared MOVi sample and a tiny synthetic dataset (built once per session)."""

import os
import shutil
import sys
import tempfile

import jax
import pytest
from absl import flags

# Grain reads absl flags (also in spawned workers); outside absl.app.run they must be marked as parsed.
flags.FLAGS.mark_as_parsed()

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("STATM_SHARED_DIR", os.path.join(os.path.dirname(REPO), "shared"))
MOVI_SAMPLE = os.path.join(SHARED, "movi_sample")
REFERENCE_EVAL = os.path.join(MOVI_SAMPLE, "savi_reference_eval_k10.npz")
sys.path.insert(0, REPO)

# XLA parses XLA_FLAGS once per process (absl::call_once in xla/debug_options_flags.cc, whose default
# xla_backend_optimization_level is 3), so this process's CPU client, started here, keeps what it read: the
# in-process tests (the model's numerics against the original's) compile at XLA's default level, as it ships.
# The child processes (every trainer, launcher and Slurm job of the tests) compile at LLVM's level 0 instead: they
# test the trainer's behaviour by comparing runs with runs under the same flags, and their time is mostly compiling.
# Level 0 rounds differently (in the last bits), so a child's numbers are compared with another child's, or within
# a tolerance.
# pytest-xdist's workers inherit the controller's environment, the children's flag included: drop it first.
CHILD_XLA_FLAGS = "--xla_backend_optimization_level=0"


def without_child_flags(flags: str) -> str:
    """XLA_FLAGS with CHILD_XLA_FLAGS taken out: XLA's default optimisation level."""
    return " ".join(f for f in flags.split() if f != CHILD_XLA_FLAGS)


_OWN_XLA_FLAGS = without_child_flags(os.environ.get("XLA_FLAGS", ""))
os.environ["XLA_FLAGS"] = _OWN_XLA_FLAGS
jax.devices()
os.environ["XLA_FLAGS"] = f"{_OWN_XLA_FLAGS} {CHILD_XLA_FLAGS}".strip()
# One persistent compilation cache for every training subprocess of the session: most runs share the tiny
# config, so only the first one compiles (each test's workdir would otherwise start cold). pytest-xdist's
# workers inherit the controller's environment, so they share the controller's cache too.
COMPILATION_CACHE = os.environ.setdefault(
    "STATM_TEST_COMPILATION_CACHE", os.path.join(tempfile.gettempdir(), f"statm-test-compilation-cache-{os.getpid()}"))


# `make test` runs the modules on two pytest-xdist workers, one module per worker at a time (--dist loadfile,
# so that module fixtures are built once), in this order (--no-loadscope-reorder): the longest first, so that
# no long module starts last while the other worker idles. The real Slurm's module mostly waits on the
# scheduler; the other worker's CPU-bound modules fill those waits. Lengths: `make test`'s --durations report.
LONGEST_FIRST = ("test_real_slurm.py", "test_workdir_faults.py", "test_multihost.py", "test_preflight.py",
                 "test_trainer.py", "test_resilience.py", "test_preemption.py", "test_model.py",
                 "test_eval_converted.py", "test_steps.py", "test_layers.py", "test_seed_import.py",
                 "test_original_weights.py", "test_init.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest keep their order


def pytest_unconfigure(config):
    if not hasattr(config, "workerinput"):  # the controller (or a run without xdist), after every worker
        shutil.rmtree(COMPILATION_CACHE, ignore_errors=True)


def _quiet(*_args, **_kwargs):
    pass


@pytest.fixture(scope="session")
def movi_sample_dir():
    if not os.path.isdir(MOVI_SAMPLE):
        pytest.fail(f"shared MOVi sample not found at {MOVI_SAMPLE} (set STATM_SHARED_DIR)")
    return MOVI_SAMPLE


@pytest.fixture(scope="session")
def converted_sample(movi_sample_dir, tmp_path_factory):
    from data.convert_tfds_to_arrayrecord import convert

    out = tmp_path_factory.mktemp("movi_a_converted")
    convert(movi_sample_dir, "movi_a/128x128:1.0.0", str(out), num_workers=1, log=_quiet)
    return str(out)


@pytest.fixture(scope="session")
def tiny_synthetic(tmp_path_factory):
    """24 train + 6 validation videos, 32x32, 12 frames: cheap enough for every pipeline test."""
    from data.synthetic.dataset import generate

    out = tmp_path_factory.mktemp("synthetic")
    generate(str(out), num_train=24, num_validation=6, resolution=32, num_frames=12, supersample=1,
             num_workers=1, log=_quiet)
    return str(out)


# The run that 1-device and multi-process runs are compared with: one config for all of them, so that every
# run of it after the first loads its compiled steps from the session cache.
REFERENCE_STEPS = 12
REFERENCE_OVERRIDES = (f"--config.num_train_steps={REFERENCE_STEPS}", "--config.checkpoint_every_steps=4")


@pytest.fixture(scope="session")
def four_device_losses(tiny_synthetic, tmp_path_factory):
    """Per-step losses of the tiny config trained by 1 process with 4 devices, uninterrupted."""
    from trainer_runs import losses, train

    work = tmp_path_factory.mktemp("one_by_four")
    r = train(tiny_synthetic, work, *REFERENCE_OVERRIDES, devices=4)
    assert r.returncode == 0, r.stderr[-3000:]
    return losses(work)
