import numpy as np
import pytest
from savi_ops import TemporalRandomStridedWindow

from data.batch import codes_to_float
from data.pipeline import transforms as T


def test_resize_128_to_64_is_block_mean_and_odd_pick():
    rng = np.random.default_rng(0)
    x = rng.random((2, 128, 128, 3)).astype(np.float32)
    seg = rng.integers(0, 11, (2, 128, 128)).astype(np.int32)
    f = T.ResizeSmall(64).map({"video": x, "segmentations": seg, "flow": np.ones((2, 128, 128, 2), np.float32)})
    np.testing.assert_allclose(f["video"], x.reshape(2, 64, 2, 64, 2, 3).mean(axis=(2, 4)), atol=1e-6)
    np.testing.assert_array_equal(f["segmentations"], seg[:, 1::2, 1::2])
    np.testing.assert_array_equal(f["flow"], np.full((2, 64, 64, 2), 0.5, np.float32))  # pixels shrink by 2


def test_resize_small_keeps_aspect_and_leaves_boxes():
    x = np.zeros((1, 96, 128, 3), np.float32)
    boxes = np.array([[[0.1, 0.2, 0.3, 0.4]]], np.float32)
    f = T.ResizeSmall(48).map({"video": x, "boxes": boxes})
    assert f["video"].shape == (1, 48, 64, 3)
    np.testing.assert_array_equal(f["boxes"], boxes)


def test_bilinear_matches_tf_half_pixel_upsampling():
    # TF's half-pixel bilinear 2 -> 4: samples at -0.25, 0.25, 0.75, 1.25 -> clamped to the edges.
    x = np.array([0.0, 1.0], np.float32).reshape(1, 1, 2, 1)
    out = T.resize_bilinear(np.repeat(x, 2, axis=1), 2, 4)[0, 0, :, 0]
    np.testing.assert_allclose(out, [0.0, 0.25, 0.75, 1.0])


def test_flow_to_rgb_known_colours():
    flow = np.zeros((1, 4, 4, 2), np.float32)
    np.testing.assert_array_equal(T.flow_to_rgb(flow), np.ones((1, 4, 4, 3), np.float32))  # no motion: white
    flow[..., 1] = 100.0  # large Δcol: hue 0.75 -> saturated (0.5, 0, 1) after quantisation
    rgb = T.flow_to_rgb(flow)[0, 0, 0]
    np.testing.assert_allclose(rgb, [np.floor(0.5 * 255.5) / 255, 0.0, 1.0], atol=1e-7)
    assert (np.round(T.flow_to_rgb(np.random.default_rng(0).normal(0, 3, (2, 8, 8, 2))) * 255) % 1 == 0).all()


def test_flow_codes_become_flow_to_rgb_floats_exactly_on_the_device():
    """Train batches carry flow_to_rgb's uint8 codes; the jitted conversion must give its float32 bits."""
    import jax
    import jax.numpy as jnp

    flow = np.random.default_rng(3).normal(0, 5, (2, 3, 16, 16, 2)).astype(np.float32)
    codes = T.flow_to_rgb_codes(flow)
    assert codes.dtype == np.uint8 and len(np.unique(codes)) > 50
    on_device = np.asarray(jax.jit(codes_to_float)(jnp.asarray(codes)))
    assert on_device.dtype == np.float32
    np.testing.assert_array_equal(on_device.view(np.int32), T.flow_to_rgb(flow).view(np.int32))


def test_strided_window_picks_non_overlapping_windows_uniformly():
    f = {"video": np.arange(24)[:, None, None, None] * np.ones((24, 2, 2, 3)), "boxes": np.zeros((24, 3, 4))}
    starts = [int(TemporalRandomStridedWindow(6).random_map(f, np.random.default_rng(s))["video"][0, 0, 0, 0])
              for s in range(400)]
    values, counts = np.unique(starts, return_counts=True)
    assert values.tolist() == [0, 6, 12, 18] and counts.min() > 70
    short = TemporalRandomStridedWindow(10).random_map(f, np.random.default_rng(1))
    assert short["video"].shape[0] == 10 and short["boxes"].shape[0] == 10


def test_random_resized_crop_distribution_and_consistency():
    h = w = 128
    crops = [T.sample_distorted_crop(np.random.default_rng(s), h, w, 0.75, (3 / 4, 4 / 3), (0.08, 1.0))
             for s in range(300)]
    areas = np.array([ch * cw / (h * w) for _, _, ch, cw in crops])
    aspects = np.array([cw / ch for _, _, ch, cw in crops])
    assert areas.min() >= 0.75 and areas.max() <= 1.0 and np.ptp(areas) > 0.15
    assert aspects.min() >= 0.74 and aspects.max() <= 1.34
    assert all(0 <= t and 0 <= left and t + ch <= h and left + cw <= w for t, left, ch, cw in crops)
    # Every key gets the same crop: a segmentation drawn from the video stays aligned after cropping.
    seg = np.zeros((2, h, w), np.int32)
    seg[:, 40:80, 30:90] = 3
    video = (seg[..., None] == 3).astype(np.float32) * np.ones(3, np.float32)
    boxes = np.array([[[40 / h, 30 / w, 80 / h, 90 / w]]] * 2, np.float32)
    out = T.RandomResizedCrop(64, 64).random_map({"video": video, "segmentations": seg, "boxes": boxes,
                                                   "flow": np.ones((2, h, w, 2), np.float32)},
                                                  np.random.default_rng(3))
    assert out["video"].shape == (2, 64, 64, 3) and out["segmentations"].shape == (2, 64, 64)
    ys, xs = np.nonzero(out["segmentations"][0] == 3)
    b = out["boxes"][0, 0] * 64
    assert abs(ys.min() - b[0]) <= 1 and abs(ys.max() + 1 - b[2]) <= 1
    assert abs(xs.min() - b[1]) <= 1 and abs(xs.max() + 1 - b[3]) <= 1
    assert (out["flow"][..., 0] >= 0.5).all() and (out["flow"][..., 0] <= 0.5 / 0.75 + 1e-6).all()


def test_crop_or_pad_boxes_notrack():
    boxes = np.array([[[0.0, 0.0, 0.1, 0.1], [0.5, 0.5, 0.9, 0.9], [0, 0, 0, 0]]], np.float32)
    out = T.crop_or_pad_boxes(boxes, top=64, left=64, height=64, width=64, h=128, w=128)
    np.testing.assert_array_equal(out[0, 0], 0)  # outside the crop -> NOTRACK
    np.testing.assert_allclose(out[0, 1], [0.0, 0.0, 0.8, 0.8], atol=1e-6)
    np.testing.assert_array_equal(out[0, 2], 0)  # NOTRACK stays NOTRACK


def test_sparse_to_dense_truncates_and_pads():
    boxes = np.arange(2 * 23 * 4, dtype=np.float32).reshape(2, 23, 4)
    seg = np.array([[[0, 5, 11, 23]]] * 2, np.int32)
    f = T.SparseToDenseAnnotation(10).map({"boxes": boxes, "segmentations": seg})
    assert f["boxes"].shape == (2, 10, 4) and f["segmentations"][0, 0].tolist() == [0, 5, 0, 0]
    f = T.SparseToDenseAnnotation(30).map({"boxes": boxes, "segmentations": seg})
    assert f["boxes"].shape == (2, 30, 4) and (f["boxes"][:, 23:] == 0).all()


def test_bad_depth_transform():
    with pytest.raises(ValueError, match="depth transform 'log'"):
        T.TransformDepth("log")
