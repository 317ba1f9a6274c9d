"""bench/demo_masks.py's per-object measures on a case small enough to count by hand."""

import numpy as np
import pytest

from bench.demo_masks import background_alpha, per_object
from model.slots import background_copies


def test_a_slot_that_takes_floor_loses_precision_and_iou_but_not_recall():
    true = np.zeros((1, 4, 4), np.int64)
    true[0, 0, :2] = 1  # object 1: two pixels
    pred = np.zeros_like(true)
    pred[0, 0, :] = 1  # slot 1: its object and two floor pixels
    valid = np.ones_like(true, bool)
    r = per_object(true, pred, valid, num_objects=3)
    assert r["recall"] == 1.0 and r["precision"] == 0.5 and r["miou"] == 0.5
    assert r["miou_floor_given_back"] == 1.0  # the two floor pixels back to the background slot
    assert r["floor_taken"] == pytest.approx(2 / 14) and r["object_share"] == pytest.approx(2 / 16)
    assert per_object(np.zeros_like(true), pred, valid, 3)["miou"] is None  # no object: nothing to average


def test_background_alpha_counts_the_copies_of_the_background_slot_on_the_floor_only():
    true = np.zeros((1, 2, 2), np.int64)
    true[0, 0, 0] = 1  # object 1 on one pixel; object 2 absent in the first frame, so its slot copies slot 0
    alphas = np.zeros((1, 3, 2, 2))
    alphas[0, :, 0, 0] = (0.0, 1.0, 0.0)  # the object's pixel: ignored
    alphas[0, :, ~(true[0] > 0)] = (0.2, 0.5, 0.3)  # the floor: slot 1 holds half of it
    valid = np.ones_like(true, bool)
    boxes = np.zeros((2, 2, 4))
    boxes[0, 0] = (0.1, 0.1, 0.5, 0.5)  # object 1's first-frame box; object 2 has none in the first frame
    boxes[1, 1] = (0.2, 0.2, 0.6, 0.6)  # a later frame's box does not condition
    background = background_copies(boxes)
    np.testing.assert_array_equal(background, [True, False, True])
    r = background_alpha(alphas, true, valid, background)
    assert r["background_alpha"] == pytest.approx(0.5) and r["even_split"] == pytest.approx(2 / 3)
    alone = np.array([True, False, False])
    assert background_alpha(alphas, true, valid, alone)["background_alpha"] == pytest.approx(0.2)
    assert background_alpha(alphas, np.ones_like(true), valid, background)["background_alpha"] is None
