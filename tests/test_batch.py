"""The batch contract (data/batch.py) and the pictures drawn from it (data/pictures.py); the metric writers'
interface, without TensorFlow."""

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

from data import batch, pictures
from data.pipeline import transforms as T


def test_train_flow_codes_decode_to_the_eval_chain_floats_bit_for_bit():
    flow = np.random.default_rng(0).normal(0, 5, (3, 8, 8, 2)).astype(np.float32)
    codes = T.flow_to_rgb_codes(flow)
    train = batch.train_schema(("flow",))
    assert train.field("flow").codes and not batch.EVAL.field("flow").codes
    np.testing.assert_array_equal(train.to_float("flow", codes).view(np.int32), T.flow_to_rgb(flow).view(np.int32))
    floats = T.flow_to_rgb(flow)
    assert batch.EVAL.to_float("flow", floats) is not None and (batch.EVAL.to_float("flow", floats) == floats).all()


def test_train_schema_carries_only_what_the_step_reads():
    assert batch.train_schema(("video",)).keys == ("video", "boxes")
    assert batch.train_schema(("flow", "depth")).keys == ("video", "boxes", "depth", "flow")
    assert "segmentations" not in batch.train_schema(("depth", "flow")).keys
    with pytest.raises(KeyError, match="'flow' is not in this batch"):
        batch.train_schema(("video",)).field("flow")


def test_pictures_round_codes_back_to_themselves():
    codes = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(pictures.to_uint8(batch.codes_to_float(codes)), codes)
    between = np.array([0.49, 0.51, 254.4, 254.6], np.float32) / 255  # rounds, never truncates
    np.testing.assert_array_equal(pictures.to_uint8(between), [0, 1, 254, 255])


def test_example_rows_decode_by_the_schema():
    """The same clip with flow as codes (train) and as floats (eval) draws the same flow row."""
    rng = np.random.default_rng(1)
    codes = T.flow_to_rgb_codes(rng.normal(0, 5, (4, 8, 8, 2)).astype(np.float32))
    clip = {"video": rng.random((4, 8, 8, 3), np.float32), "boxes": np.zeros((4, 3, 4), np.float32)}
    as_codes = pictures.example_rows({**clip, "flow": codes}, batch.train_schema(("flow",)))
    as_floats = pictures.example_rows({**clip, "flow": batch.codes_to_float(codes)}, batch.EVAL)
    assert len(as_codes) == len(as_floats) == 2
    np.testing.assert_array_equal(as_codes[1], codes)
    np.testing.assert_array_equal(as_floats[1], codes)


def test_writers_implement_the_interface_and_need_no_tensorflow(tmp_path):
    code = ("import sys; import trainer.writers as w; "
            f"x = w.create_writer({str(tmp_path)!r}, True); x.write_scalars(3, {{'a': 1.5}}); "
            "x.write_hparams({'seed': 0}); x.close(); "
            "print(all(isinstance(s, w.Writer) for s in (x, *x._writers)), len(x._writers), "
            "'tensorflow' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["True", "2", "False"]
    assert open(os.path.join(tmp_path, "metrics.jsonl")).read() == '{"step": 3, "a": 1.5}\n'


def test_prediction_pictures_are_enlarged_labelled_and_carry_the_slot_legend(tmp_path):
    rng = np.random.default_rng(0)
    t, side, slots = 5, 16, 4
    video = rng.random((t, side, side, 3), np.float32)
    seg = rng.integers(0, slots, (t, side, side))
    alphas = rng.dirichlet(np.ones(slots), (t, side, side)).transpose(0, 3, 1, 2)
    rows = pictures.prediction_rows(video, seg, seg, alphas, video, video)
    image = pictures.save_png(str(tmp_path / "p.png"), rows, pictures.prediction_labels("flow"), slots)
    factor = pictures.MIN_SIDE // side  # 16-pixel frames drawn 4x larger, each pixel a 4 x 4 block
    assert image.shape == (6 * side * factor + 24, pictures.LABEL_WIDTH + t * side * factor, 3)
    body = image[: 6 * side * factor, pictures.LABEL_WIDTH:]
    np.testing.assert_array_equal(body[side * factor: 2 * side * factor, : side * factor],
                                  pictures.upscale(pictures.palette()[seg[:1]], factor)[0])  # true objects, frame 0
    labels = image[: 6 * side * factor, : pictures.LABEL_WIDTH]
    assert [bool((labels[i * side * factor:(i + 1) * side * factor] < 128).any()) for i in range(6)] == [True] * 6
    legend = image[6 * side * factor:, pictures.LABEL_WIDTH:]
    for k in range(slots):  # every slot's colour appears in the legend strip
        assert (legend == pictures.palette()[k]).all(axis=-1).sum() >= 100, k
    assert pictures.prediction_labels("video")[4] == "target frames"
