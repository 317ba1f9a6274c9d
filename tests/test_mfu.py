"""MFU: the peak table, and FLOPs counted with the time loop unrolled (XLA counts a scan body once)."""

import jax
import jax.numpy as jnp
import pytest

from configs import tiny
from trainer import mfu, program


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


def predictor_heavy_config(frames: int):
    """Encoder and decoder of a few FLOPs, a wide predictor MLP: the recurrence is nearly the whole step, so a
    count that sees the scanned time loop once misses nearly (T-1)/T of it."""
    c = tiny.get_config()
    m = c.model
    m.slot_size, m.init_hidden_size = 64, 16
    m.encoder.update(cnn_features=(4,), cnn_kernel_size=1, cnn_strides=(1,), pos_mlp_hidden=4)
    m.recurrence.update(corrector_qkv=16, predictor_heads=1, predictor_qkv=16, predictor_mlp=2048)
    m.decoder.update(resolution=4, features=(4,), kernel_size=1, strides=(1,), transpose=(False,))
    m.decoder.targets = {"flow": 3}
    c.max_instances, c.data.resolution, c.data.train_frames = SLOTS - 1, 4, frames
    assert c.num_slots == SLOTS
    return c


SLOTS, BATCH = 8, 2


def test_step_flops_count_every_frame_of_the_recurrence():
    """The trainer's MFU numerator: it must count the time loop T times (XLA counts a scan's body once)."""
    counts = {t: mfu.step_flops(program.from_config(predictor_heavy_config(t)), BATCH) for t in (3, 6)}
    m = predictor_heavy_config(3).model
    # The predictor MLP alone, forward and backward (3x the forward), per frame whose prediction feeds the loss
    # (the last frame's prediction is unused, and XLA drops it). A count that sees the scan body once stays far
    # below both bounds: it barely grows with the frames.
    per_frame = 3 * 2 * 2 * m.slot_size * m.recurrence.predictor_mlp * BATCH * SLOTS
    assert counts[6] - counts[3] >= 3 * per_frame
    assert counts[6] >= (6 - 1) * per_frame
