"""The video model: masked fixed-size buffer == the original's growing buffer; windows; sliced evaluation;
scan == unrolled loop; remat; bf16; conditioning variants; real-size shapes and parameter counts."""


import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from model_fixtures import load_config, tiny_inputs, tiny_model

from model import build
from model.predictor import TimeSpaceTransformerBlock2
from model.slots import CoordinateEncoderStateInit, SlotAttention


def growing_buffer_reference(model, params, video, boxes, window=None, slice_size=None):
    """The original's Python loop: a list of corrected slots, optionally cut to the last `window` entries,
    or restarted at every `slice_size` frames (only the predicted slots carry over)."""
    cfg = model.recurrence
    b, t = video.shape[:2]
    feats = jax.jit(model.encoder.apply)({"params": params["FrameEncoder_0"]}, video.reshape(b * t, *video.shape[2:]))
    feats = feats.reshape(b, t, *feats.shape[1:])
    init = CoordinateEncoderStateInit(model.slot_size, model.initializer.hidden_size)
    slots = jax.jit(init.apply, static_argnums=2)({"params": params["CoordinateEncoderStateInit_0"]}, boxes, b)
    sa = SlotAttention(cfg.num_iterations, cfg.corrector_qkv)
    tstb = TimeSpaceTransformerBlock2(cfg.predictor_heads, cfg.predictor_qkv, cfg.predictor_mlp)
    rec = params["Recurrence"]
    correct = jax.jit(lambda s, x: sa.apply({"params": rec["SlotAttention_0"]}, s, x))
    predict = jax.jit(lambda c, m: tstb.apply({"params": rec["TimeSpaceTransformerBlock2_0"]}, c, m,
                                              jnp.ones(m.shape[1], bool)))
    memory, states, preds = [], [], []
    for i in range(t):
        if slice_size and i % slice_size == 0:
            memory = []
        corrected = correct(slots, feats[:, i])
        memory = (memory + [corrected])[-window:] if window else memory + [corrected]
        slots = predict(corrected, jnp.stack(memory, axis=1))
        states.append(corrected)
        preds.append(slots)
    return jnp.stack(states, 1), jnp.stack(preds, 1)


def assert_close(a, b, atol=2e-6):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=atol, rtol=0)


def run(model, params, video, boxes, **kw):
    return jax.jit(lambda p, v, b: model.apply({"params": p}, v, b, **kw))(params, video, boxes)


def assert_grads_close(a, b, rel=1e-4):
    """Float32 gradients through T steps, fused differently by XLA: compare relative to the global norm."""
    diff = jax.tree_util.tree_map(lambda x, y: x - y, a, b)
    assert float(optax.global_norm(diff)) <= rel * float(optax.global_norm(b))


@pytest.mark.parametrize("memory_size", [0, 24])  # 0: L = T; 24: rows beyond T stay masked
def test_fixed_masked_buffer_equals_growing_buffer(memory_size):
    model, params = tiny_model(recurrence={"memory_size": memory_size})
    video, boxes = tiny_inputs()
    out = run(model, params, video, boxes)
    states, preds = growing_buffer_reference(model, params, video, boxes)
    assert_close(out["states"], states)
    assert_close(out["states_pred"], preds)


def test_sliding_window_buffer():
    model, params = tiny_model(recurrence={"memory_size": 3})
    video, boxes = tiny_inputs()
    out = run(model, params, video, boxes)
    states, preds = growing_buffer_reference(model, params, video, boxes, window=3)
    assert_close(out["states_pred"], preds)
    full, _ = tiny_model()  # same params, whole-clip buffer: differs once the window is exceeded
    whole = run(full, params, video, boxes)
    assert np.abs(np.asarray(whole["states_pred"][:, 3:] - out["states_pred"][:, 3:])).max() > 1e-4
    assert_close(whole["states_pred"][:, :3], out["states_pred"][:, :3])


@pytest.mark.parametrize("slice_size", [3, 4])
def test_sliced_evaluation_restarts_the_buffer(slice_size):
    model, params = tiny_model()
    video, boxes = tiny_inputs()
    out = run(model, params, video, boxes, slice_size=slice_size)
    states, preds = growing_buffer_reference(model, params, video, boxes, slice_size=slice_size)
    assert_close(out["states"], states)
    assert_close(out["states_pred"], preds)
    unsliced = run(model, params, video, boxes)
    assert_close(unsliced["states_pred"][:, :slice_size], out["states_pred"][:, :slice_size])
    assert np.abs(np.asarray(unsliced["states_pred"][:, slice_size + 1:] - out["states_pred"][:, slice_size + 1:])
                  ).max() > 1e-4


def test_scan_equals_unrolled_loop_and_remat():
    model, params = tiny_model()
    video, boxes = tiny_inputs(frames=4)
    loss = lambda m: lambda p: jnp.sum(m.apply({"params": p}, video, boxes)["flow"] ** 2)
    ref_out = run(model, params, video, boxes)
    ref_grad = jax.jit(jax.grad(loss(model)))(params)
    for variant in (dict(time_loop="python"), dict(remat=True)):
        other, _ = tiny_model(**variant)
        out = run(other, params, video, boxes)
        for key in ("states", "states_pred", "flow", "alphas"):
            assert_close(out[key], ref_out[key])
        assert_grads_close(jax.jit(jax.grad(loss(other)))(params), ref_grad)


