"""MFU: the peak table, and FLOPs counted with the time loop unrolled (XLA counts a scan body once)."""

import jax
import jax.numpy as jnp
import optax
import pytest
from model_fixtures import tiny_inputs, tiny_model

from trainer import mesh as mesh_lib
from trainer import mfu, steps
from trainer import state as state_lib


@pytest.mark.parametrize("kind,dtype,peak", [
    ("NVIDIA H100 80GB HBM3", "bfloat16", 989e12), ("NVIDIA H100 PCIe", "bfloat16", 756e12),
    ("NVIDIA H800", "bfloat16", 989e12), ("NVIDIA H800 PCIe", "float32", 378e12),
    ("NVIDIA A100-SXM4-80GB", "float32", 156e12), ("NVIDIA H200", "bfloat16", 989e12),
])
def test_peak_table(kind, dtype, peak):
    assert mfu.peak_flops(kind, dtype) == peak


def test_no_peak_for_cpu_or_unknown():
    assert mfu.peak_flops("cpu", "float32") is None
    assert mfu.peak_flops("Tesla T4", "bfloat16") is None


def test_unrolled_count_matches_the_matmuls_and_scan_undercounts():
    def body(c, x):
        return c @ x, None

    def scanned(c, xs):
        return jax.lax.scan(body, c, xs)[0]

    def unrolled(c, xs):
        for i in range(xs.shape[0]):
            c, _ = body(c, xs[i])
        return c

    c, xs = jnp.ones((8, 64)), jnp.ones((6, 64, 64))
    matmuls = 6 * 2 * 8 * 64 * 64
    assert mfu.lowered_flops(jax.jit(unrolled).lower(c, xs)) == pytest.approx(matmuls, rel=0.01)
    assert mfu.lowered_flops(jax.jit(scanned).lower(c, xs)) < matmuls / 3  # the reason for unrolling


def test_model_step_flops_grow_with_frames_when_unrolled():
    """The unrolled train step of the real model: FLOPs per device scale with the clip length."""
    model, params = tiny_model()
    optimizer = optax.adam(1e-3)
    state = state_lib.create_train_state(params, optimizer)
    mesh = mesh_lib.make_mesh()
    rep, bat = mesh_lib.replicated(mesh), mesh_lib.batch_sharding(mesh)
    step = steps.jit_train_step(model.clone(time_loop="python"), optimizer, ("flow",), 1, None, rep, bat)
    counts = {}
    for frames in (3, 6):
        video, boxes = tiny_inputs(batch=2, frames=frames)
        batch = {"video": video, "boxes": boxes, "flow": jnp.zeros_like(video)}
        counts[frames] = mfu.per_device_step_flops(step, state, batch)
    assert counts[3] > 0
    assert counts[6] == pytest.approx(2 * counts[3], rel=0.1)
