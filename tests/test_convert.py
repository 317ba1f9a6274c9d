import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from movi_fake import write_fake_tfds
from savi_ops import TemporalRandomStridedWindow

from data.convert_tfds_to_arrayrecord import ConversionError, convert
from data.pipeline import datasets
from data.pipeline import transforms as T
from data.records import codec, shards

quiet = lambda *a, **k: None


def read_all(out_dir, split):
    info = shards.read_dataset_info(out_dir)
    src = shards.VideoRecordSource(shards.split_files(out_dir, info, split))
    return {src[i].video_name: src.decoded(i) for i in range(len(src))}


def sparse_to_dense_reference(boxes, frames, num_frames, k):
    """SAVi's SparseToDenseAnnotation, written plainly: NOTRACK unless the object has a box at that frame."""
    out = np.zeros((num_frames, k, 4), np.float32)
    for n in range(min(len(boxes), k)):
        for j, t in enumerate(frames[n]):
            out[t, n] = boxes[n][j]
    return out


def test_converted_sample_info(converted_sample):
    info = shards.read_dataset_info(converted_sample)
    assert {s: v["num_records"] for s, v in info["splits"].items()} == {"train": 3, "validation": 2}
    assert info["max_instances"] == 10 and info["schema_version"] == codec.SCHEMA_VERSION
    assert info["resolution"] == [128, 128] and info["num_frames"] == 24
    names = read_all(converted_sample, "validation")
    assert sorted(names) == ["101011", "101012"]
    assert int(names["101011"]["num_instances"]) == 10


@pytest.mark.parametrize("k", [10, 23, 30])
def test_semantics_beyond_the_sample(tmp_path, k):
    """Many instances (up to 23), gaps in bbox_frames, objects leaving; K smaller, equal and larger."""
    _, truths = write_fake_tfds(str(tmp_path / "tfds"))
    out = str(tmp_path / "out")
    info = convert(str(tmp_path / "tfds"), "movi_e/128x128:1.0.0", out, num_workers=1, log=quiet)
    assert info["max_instances"] == 23
    spec = datasets.PreprocessSpec(resolution=16, max_instances=k, eval_frames=6)
    for split in ("train", "validation"):
        for name, rec in read_all(out, split).items():
            truth = truths[name]
            for key in ("video", "segmentations", "depth", "backward_flow"):
                np.testing.assert_array_equal(rec[key], truth[key])  # lossless
            f = rec
            for op in datasets.eval_ops(spec)[1:]:  # [0] decodes a LazyRecord; rec is decoded
                f = op.map(f)
            np.testing.assert_array_equal(f["boxes"], sparse_to_dense_reference(truth["boxes"], truth["frames"], 6, k))
            np.testing.assert_array_equal(f["segmentations"], np.where(truth["segmentations"] <= k,
                                                                        truth["segmentations"], 0))
            np.testing.assert_allclose(f["video"], truth["video"] / 255.0, atol=1e-6)
            np.testing.assert_allclose(f["depth"][..., 0], truth["depth"] / 65535.0 * 24.0 + 6.0, rtol=1e-6)


def test_resumable_and_split_into_tasks(tmp_path):
    write_fake_tfds(str(tmp_path / "tfds"))
    out = str(tmp_path / "out")
    logs = []
    # Task 1 of 2 alone cannot finish the dataset: no dataset_info.json yet.
    assert convert(str(tmp_path / "tfds"), "movi_e/128x128:1.0.0", out, task_index=1, num_tasks=2,
                   log=logs.append) is None
    assert not os.path.exists(os.path.join(out, shards.INFO_FILE))
    done_by_task1 = sorted(glob.glob(f"{out}/*/*.array_record"))
    assert len(done_by_task1) == 1
    mtime = os.path.getmtime(done_by_task1[0])
    # Task 0 finishes the rest and writes the info; task 1's shard is not redone.
    info = convert(str(tmp_path / "tfds"), "movi_e/128x128:1.0.0", out, task_index=0, num_tasks=2, log=quiet)
    assert info["splits"]["train"]["num_records"] == 3 and info["splits"]["validation"]["num_records"] == 2
    assert os.path.getmtime(done_by_task1[0]) == mtime
    # An interrupted shard (data without manifest, or a stray tmp file) is redone; finished ones are skipped.
    victim = sorted(glob.glob(f"{out}/train/*.array_record"))[0]
    os.remove(victim + ".json")
    open(victim + ".tmp-12345", "wb").write(b"partial")
    logs.clear()
    convert(str(tmp_path / "tfds"), "movi_e/128x128:1.0.0", out, log=logs.append)
    assert "2 already done, 1 to convert" in logs[0]
    assert len(read_all(out, "train")) == 3