def test_padded_slots_stay_copies_of_the_background_slot():
    model, params = tiny_model()
    video, boxes = tiny_inputs()  # box 3 is all zeros -> slot 3 duplicates slot 0
    out = run(model, params, video, boxes)
    for key in ("states", "states_pred"):
        np.testing.assert_array_equal(np.asarray(out[key][:, :, 3]), np.asarray(out[key][:, :, 0]))
    assert not (np.asarray(out["segmentations"]) == 3).any()  # exact ties resolve to the lowest index


def test_bfloat16_compute_float32_params():
    model, params = tiny_model(dtype="bfloat16")
    assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(params))
    video, boxes = tiny_inputs()
    out = run(model, params, video, boxes)
    assert out["states"].dtype == jnp.bfloat16
    ref, _ = tiny_model()
    ref_out = run(ref, params, video, boxes)
    assert np.abs(np.asarray(out["flow"], np.float32) - np.asarray(ref_out["flow"])).max() < 0.05


def conditioning_boxes(other_extent=False, other_centre=False, later_frames=False):
    """(B=2, T=6, K=3, 4) boxes; object 0's first-frame box [0.25, 0.25, 0.75, 0.75] (centre (0.5, 0.5)) can be
    given another extent with the same centre (exact in binary), or another centre; later frames can move."""
    boxes = np.zeros((2, 6, 3, 4), np.float32)
    boxes[:, :, 0] = [0.25, 0.25, 0.75, 0.75]
    boxes[:, :, 1] = [0.5, 0.125, 0.875, 0.5]
    if other_extent:
        boxes[:, 0, 0] = [0.375, 0.125, 0.625, 0.875]
    if other_centre:
        boxes[:, 0, 0] = [0.125, 0.25, 0.625, 0.75]
    if later_frames:
        boxes[:, 1:] = boxes[:, 1:][..., ::-1]
    return jnp.asarray(boxes)


@pytest.mark.parametrize("conditioning", ["boxes", "center_of_mass", "none"])
def test_conditioning_uses_what_it_says(conditioning):
    """boxes: the first-frame boxes, extent included; center_of_mass: only their centres; none: no boxes at all.
    Later frames' boxes never matter (the original conditions on frame 0 only)."""
    model, params = tiny_model(conditioning)
    video, _ = tiny_inputs()
    states = lambda **kw: np.asarray(run(model, params, video, conditioning_boxes(**kw))["states"])
    base = states()
    assert base.shape == (2, 6, 4, 32)
    np.testing.assert_array_equal(states(later_frames=True), base)
    extent, centre = states(other_extent=True), states(other_centre=True)
    if conditioning == "boxes":
        assert not np.allclose(extent, base) and not np.allclose(centre, base)
    elif conditioning == "center_of_mass":
        np.testing.assert_array_equal(extent, base)
        assert not np.allclose(centre, base)
        assert params["CoordinateEncoderStateInit_0"]["MLP_0"]["dense_mlp_0"]["kernel"].shape[0] == 2
    else:
        np.testing.assert_array_equal(extent, base)
        np.testing.assert_array_equal(centre, base)
        assert "LearnedStateInit_0" in params and not np.allclose(base[:, :, 1], base[:, :, 2])  # slots differ


REAL = {  # config file:variant: (trainable params = the original's count minus its fixed coordinate grids, resolution)
    "statm_savi:movi_a": (961_572 - 8_320, 64),
    "savi:movi_a": (895_268 - 8_320, 64),
    "statm_savi_pp:movi_e": (23_264_389 - 640, 128),
    "savi_pp:movi_e": (23_132_165 - 640, 128),
}


@pytest.mark.parametrize("name", sorted(REAL))
def test_real_sizes_shapes_and_parameter_counts(name):
    count, res = REAL[name]
    config = load_config(name)
    cfg, num_slots, k = config.model, config.num_slots, config.max_instances
    assert config.data.resolution == res
    model = build.build_model(cfg, num_slots, config.conditioning_key)
    params = jax.eval_shape(lambda: build.init_params(model, 1, 6, res, k))
    assert build.count_params(params) == count
    for frames in (6, 24):  # train clip, eval clip
        video = jax.ShapeDtypeStruct((2, frames, res, res, 3), jnp.float32)
        boxes = jax.ShapeDtypeStruct((2, frames, k, 4), jnp.float32)
        out = jax.eval_shape(lambda p, v, b: model.apply({"params": p}, v, b), params, video, boxes)  # noqa: B023
        assert out["states"].shape == out["states_pred"].shape == (2, frames, num_slots, 128)
        assert out["alphas"].shape == (2, frames, num_slots, res, res, 1)
        assert out["segmentations"].shape == (2, frames, res, res, 1)
        for target, c in cfg.decoder.targets.items():
            assert out[target].shape == (2, frames, res, res, c)


def test_real_small_model_train_step_compiles():
    model = build.build_model(load_config("statm_savi:movi_a").model, 11)
    params = jax.eval_shape(lambda: build.init_params(model, 1, 6, 64, 10))
    video = jax.ShapeDtypeStruct((1, 6, 64, 64, 3), jnp.float32)
    boxes = jax.ShapeDtypeStruct((1, 6, 10, 4), jnp.float32)
    loss = lambda p, v, b: jnp.sum(model.apply({"params": p}, v, b)["flow"])
    compiled = jax.jit(jax.value_and_grad(loss)).lower(params, video, boxes).compile()
    # The decoder runs outside the scan, so its cost is counted in full: its last layer alone (5x5, 64 -> 64
    # channels at 64x64, for 11 slots x 6 frames) is 55 GFLOPs forward, about twice that backward.
    last_layer = 2 * 25 * 64 * 64 * 64 * 64 * 11 * 6
    assert compiled.cost_analysis()["flops"] >= 3 * last_layer
