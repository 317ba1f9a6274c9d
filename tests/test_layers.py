"""PhaseConvTranspose against flax's nn.ConvTranspose: same parameters, same outputs and gradients."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from model_fixtures import tiny_inputs, tiny_model

from model import build
from model.layers import CNN, PhaseConvTranspose


# Odd and even kernels, kernel < stride (phases with no tap), stride 1, non-square and odd inputs.
@pytest.mark.parametrize("kernel,stride,hw", [(3, 1, (5, 7)), (4, 1, (8, 8)), (1, 2, (8, 8)), (4, 2, (8, 8)),
                                              (5, 2, (5, 7)), (3, 2, (8, 8)), (5, 3, (5, 7))])
def test_phase_conv_transpose_equals_flax(kernel, stride, hw):
    x = jax.random.normal(jax.random.key(1), (2, *hw, 6))
    ref, ours = nn.ConvTranspose(5, (kernel, kernel), (stride, stride), padding="SAME"), PhaseConvTranspose(
        5, kernel, stride)
    params = ref.init(jax.random.key(0), x)
    same_init = ours.init(jax.random.key(0), x)
    assert jax.tree.structure(params) == jax.tree.structure(same_init)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(same_init), strict=True):
        np.testing.assert_array_equal(a, b)  # same names, shapes, initialisers and RNG streams
    params = jax.tree.map(lambda p: p + jax.random.normal(jax.random.key(2), p.shape), params)  # non-zero bias

    def loss(module):
        return lambda p, x: jnp.sum(jnp.sin(module.apply(p, x)))

    y_ref, y = ref.apply(params, x), ours.apply(params, x)
    assert y.shape == y_ref.shape == (2, hw[0] * stride, hw[1] * stride, 5)
    np.testing.assert_allclose(y, y_ref, atol=2e-5, rtol=1e-5)
    g_ref, g = jax.grad(loss(ref), argnums=(0, 1))(params, x), jax.grad(loss(ours), argnums=(0, 1))(params, x)
    for a, b in zip(jax.tree.leaves(g_ref), jax.tree.leaves(g), strict=True):
        np.testing.assert_allclose(b, a, atol=1e-4, rtol=1e-4)


def test_cnn_rejects_unknown_conv_transpose():
    x = jnp.zeros((1, 4, 4, 3))
    with pytest.raises(ValueError, match="conv_transpose='cudnn'"):
        CNN((4,), 3, (2,), (True,), conv_transpose="cudnn").init(jax.random.key(0), x)


def test_model_with_phases_equals_lax():
    """The whole decoder switch: same parameter tree, outputs equal up to float rounding."""
    model, params = tiny_model()
    model = model.clone(decoder=model.decoder.clone(conv_transpose="lax"))  # "auto" is "phases" on CPU
    video, boxes = tiny_inputs()
    phased = model.clone(decoder=model.decoder.clone(conv_transpose="phases"))
    shapes = jax.eval_shape(lambda: phased.init(jax.random.key(0), video, boxes)["params"])
    assert jax.tree.map(lambda s: s.shape, shapes) == jax.tree.map(jnp.shape, params)
    a, b = model.apply({"params": params}, video, boxes), phased.apply({"params": params}, video, boxes)
    for key in ("alphas", "flow"):
        np.testing.assert_allclose(b[key], a[key], atol=1e-5)


def test_auto_conv_transpose_is_phases_on_cpu_only():
    assert build.resolve_conv_transpose("auto", "cpu") == "phases"
    assert build.resolve_conv_transpose("auto", "gpu") == "lax"
    assert build.resolve_conv_transpose("lax", "cpu") == "lax"  # an explicit choice stands
    assert tiny_model()[0].decoder.conv_transpose == "phases"  # what the CPU tests and the demo here run
