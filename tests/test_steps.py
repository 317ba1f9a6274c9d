"""Train-step algebra: gradient accumulation equals the full batch; the first update has learning rate 0."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
from model_fixtures import tiny_inputs, tiny_model

from data import batch as schema_lib
from data.pipeline import transforms as T
from trainer import state as state_lib
from trainer import steps

FLOAT_FLOW = schema_lib.Schema((schema_lib.VIDEO, schema_lib.BOXES, schema_lib.FLOW))


def batch(seed=0):
    video, boxes = tiny_inputs(batch=4, frames=4, seed=seed)
    flow = jnp.asarray(np.random.default_rng(seed).random((4, 4, 16, 16, 3), np.float32))
    return {"video": video, "boxes": boxes, "flow": flow}


def run_steps(grad_accum_steps, n=2):
    model, params = tiny_model()
    optimizer = state_lib.make_optimizer(state_lib.learning_rate_schedule(1e-3, 1, 10), 0.05)
    st = state_lib.create_train_state(params, optimizer)
    step = jax.jit(functools.partial(steps.train_step, model=model, optimizer=optimizer, targets=("flow",),
                                     schema=FLOAT_FLOW, grad_accum_steps=grad_accum_steps))
    out = []
    for i in range(n):
        st, m = step(st, batch(i))
        out.append(m)
    return st, out, params


def test_gradient_accumulation_equals_the_full_batch():
    full, m_full, _ = run_steps(1)
    accum, m_accum, _ = run_steps(2)
    for a, b in zip(m_full, m_accum, strict=True):
        assert abs(float(a["loss"]) - float(b["loss"])) <= 1e-5 * float(a["loss"])
    diff = optax.global_norm(jax.tree_util.tree_map(lambda x, y: x - y, full.params, accum.params))
    assert float(diff) <= 1e-5 * float(optax.global_norm(full.params))
    assert int(full.step) == int(accum.step) == 2


def test_first_update_has_learning_rate_zero():
    st, metrics, params = run_steps(1, n=1)
    jax.tree_util.tree_map(np.testing.assert_array_equal, st.params, params)  # lr(0) = 0: nothing moves
    assert float(metrics[0]["grad_norm"]) > 0
    schedule = state_lib.learning_rate_schedule(2e-4, 2500, 100_000)
    assert float(schedule(0)) == 0.0 and float(schedule(2500)) == np.float32(2e-4)
    assert float(schedule(100_000)) < 1e-12


def test_loss_is_sum_over_pixels_mean_over_videos():
    out = {"flow": jnp.ones((2, 3, 4, 4, 3))}
    b = {"flow": jnp.zeros((2, 3, 4, 4, 3))}
    total, per = steps.reconstruction_loss(out, b, ("flow",), FLOAT_FLOW)
    assert float(total) == float(per["flow"]) == 3 * 4 * 4 * 3


def test_uint8_flow_codes_give_the_same_loss_as_float_flow():
    """Train batches carry flow as uint8 codes, as their schema states: the loss must equal the one on
    flow_to_rgb's float32 values."""
    model, params = tiny_model()
    video, boxes = tiny_inputs(batch=2, frames=3, seed=4)
    codes = T.flow_to_rgb_codes(np.random.default_rng(4).normal(0, 4, (2, 3, 16, 16, 2)).astype(np.float32))
    out = model.apply({"params": params}, video, boxes)
    train = schema_lib.train_schema(("flow",))
    as_codes = jax.jit(lambda o, b: steps.reconstruction_loss(o, b, ("flow",), train)[0])(out, {"flow": codes})
    floats = schema_lib.codes_to_float(codes)  # NumPy's conversion
    as_float = jax.jit(lambda o, b: steps.reconstruction_loss(o, b, ("flow",), FLOAT_FLOW)[0])(out, {"flow": floats})
    assert float(as_codes) == float(as_float) and float(as_codes) > 0
