"""The compiled train chain (data/fused.py) against the op-by-op NumPy chain it replaces."""

import numpy as np
import pytest

from data import fused, pipeline
from data import transforms as T


def numpy_chain(raw, top, left, ch, cw, out_h, out_w, log_depth):
    f = T.VideoFromRecord().map(raw)
    f = {k: (v[:, top : top + ch, left : left + cw] if k in T.SPATIAL_KEYS else v) for k, v in f.items()}
    T._resize_features(f, out_h, out_w)
    if (ch, cw) != raw["video"].shape[1:3]:
        f["boxes"] = T.crop_or_pad_boxes(f["boxes"], top, left, ch, cw, *raw["video"].shape[1:3])
    return T.FlowToRGB(codes=True).map(T.TransformDepth("log_plus" if log_depth else "none").map(f))


def raw_clips(data_dir, k=10):
    source = pipeline.open_split(data_dir, "train", k)
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
        assert a.keys() == b.keys()
        for key in ("video", "segmentations", "boxes", "padding_mask", "shape"):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
            assert a[key].dtype == b[key].dtype
        np.testing.assert_allclose(a["depth"], b["depth"], rtol=1e-6, atol=1e-6)  # libm vs NumPy log: 1 ulp
        assert a["flow"].dtype == b["flow"].dtype == np.uint8
        diff = np.abs(a["flow"].astype(np.int32) - b["flow"])
        assert diff.max() <= 1  # atan2 rounding can move a colour code by one
        flips += int((diff > 0).sum())
        total += diff.size
    assert flips / total < 1e-3, flips / total


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


def test_train_pipeline_fused_and_numpy_agree(converted_sample):
    spec = dict(resolution=128, max_instances=10, train_crop="random_resized_crop", depth_transform="log_plus")
    src = pipeline.open_split(converted_sample, "train", 10)
    for fast, slow in zip(pipeline.train_ops(pipeline.PreprocessSpec(**spec)),
                          pipeline.train_ops(pipeline.PreprocessSpec(**spec, fused=False))[:2], strict=False):
        assert type(fast) is type(slow)  # same decode/window/sparse-to-dense front
    batch = next(pipeline.train_iterator(pipeline.train_dataset(src, pipeline.PreprocessSpec(**spec), 0), 2))
    assert batch["video"].shape == (2, 6, 128, 128, 3) and batch["flow"].dtype == np.uint8


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
