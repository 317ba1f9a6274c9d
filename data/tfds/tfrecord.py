"""TensorFlow-free TFRecord reading and `tf.train.Example` parsing.

TFRecord framing (little-endian): u64 length | u32 masked_crc32c(length) | payload | u32 masked_crc32c(payload).
The payload is a serialized `tf.train.Example`; its message classes are built here from a descriptor
so that neither TensorFlow nor a generated `_pb2` module is needed.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any

import google_crc32c
import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_HEADER = struct.Struct("<QI")
_FOOTER = struct.Struct("<I")
_MASK_DELTA = 0xA282EAD8


class TFRecordError(ValueError):
    """A TFRecord shard is truncated or fails a CRC check, or a record is not a tf.train.Example."""

    def __init__(self, path: str, index: int, reason: str):
        super().__init__(
            f"{path}: record {index}: {reason}. The shard is corrupt or incomplete: download it again "
            "(gsutil -m cp …), or pass --skip_corrupt to count and skip such records."
        )
        self.path, self.index, self.reason = path, index, reason


def masked_crc32c(data: bytes) -> int:
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def iter_tfrecord(path: str, check_crc: bool = True) -> Iterator[tuple[int, bytes | TFRecordError]]:
    """Yields (index, payload) per record; a bad record yields (index, TFRecordError) and, when the framing
    itself is lost (truncation, bad length CRC), ends the iteration, since later offsets are unknown."""
    with open(path, "rb") as f:
        index = 0
        while True:
            head = f.read(_HEADER.size)
            if not head:
                return
            if len(head) < _HEADER.size:
                yield index, TFRecordError(path, index, "truncated record header")
                return
            length, length_crc = _HEADER.unpack(head)
            if check_crc and masked_crc32c(head[:8]) != length_crc:
                yield index, TFRecordError(path, index, "length CRC mismatch (framing lost)")
                return
            payload = f.read(length)
            foot = f.read(_FOOTER.size)
            if len(payload) < length or len(foot) < _FOOTER.size:
                yield index, TFRecordError(path, index, f"truncated payload ({len(payload)} of {length} bytes)")
                return
            if check_crc and masked_crc32c(payload) != _FOOTER.unpack(foot)[0]:
                yield index, TFRecordError(path, index, "payload CRC mismatch")
            else:
                yield index, payload
            index += 1


# ---------------------------------------------------------------------------------------------------------
# tf.train.Example, from a descriptor (field numbers as in tensorflow/core/example/{example,feature}.proto).
# ---------------------------------------------------------------------------------------------------------


def _build_example_class():
    F = descriptor_pb2.FieldDescriptorProto
    fdp = descriptor_pb2.FileDescriptorProto(name="statm_savi/example.proto", package="statm_savi_tf", syntax="proto3")

    def message(name, fields, nested=()):
        msg = fdp.message_type.add(name=name)
        for fname, number, ftype, label, type_name, oneof in fields:
            field = msg.field.add(name=fname, number=number, type=ftype, label=label)
            if type_name:
                field.type_name = type_name
            if oneof is not None:
                field.oneof_index = oneof
        for n in nested:
            msg.nested_type.append(n)
        return msg

    rep, opt = F.LABEL_REPEATED, F.LABEL_OPTIONAL
    message("BytesList", [("value", 1, F.TYPE_BYTES, rep, None, None)])
    message("FloatList", [("value", 1, F.TYPE_FLOAT, rep, None, None)])
    message("Int64List", [("value", 1, F.TYPE_INT64, rep, None, None)])
    feature = message(
        "Feature",
        [
            ("bytes_list", 1, F.TYPE_MESSAGE, opt, ".statm_savi_tf.BytesList", 0),
            ("float_list", 2, F.TYPE_MESSAGE, opt, ".statm_savi_tf.FloatList", 0),
            ("int64_list", 3, F.TYPE_MESSAGE, opt, ".statm_savi_tf.Int64List", 0),
        ],
    )
    feature.oneof_decl.add(name="kind")
    entry = descriptor_pb2.DescriptorProto(name="FeatureEntry")
    entry.field.add(name="key", number=1, type=F.TYPE_STRING, label=opt)
    entry.field.add(name="value", number=2, type=F.TYPE_MESSAGE, label=opt, type_name=".statm_savi_tf.Feature")
    entry.options.map_entry = True
    message("Features", [("feature", 1, F.TYPE_MESSAGE, rep, ".statm_savi_tf.Features.FeatureEntry", None)], [entry])
    message("Example", [("features", 1, F.TYPE_MESSAGE, opt, ".statm_savi_tf.Features", None)])

    pool = descriptor_pool.DescriptorPool()  # private pool: never clashes with a loaded TensorFlow
    pool.Add(fdp)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("statm_savi_tf.Example"))


Example = _build_example_class()


def parse_example(payload: bytes) -> dict[str, Any]:
    """tf.train.Example bytes -> {key: list[bytes] | float32 array | int64 array}."""
    example = Example.FromString(payload)
    out: dict[str, Any] = {}
    for key, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        if kind == "bytes_list":
            out[key] = list(feature.bytes_list.value)
        elif kind == "float_list":
            out[key] = np.asarray(feature.float_list.value, dtype=np.float32)
        elif kind == "int64_list":
            out[key] = np.asarray(feature.int64_list.value, dtype=np.int64)
        else:  # an empty feature (TFDS writes these for empty sequences)
            out[key] = np.zeros((0,), np.float32)
    return out
