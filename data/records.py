"""The record schema: one video per ArrayRecord record, raw arrays behind a small JSON header.

Layout of one record (version 1):
    b"STATMREC" | u32 header_bytes | header JSON (utf-8) | field buffers, each 8-byte aligned

The header lists every field as [name, dtype, shape, offset, nbytes] plus `schema_version` and
`video_name`. Decoding is `np.frombuffer` per field: no TensorFlow, no PNG, no copy. The values are the
MOVi codes themselves (uint8 video and ids, uint16 flow/depth codes plus float ranges), so a record is
lossless against its TFDS source and SAVi's dequantisation is applied at load time.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

MAGIC = b"STATMREC"
SCHEMA_VERSION = 1
# Dense boxes always keep at least this many columns (MOVi-D/E have up to 23 instances), so one
# converted dataset serves every `max_instances`; more columns are kept when a video has more instances.
MIN_BOX_COLUMNS = 23
_PREFIX = struct.Struct("<8sI")

# name -> (dtype, rank). T frames, H×W pixels, K box columns.
FIELDS: dict[str, tuple[str, int]] = {
    "video": ("uint8", 4),  # (T, H, W, 3)
    "segmentations": ("uint8", 3),  # (T, H, W): 0 = background, k+1 = instance k
    "backward_flow": ("uint16", 4),  # (T, H, W, 2) codes, channels (Δrow, Δcol)
    "backward_flow_range": ("float32", 1),  # (2,) [min, max] pixels
    "depth": ("uint16", 3),  # (T, H, W) codes
    "depth_range": ("float32", 1),  # (2,) [min, max]
    "boxes": ("float32", 3),  # (T, K, 4) [ymin, xmin, ymax, xmax]; (0,0,0,0) = not tracked
    "num_instances": ("int32", 0),  # ()
}


class DataError(ValueError):
    """A record that cannot be used: truncated, wrong schema version, missing or malformed field."""

    def __init__(self, path: str, index: int | None, reason: str, fix: str | None = None):
        where = f"{path}: record {index}" if index is not None else str(path)
        fix = fix or (
            "Re-create the dataset with `python -m data.convert_tfds_to_arrayrecord` (or `python -m data.synthetic`)"
            f" from this version of the code (record schema v{SCHEMA_VERSION})."
        )
        super().__init__(f"{where}: {reason}. {fix}")
        self.path, self.index, self.reason = path, index, reason


def validate_example(example: dict[str, Any]) -> None:
    """Checks dtypes, ranks and the shared (T, H, W) of a video dict; raises ValueError naming the field."""
    missing = sorted(set(FIELDS) - set(example))
    if missing:
        raise ValueError(f"missing fields {missing}")
    for name, (dtype, rank) in FIELDS.items():
        arr = np.asarray(example[name])
        if arr.dtype != np.dtype(dtype) or arr.ndim != rank:
            raise ValueError(f"field {name!r} is {arr.dtype}{list(arr.shape)}, expected {dtype} of rank {rank}")
    t, h, w, c = example["video"].shape
    expected = {
        "video": (t, h, w, 3),
        "segmentations": (t, h, w),
        "backward_flow": (t, h, w, 2),
        "depth": (t, h, w),
        "backward_flow_range": (2,),
        "depth_range": (2,),
    }
    for name, shape in expected.items():
        if example[name].shape != shape:
            raise ValueError(f"field {name!r} has shape {example[name].shape}, expected {shape}")
    boxes = example["boxes"]
    if boxes.shape[0] != t or boxes.shape[2] != 4 or boxes.shape[1] < MIN_BOX_COLUMNS:
        raise ValueError(f"field 'boxes' has shape {boxes.shape}, expected ({t}, >= {MIN_BOX_COLUMNS}, 4)")
    if not isinstance(example.get("video_name"), str) or not example["video_name"]:
        raise ValueError("field 'video_name' must be a non-empty string")


def encode(example: dict[str, Any]) -> bytes:
    """Video dict (FIELDS plus `video_name`) -> record bytes. Validates first."""
    validate_example(example)
    entries, buffers, offset = [], [], 0
    for name, (dtype, _) in FIELDS.items():
        arr = np.asarray(example[name], dtype=dtype)  # (ascontiguousarray would make scalars 1-d)
        pad = (-offset) % 8
        buffers.append(b"\0" * pad)
        offset += pad
        entries.append([name, dtype, list(arr.shape), offset, arr.nbytes])
        buffers.append(arr.tobytes())
        offset += arr.nbytes
    header = json.dumps(
        {"schema_version": SCHEMA_VERSION, "video_name": example["video_name"], "fields": entries},
        separators=(",", ":"),
    ).encode()
    return _PREFIX.pack(MAGIC, len(header)) + header + b"".join(buffers)


def decode(record: bytes, path: str = "<bytes>", index: int | None = None) -> dict[str, Any]:
    """Record bytes -> dict of read-only numpy views plus `video_name`. Raises DataError on any defect."""
    if len(record) < _PREFIX.size:
        raise DataError(path, index, f"truncated record ({len(record)} bytes)")
    magic, header_len = _PREFIX.unpack_from(record)
    if magic != MAGIC:
        raise DataError(path, index, f"not a STATM-SAVi video record (magic {magic!r})")
    start = _PREFIX.size + header_len
    try:
        header = json.loads(record[_PREFIX.size : start])
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(path, index, f"truncated or corrupt header ({e})") from None
    version = header.get("schema_version")
    if version != SCHEMA_VERSION:
        raise DataError(path, index, f"record schema version {version}, this code reads version {SCHEMA_VERSION}")
    payload = memoryview(record)[start:]
    out: dict[str, Any] = {"video_name": header.get("video_name", "")}
    for name, dtype, shape, offset, nbytes in header.get("fields", []):
        if offset + nbytes > len(payload):
            raise DataError(path, index, f"truncated record: field {name!r} ends past the record")
        out[name] = np.frombuffer(payload[offset : offset + nbytes], dtype=dtype).reshape(shape)
    try:
        validate_example(out)
    except ValueError as e:
        raise DataError(path, index, str(e)) from None
    return out
