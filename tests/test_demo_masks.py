"""bench/demo_masks.py's per-object measures on a case small enough to count by hand."""

import numpy as np
import pytest

from bench.demo_masks import per_object


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
