"""End-to-end training on tiny data: 1 vs 4 devices, bit-identical resume, bad input, divergence."""

import functools
import glob
import gzip
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import REFERENCE_OVERRIDES, REFERENCE_STEPS, REPO
from flop_count import matmul_and_conv_flops
from trainer_runs import CONFIG, final_params, losses, train

from configs import tiny
from trainer import program, steps


@pytest.mark.slow
def test_one_and_four_devices_give_the_same_losses(tiny_synthetic, tmp_path, four_device_losses):
    # A peak of 1 TFLOP/s stands in for a GPU's, so that the MFU path runs (CPUs are not in the peak table).
    one = train(tiny_synthetic, tmp_path / "one", *REFERENCE_OVERRIDES, "--config.peak_flops=1e12")
    assert one.returncode == 0, one.stderr[-3000:]
    rows = [json.loads(line) for line in open(tmp_path / "one" / "metrics.jsonl")]
    logged = [r["train/mfu"] / r["train/steps_per_sec"] * 1e12 for r in rows if "train/loss" in r]  # FLOPs/step
    steps = list(range(1, REFERENCE_STEPS + 1))
    assert len(logged) == len(steps)
    # XLA's count adds the elementwise work to the products and convolutions (and drops the last frame's unused
    # prediction); a count that sees the scanned time loop once falls about a seventh short of them.
    flops = analytic_step_flops()
    assert all(1.0 <= f / flops <= 1.05 for f in logged), (logged, flops)
    assert "| mfu " in one.stdout
    a, b = losses(tmp_path / "one"), four_device_losses
    assert sorted(a) == sorted(b) == steps
    for step in a:
        assert b[step] == pytest.approx(a[step], rel=1e-5)
    assert "validation (6 videos, all frames)" in one.stdout and "static first-frame boxes" in one.stdout
    assert {"tensorboard", "pictures", "metrics.jsonl", "checkpoints"} <= set(os.listdir(tmp_path / "one"))
    assert any(f.endswith(".gif") for f in os.listdir(tmp_path / "one" / "pictures"))
    ev = train(tiny_synthetic, tmp_path / "one", mode="eval")  # --mode eval on the latest checkpoint
    assert ev.returncode == 0, ev.stderr[-3000:]
    assert json.loads(ev.stdout[ev.stdout.index("{"):])["step"] == REFERENCE_STEPS


@pytest.fixture(scope="module")
def profiled_run(tiny_synthetic, tmp_path_factory):
    """One uninterrupted 4-step run with steps 2-3 profiled: the resume test's reference and the profiler's run."""
    workdir = tmp_path_factory.mktemp("profiled")
    r = train(tiny_synthetic, workdir, "--config.profile_start_step=2", "--config.profile_num_steps=2")
    assert r.returncode == 0, r.stderr[-3000:]
    return workdir, r


@pytest.mark.slow
def test_profile_window_writes_a_trace_of_the_train_step(profiled_run):
    workdir, r = profiled_run
    runs = glob.glob(str(workdir / "profile" / "process-0" / "plugins" / "profile" / "*"))
    assert len(runs) == 1, runs  # one window, one trace
    xplane = glob.glob(os.path.join(runs[0], "*.xplane.pb"))  # TensorBoard's profile plugin and XProf read these
    assert len(xplane) == 1 and b"jit_train_step" in open(xplane[0], "rb").read()  # the step's HLO module
    with gzip.open(os.path.join(runs[0], "perfetto_trace.json.gz")) as f:  # what ui.perfetto.dev opens
        events = json.load(f)["traceEvents"]
    steps = sorted({e["args"]["step_num"] for e in events if e.get("name") == "train" and "args" in e})
    assert steps == ["2", "3"] or steps == [2, 3], steps
    assert any(e.get("name") == "PjitFunction(train_step)" for e in events)
    assert "profile of steps 2-3:" in r.stdout


@pytest.mark.slow
def test_resume_is_bit_identical(tiny_synthetic, tmp_path, profiled_run):
    """Also: the profiled reference run ends bitwise equal to an interrupted unprofiled one."""
    straight = profiled_run[0]
    first = train(tiny_synthetic, tmp_path / "resumed", "--config.num_train_steps=2")
    assert first.returncode == 0, first.stderr[-3000:]
    second = train(tiny_synthetic, tmp_path / "resumed")  # same workdir: continues from step 2
    assert second.returncode == 0, second.stderr[-3000:]
    assert losses(tmp_path / "resumed") == losses(straight)
    p1, d1 = final_params(straight, 4)
    p2, d2 = final_params(tmp_path / "resumed", 4)
    assert d1 == d2 == {"global_next_index": 16}
    jax.tree_util.tree_map(np.testing.assert_array_equal, p1, p2)


