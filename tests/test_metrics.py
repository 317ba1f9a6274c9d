"""Metrics against plain brute-force references and hand-made cases with known answers."""

import itertools

import numpy as np
import pytest

from trainer import metrics


def brute_force_ari(true, pred, valid, ignore_background):
    """Pair counting over every pair of pixels (Hubert & Arabie), as a definition, not an optimisation."""
    keep = valid.astype(bool)
    if ignore_background:
        keep &= true != 0
    t, p = true[keep], pred[keep]
    n = len(t)
    same_t = same_p = same_both = 0
    for i, j in itertools.combinations(range(n), 2):
        st, sp = t[i] == t[j], p[i] == p[j]
        same_t += st
        same_p += sp
        same_both += st and sp
    pairs = n * (n - 1) / 2
    expected = same_t * same_p / pairs if pairs else 0.0
    max_index = (same_t + same_p) / 2
    if max_index == expected:
        return 1.0
    return (same_both - expected) / (max_index - expected)


def brute_force_miou(true, pred, k, valid):
    ious = []
    for obj in range(1, k + 1):
        g = (true == obj) & valid.astype(bool)
        if not g.any():
            continue
        p = (pred == obj) & valid.astype(bool)
        ious.append((g & p).sum() / (g | p).sum())
    return (np.mean(ious) if ious else 0.0), bool(ious)


@pytest.mark.parametrize("seed", range(6))
def test_against_brute_force(seed):
    rng = np.random.default_rng(seed)
    b, t, h, w, k, s = 2, 2, 4, 5, 4, 6
    true = rng.integers(0, k + 1, (b, t, h, w))
    pred = rng.integers(0, s, (b, t, h, w))
    if seed % 2:  # make it correlated, so scores are not all ~0
        pred = np.where(rng.random(true.shape) < 0.7, true, pred)
    valid = (rng.random((b, t, h, w)) < 0.9).astype(np.uint8)
    m = metrics.video_metrics(true, pred, s, k, valid)
    for i in range(b):
        assert float(m["ari"][i]) == pytest.approx(brute_force_ari(true[i], pred[i], valid[i], False), abs=1e-5)
        assert float(m["fg_ari"][i]) == pytest.approx(brute_force_ari(true[i], pred[i], valid[i], True), abs=1e-5)
        miou, has = brute_force_miou(true[i], pred[i], k, valid[i])
        assert float(m["miou"][i]) == pytest.approx(miou, abs=1e-6) and bool(m["has_objects"][i]) == has


def test_known_answers():
    true = np.array([[[[0, 0, 1, 1], [0, 0, 2, 2]]]])  # (1, 1, 2, 4)
    perfect_permuted = np.array([[[[3, 3, 0, 0], [3, 3, 5, 5]]]])
    m = metrics.video_metrics(true, perfect_permuted, 6, 2)
    assert float(m["ari"][0]) == pytest.approx(1.0) and float(m["fg_ari"][0]) == pytest.approx(1.0)
    assert float(m["miou"][0]) == 0.0  # right partition, wrong slots: mIoU pairs slot k with object k
    m = metrics.video_metrics(true, true, 6, 2)
    assert float(m["miou"][0]) == 1.0
    # Everything in one cluster on both sides: denominator 0 -> 1 (SAVi's convention).
    ones = np.zeros((1, 1, 2, 4), int)
    assert float(metrics.adjusted_rand_index(ones, ones, 3, 4)[0]) == 1.0
    # FG-ARI ignores the background: merging background with object 1 in the prediction costs ARI, not FG-ARI.
    merged = np.array([[[[1, 1, 1, 1], [1, 1, 2, 2]]]])
    m = metrics.video_metrics(true, merged, 6, 2)
    assert float(m["fg_ari"][0]) == pytest.approx(1.0) and float(m["ari"][0]) < 0.6
    # Slot 1 claims 3 pixels, one of object 1's two: IoU 1/4; object 2 exact: mIoU (1/4 + 1) / 2.
    half = np.array([[[[1, 1, 1, 0], [0, 0, 2, 2]]]])
    assert float(metrics.video_metrics(true, half, 6, 2)["miou"][0]) == pytest.approx((1 / 4 + 1) / 2)


