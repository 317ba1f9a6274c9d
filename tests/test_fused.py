"""The compiled train chain (data/pipeline/fused.py) against the op-by-op NumPy chain it replaces."""

import grain
import numpy as np
import pytest

from data.pipeline import datasets, fused
from data.pipeline import transforms as T


def numpy_chain(raw, top, left, ch, cw, out_h, out_w, log_depth):
    f = T.VideoFromRecord().map(raw)
    f = {k: (v[:, top : top + ch, left : left + cw] if k in T.SPATIAL_KEYS else v) for k, v in f.items()}
    T._resize_features(f, out_h, out_w)
    if (ch, cw) != raw["video"].shape[1:3]:
        f["boxes"] = T.crop_or_pad_boxes(f["boxes"], top, left, ch, cw, *raw["video"].shape[1:3])
    return T.FlowToRGB(codes=True).map(T.TransformDepth("log_plus" if log_depth else "none").map(f))


def raw_clips(data_dir, k=10):
    source = datasets.open_split(data_dir, "train", k)
    for i in range(len(source)):
        yield T.SparseToDenseAnnotation(k).map(T.DecodeStridedWindow(6).random_map(source[i], np.random.default_rng(i)))


@pytest.mark.parametrize("case", ["crop", "resize_small_64", "identity"])
def test_fused_equals_numpy_chain(converted_sample, case):
    rng = np.random.default_rng(0)
    flips = total = 0
    for raw in raw_clips(converted_sample):
        if case == "crop":
            top, left, ch, cw = T.sample_distorted_crop(rng, 128, 128, 0.75, (3 / 4, 4 / 3), (0.08, 1.0))
            out = (128, 128)
        else:
            top, left, ch, cw = 0, 0, 128, 128
            out = (64, 64) if case == "resize_small_64" else (128, 128)
        a = fused.crop_resize_to_model(raw, top, left, ch, cw, *out, log_depth=case != "identity")
        b = numpy_chain(raw, top, left, ch, cw, *out, log_depth=case != "identity")
        assert set(a) == {"video", "boxes", "flow", "depth"}  # what training reads; no segmentations
        flips += assert_train_values_agree(a, b)
        total += a["flow"].size
    assert flips / total < 1e-3, flips / total


def assert_train_values_agree(a, b) -> int:
    """video and boxes identical; log depth within the last-bit libm/NumPy difference; flow colour codes off by
    at most one (atan2 rounding). Returns how many codes differ."""
    for key in ("video", "boxes"):
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        assert a[key].dtype == b[key].dtype
    np.testing.assert_allclose(a["depth"], b["depth"], rtol=1e-6, atol=1e-6)
    assert a["flow"].dtype == b["flow"].dtype == np.uint8
    diff = np.abs(a["flow"].astype(np.int32) - b["flow"])
    assert diff.max() <= 1
    return int((diff > 0).sum())


def test_fused_flow_colours_on_random_flow():
    """Dense random flows exercise every hue sector; colours agree with NumPy's on >= 99.9% of values."""
    rng = np.random.default_rng(1)
    flow2 = rng.normal(0, 20, (2, 3, 32, 32)).astype(np.float32)
    flow2[:, 0, :4, :4] = 0.0  # no motion: white
    out = np.empty((3, 32, 32, 3), np.uint8)
    fused._flow_rgb(flow2, np.float32(50.0 / (32**2.0 * 2) ** 0.5), out)
    ref = T.flow_to_rgb_codes(np.moveaxis(flow2, 0, -1))
    diff = np.abs(out.astype(np.int32) - ref)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3
    np.testing.assert_array_equal(out[0, :4, :4], 255)


def apply_chain(ops, record, seed):
    """A chain's ops on one record, the k-th random op drawing from default_rng([seed, k]) in both chains."""
    x, k = record, 0
    for op in ops:
        if isinstance(op, grain.transforms.RandomMap):
            x, k = op.random_map(x, np.random.default_rng([seed, k])), k + 1
        else:
            x = op.map(x)
    return x


def test_train_pipeline_fused_and_numpy_chains_agree_on_the_same_elements(converted_sample):
    """The SAVi++ train chain (window, crop, log depth, flow codes) both ways, element by element, with the same
    window and crop draws: the same batch keys and the same values (up to the documented last-bit rounding)."""
    spec = dict(resolution=64, max_instances=10, train_crop="random_resized_crop", depth_transform="log_plus",
                targets=("depth", "flow"))
    fast = datasets.train_ops(datasets.PreprocessSpec(**spec))
    slow = datasets.train_ops(datasets.PreprocessSpec(**spec, fused=False))
    src = datasets.open_split(converted_sample, "train", 10)
    flips = total = 0
    crops = set()
    for i in range(len(src)):
        for seed in range(3):
            a, b = apply_chain(fast, src[i], seed), apply_chain(slow, src[i], seed)
            assert a.keys() == b.keys() == {"video", "boxes", "flow", "depth"}
            flips += assert_train_values_agree(a, b)
            total += a["flow"].size
            crops.add(a["boxes"].tobytes())
    assert len(crops) == 3 * len(src)  # every draw took another crop: the crops were exercised
    assert flips / total < 1e-3, flips / total


def test_vectorised_log_plus_within_two_ulp_of_numpy():
    rng = np.random.default_rng(2)
    depth = np.concatenate([rng.uniform(0, 1, 5000), rng.uniform(0, 100, 5000), rng.uniform(0, 1e6, 2000),
                            [0.0, 0.41421356, 1.0, 3.0, 1e-8]]).astype(np.float32).reshape(1, -1, 1)
    out = depth.copy()
    fused._log_plus(out, np.empty(out.shape, np.int32))
    ref = np.log(np.float32(1.0) + depth)
    ulp = np.abs(out.view(np.int32).astype(np.int64) - ref.view(np.int32).astype(np.int64))
    assert ulp.max() <= 2, (ulp.max(), depth.ravel()[ulp.ravel().argmax()])


def test_log_plus_falls_back_outside_positive_normals():
    depth = np.array([[[-1.0], [2.0], [np.nan]]], np.float32)
    out = depth.copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        fused._log_plus(out, np.empty(out.shape, np.int32))
        ref = np.log(np.float32(1.0) + depth)
    np.testing.assert_array_equal(out, ref)