def test_resume_is_bit_identical_at_xlas_default_level(tiny_synthetic, tmp_path):
    """The other trainer tests compile their runs at LLVM's level 0 (tests/conftest.py); training compiles at
    XLA's default level, and resumes bitwise there too."""
    straight = train(tiny_synthetic, tmp_path / "straight", default_xla=True)
    assert straight.returncode == 0, straight.stderr[-3000:]
    for steps_now in ("--config.num_train_steps=2", "--config.num_train_steps=4"):
        run = train(tiny_synthetic, tmp_path / "resumed", steps_now, default_xla=True)
        assert run.returncode == 0, run.stderr[-3000:]
    assert losses(tmp_path / "resumed") == losses(tmp_path / "straight")
    jax.tree_util.tree_map(np.testing.assert_array_equal, final_params(tmp_path / "straight", 4)[0],
                           final_params(tmp_path / "resumed", 4)[0])


def analytic_step_flops() -> float:
    """FLOPs of the matrix products and convolutions of one train step of the tiny config at the reference run's
    settings, counted from the step's jaxpr (tests/flop_count.py), not by XLA."""
    config = tiny.get_config()
    config.num_train_steps = REFERENCE_STEPS
    p = program.from_config(config)
    step = functools.partial(steps.train_step, model=p.model, optimizer=p.optimizer, targets=p.targets,
                             schema=p.schema, schedule=p.schedule)
    return matmul_and_conv_flops(step, p.abstract_state(), p.abstract_batch(config.batch_size))


def test_bad_batch_is_refused_before_compile(tiny_synthetic, tmp_path):
    r = train(tiny_synthetic, tmp_path / "w", "--config.batch_size=6", devices=4)
    assert r.returncode == 1 and "batch_size=6 cannot be split over 4 device(s)" in r.stderr
    assert "valid values include [4, 8, 12, 16]" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_divergence_aborts_with_its_own_exit_code(tiny_synthetic, tmp_path):
    """Step 2 applies a learning rate of 1e30 and step 3 is non-finite, between the saves of steps 1 and 4:
    exit 3 naming step 3, step 1 kept and nothing after it saved; a rerun with a sane learning rate resumes
    from step 1."""
    w, steps = tmp_path / "w", ("--config.num_train_steps=6", "--config.checkpoint_every_steps=4")
    r = train(tiny_synthetic, w, *steps, "--config.learning_rate=1e30", "--config.warmup_steps=1",
              "--config.max_grad_norm=1e30", "--config.log_loss_every_steps=100")  # found between log steps
    assert r.returncode == 3, (r.returncode, r.stderr[-2000:])
    assert "non-finite loss or gradient at step 3" in r.stderr and "Traceback" not in r.stderr
    assert "The newest checkpoint, step 1, is from before it and is kept" in r.stderr
    assert sorted(int(d) for d in os.listdir(w / "checkpoints") if d.isdigit()) == [1]
    resumed = train(tiny_synthetic, w, *steps)  # the tiny config's own learning rate (its step is cached)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed from step 1 " in resumed.stdout
    assert sorted(losses(w)) == [2, 3, 4, 5, 6] and all(np.isfinite(v) for v in losses(w).values())


def test_half_a_multi_process_layout_is_one_clear_error(tiny_synthetic, tmp_path):
    """A coordinator address without a process count is refused with the variables to set, not a traceback."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_COORDINATOR_ADDRESS": "127.0.0.1:1"}
    env.pop("JAX_NUM_PROCESSES", None)
    r = subprocess.run([sys.executable, "-m", "trainer.main", "--config", CONFIG, "--workdir", str(tmp_path),
                        f"--config.data.data_dir={tiny_synthetic}"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "jax.distributed cannot start a multi-process run" in r.stderr and "JAX_NUM_PROCESSES" in r.stderr


def test_unwritable_workdir(tiny_synthetic):
    r = train(tiny_synthetic, "/proc/statm_savi_workdir")
    assert r.returncode == 1 and "is not writable" in r.stderr


@pytest.fixture(scope="module")
def interval_run(tiny_synthetic, tmp_path_factory):
    """The reference run's config on 4 devices, logged every 4 steps, with any import of TensorFlow refused and
    reported (tests/faults.py --forbid_tensorflow)."""
    from test_workdir_faults import run_faulty

    w = tmp_path_factory.mktemp("interval") / "w"
    code, out, err = run_faulty(tiny_synthetic, w, *REFERENCE_OVERRIDES, "--config.log_loss_every_steps=4",
                                faults=["--forbid_tensorflow"], devices=4)
    assert code == 0, err[-3000:]
    return w, out, err


def test_logged_training_metrics_are_means_over_the_logging_interval(interval_run, four_device_losses):
    w, _, _ = interval_run
    got = losses(w)
    assert sorted(got) == [4, 8, 12]
    for step, mean in got.items():  # the same run logged every step (1 x 4 devices, same stream)
        window = np.array([four_device_losses[s] for s in range(step - 3, step + 1)], np.float32)
        assert mean == pytest.approx(float(window.sum() / np.float32(4)), rel=1e-6), (step, mean, window)


def test_a_training_run_never_imports_tensorflow_and_logs_clus_parameter_table(interval_run):
    _, out, err = interval_run
    assert "FORBIDDEN IMPORT" not in err, err[-3000:]
    assert "| Name " in out and "| Mean " in out and "| Std " in out and "Total: 7,564" in out, out[:4000]