def test_padding_and_mean_over_videos():
    true = np.array([[[[0, 1], [1, 0]]], [[[0, 0], [0, 0]]]])
    pred = np.array([[[[0, 1], [1, 0]]], [[[1, 1], [0, 0]]]])
    m = metrics.video_metrics(true, pred, 3, 2)
    acc = metrics.MeanOverVideos()
    acc.update(m, mask=[True, False])  # the second is eval padding
    res = acc.result()
    assert res["num_videos"] == 1 and res["ari"] == pytest.approx(1.0) and res["miou"] == pytest.approx(1.0)
    acc.update(m, mask=[False, True])  # a real video without objects: counts for ARI, not for mIoU
    assert acc.result()["num_videos"] == 2 and acc.result()["miou"] == pytest.approx(1.0)
    assert acc.result()["miou_per_frame"] == pytest.approx(1.0)
    # ids > K vanish from the ground truth, as in the original's one-hot
    m = metrics.video_metrics(np.array([[[[0, 5]]]]), np.array([[[[0, 1]]]]), 3, 2)
    assert float(m["ari"][0]) == 1.0


def test_the_two_miou_definitions_differ_where_frames_differ():
    """Object 1 is in both frames; its slot covers it exactly in frame 0 and paints 3 extra pixels in frame 1:
    video IoU = (2 + 2) / (2 + 5) = 4/7; frame IoU = (1 + 2/5) / 2 = 0.7. Object 2 appears in frame 1 only and is
    found exactly: 1 either way (the empty frame 0 counts for neither)."""
    true = np.zeros((1, 2, 2, 4), np.int32)
    true[0, 0, 0, :2] = 1
    true[0, 1, 0, :2] = 1
    true[0, 1, 1, 3] = 2
    pred = true.copy()
    pred[0, 1, 1, :3] = 1
    m = metrics.video_metrics(true, pred, 3, 2)
    assert float(m["miou"][0]) == pytest.approx((4 / 7 + 1) / 2)
    assert float(m["miou_per_frame"][0]) == pytest.approx((0.7 + 1) / 2)


def test_the_floor_measure_averages_over_real_videos_with_a_floor():
    true = np.zeros((3, 1, 1, 2), np.int64)
    true[1] = 1  # the second video has no floor pixel
    alphas = np.zeros((3, 1, 3, 1, 2))
    alphas[:, 0, :, 0, 0] = (0.7, 0.2, 0.1)
    alphas[:, 0, :, 0, 1] = (0.1, 0.1, 0.8)  # padding in the first video (below): left out
    background = np.array([[True, False, False]] * 3)
    valid = np.ones_like(true, bool)
    valid[0, ..., 1] = False
    per_video = {**metrics.video_metrics(true, true, 3, 2, valid),
                 **metrics.floor_alpha(alphas, true, background, valid)}
    np.testing.assert_allclose(per_video["floor_alpha"], [0.7, 0.0, 0.4], rtol=1e-6)
    np.testing.assert_array_equal(per_video["has_floor"], [True, False, True])
    acc = metrics.MeanOverVideos()
    acc.update(per_video, mask=[True, True, False])  # the third is eval padding
    result = acc.result()
    assert result["floor_alpha"] == pytest.approx(0.7) and result["floor_even_split"] == pytest.approx(1 / 3)
    plain = metrics.MeanOverVideos()
    plain.update(metrics.video_metrics(true, true, 3, 2, valid), mask=[True, True, True])
    assert "floor_alpha" not in plain.result()  # learned slots: no background slot, no floor measure
