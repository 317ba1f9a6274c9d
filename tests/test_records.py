import numpy as np
import pytest

from data.records import codec


def make_video(t=3, h=8, w=8, k=2, name="v0"):
    rng = np.random.default_rng(0)
    boxes = np.zeros((t, 23, 4), np.float32)
    boxes[:, :k] = [0.1, 0.2, 0.5, 0.6]
    return {
        "video": rng.integers(0, 255, (t, h, w, 3), dtype=np.uint8),
        "segmentations": rng.integers(0, k + 1, (t, h, w), dtype=np.uint8),
        "backward_flow": rng.integers(0, 65535, (t, h, w, 2), dtype=np.uint16),
        "backward_flow_range": np.array([-3.0, 2.0], np.float32),
        "depth": rng.integers(0, 65535, (t, h, w), dtype=np.uint16),
        "depth_range": np.array([5.0, 30.0], np.float32),
        "boxes": boxes,
        "num_instances": np.int32(k),
        "video_name": name,
    }


def test_roundtrip_is_lossless():
    v = make_video()
    d = codec.decode(codec.encode(v))
    for key in codec.FIELDS:
        assert d[key].dtype == v[key].dtype and d[key].shape == np.shape(v[key])
        np.testing.assert_array_equal(d[key], v[key])
    assert d["video_name"] == "v0"


def test_truncated_record_names_file_and_index():
    b = codec.encode(make_video())
    with pytest.raises(codec.DataError, match=r"f\.array_record: record 7: truncated record"):
        codec.decode(b[: len(b) - 100], "f.array_record", 7)


def test_wrong_schema_version():
    b = codec.encode(make_video()).replace(b'"schema_version":1', b'"schema_version":9')
    with pytest.raises(codec.DataError, match="record 3: record schema version 9, this code reads version 1"):
        codec.decode(b, "f", 3)


def test_missing_field():
    b = codec.encode(make_video()).replace(b'"depth_range"', b'"depth_rangX"')
    with pytest.raises(codec.DataError, match=r"record 0: missing fields \['depth_range'\]"):
        codec.decode(b, "f", 0)


def test_not_a_record():
    with pytest.raises(codec.DataError, match="not a STATM-SAVi video record"):
        codec.decode(b"x" * 64, "f", 0)


def test_encode_validates_shapes():
    v = make_video()
    v["depth"] = v["depth"][:, :4]
    with pytest.raises(ValueError, match="'depth' has shape"):
        codec.encode(v)