def _corrupt_copy(tmp_path, how):
    vdir, _ = write_fake_tfds(str(tmp_path / "tfds"), splits={"train": [[3, 4, 5]]})
    shard = glob.glob(f"{vdir}/*train*")[0]
    data = bytearray(open(shard, "rb").read())
    if how == "flip":
        data[len(data) // 2] ^= 0xFF  # inside the second record
    else:
        data = data[: len(data) - 50]  # truncated last record
    open(shard, "wb").write(bytes(data))
    return shard


@pytest.mark.parametrize("how,bad_record,reason", [("flip", 1, "payload CRC mismatch"),
                                                   ("truncate", 2, "truncated payload")])
def test_corrupt_input_names_shard_and_record(tmp_path, how, bad_record, reason):
    shard = _corrupt_copy(tmp_path, how)
    with pytest.raises(ConversionError, match=rf"{shard}: record {bad_record}: {reason}"):
        convert(str(tmp_path / "tfds"), "movi_e/128x128:1.0.0", str(tmp_path / "out"), log=quiet)
    assert not glob.glob(f"{tmp_path}/out/train/*"), "no partial output may remain"
    info = convert(str(tmp_path / "tfds"), "movi_e/128x128:1.0.0", str(tmp_path / "out"), skip_corrupt=True,
                   log=quiet)
    assert info["skipped_records"] == 1 and info["splits"]["train"]["num_records"] == 2
    manifest = json.load(open(glob.glob(f"{tmp_path}/out/train/*.json")[0]))
    assert manifest["skipped"][0]["record"] == bad_record and reason in manifest["skipped"][0]["reason"]


def test_cli_errors_are_one_line_and_nonzero(tmp_path):
    shard = _corrupt_copy(tmp_path, "flip")
    run = lambda *args: subprocess.run([sys.executable, "-m", "data.convert_tfds_to_arrayrecord", *args],
                                       capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)),
                                       timeout=300)
    r = run("--tfds_dir", str(tmp_path / "tfds"), "--dataset", "movi_e/128x128:1.0.0", "--out_dir",
            str(tmp_path / "out"), "--num_workers", "1")
    assert r.returncode == 1 and f"{shard}: record 1: payload CRC mismatch" in r.stderr and "Traceback" not in r.stderr
    r = run("--tfds_dir", str(tmp_path / "nowhere"), "--dataset", "movi_e/128x128:1.0.0", "--out_dir",
            str(tmp_path / "out"))
    assert r.returncode == 1 and "gsutil -m cp -r gs://kubric-public/tfds/movi_e/128x128" in r.stderr
    r = run("--tfds_dir", str(tmp_path / "tfds"), "--dataset", "movi_e/128x128:1.0.0", "--out_dir",
            str(tmp_path / "out"), "--splits", "test")
    assert r.returncode == 1 and "split 'test' not in" in r.stderr


def test_window_before_decode_equals_savi_order(converted_sample):
    """The pipeline windows raw codes before decoding; SAVi decodes first. Same result."""
    src = shards.VideoRecordSource(shards.split_files(converted_sample, shards.read_dataset_info(
        converted_sample), "train"))
    rec = src.decoded(2)
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    ours = T.VideoFromRecord().map(TemporalRandomStridedWindow(6).random_map(rec, rng_a))
    savi = TemporalRandomStridedWindow(6).random_map(T.VideoFromRecord().map(rec), rng_b)
    for key in ("video", "segmentations", "depth", "flow", "boxes", "padding_mask", "shape"):
        np.testing.assert_array_equal(ours[key], savi[key])
    assert savi["shape"].tolist() == [24, 128, 128, 3]
