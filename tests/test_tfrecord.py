import numpy as np
import pytest
from google.protobuf.message import DecodeError
from movi_fake import build_example, frame_record

from data.tfds.tfrecord import TFRecordError, iter_tfrecord, masked_crc32c, parse_example


def test_masked_crc32c_known_value():
    # CRC32C("123456789") = 0xE3069283 (RFC 3720 check value), masked as TFRecord does.
    crc = 0xE3069283
    assert masked_crc32c(b"123456789") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _write(path, payloads):
    with open(path, "wb") as f:
        for p in payloads:
            f.write(frame_record(p))


def test_roundtrip_and_example_parsing(tmp_path):
    ex = build_example({"a": [b"x", b"yz"], "f": np.array([1.5, -2.0], np.float32), "i": np.arange(5)})
    path = tmp_path / "x.tfrecord"
    _write(path, [ex, ex])
    got = list(iter_tfrecord(str(path)))
    assert [i for i, _ in got] == [0, 1]
    parsed = parse_example(got[1][1])
    assert parsed["a"] == [b"x", b"yz"]
    np.testing.assert_array_equal(parsed["f"], [1.5, -2.0])
    assert parsed["i"].dtype == np.int64 and parsed["i"].tolist() == [0, 1, 2, 3, 4]


def test_payload_crc_mismatch_is_reported_and_iteration_continues(tmp_path):
    path = tmp_path / "x.tfrecord"
    _write(path, [b"first", b"second", b"third"])
    data = bytearray(path.read_bytes())
    data[12 + 8 + 4 + 12 + 2] ^= 0xFF  # a byte inside the second payload
    path.write_bytes(bytes(data))
    got = list(iter_tfrecord(str(path)))
    assert got[0] == (0, b"first")
    assert isinstance(got[1][1], TFRecordError) and got[1][1].index == 1 and "CRC" in str(got[1][1])
    assert got[2] == (2, b"third")


def test_truncated_shard_names_file_and_record(tmp_path):
    path = tmp_path / "x.tfrecord"
    _write(path, [b"a" * 100, b"b" * 100])
    path.write_bytes(path.read_bytes()[:-30])
    got = list(iter_tfrecord(str(path)))
    assert got[0] == (0, b"a" * 100)
    err = got[1][1]
    assert isinstance(err, TFRecordError) and err.index == 1 and str(path) in str(err) and "truncated" in str(err)


def test_garbage_is_not_an_example():
    with pytest.raises(DecodeError):  # the converter reports it as a corrupt record (test_convert)
        parse_example(b"\xff\xff\xff\xff not a proto")
