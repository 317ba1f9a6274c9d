"""The record schema: one video per ArrayRecord record; per-frame zstd chunks behind a small JSON header.

Layout of one record (version 1):
    b"STATMREC" | u32 header_bytes | header JSON (utf-8) | payload

The header lists each field as {"dtype", "shape", "chunks": [[offset, nbytes], ...]}. Per-frame fields
(video, segmentations, backward_flow, depth) have one zstd-compressed chunk per frame, so a 6-frame
training window decompresses 6 of 24 frames; the small fields are one raw chunk. Values are MOVi's own
codes (uint8 video and ids, uint16 flow/depth codes plus float ranges): lossless against the TFDS source,
with SAVi's dequantisation applied at load time. No TensorFlow, no PNG.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np
import zstandard

MAGIC = b"STATMREC"
SCHEMA_VERSION = 1
# Dense boxes always keep at least this many columns (MOVi-D/E have up to 23 instances), so one
# converted dataset serves every `max_instances`; more columns are kept when a video has more instances.
MIN_BOX_COLUMNS = 23
ZSTD_LEVEL = 3
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
PER_FRAME = ("video", "segmentations", "backward_flow", "depth")


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
    t, h, w, _ = example["video"].shape
    expected = {"video": (t, h, w, 3), "segmentations": (t, h, w), "backward_flow": (t, h, w, 2),
                "depth": (t, h, w), "backward_flow_range": (2,), "depth_range": (2,)}
    for name, shape in expected.items():
        if example[name].shape != shape:
            raise ValueError(f"field {name!r} has shape {example[name].shape}, expected {shape}")
    boxes = example["boxes"]
    if boxes.shape[0] != t or boxes.shape[2] != 4 or boxes.shape[1] < MIN_BOX_COLUMNS:
        raise ValueError(f"field 'boxes' has shape {boxes.shape}, expected ({t}, >= {MIN_BOX_COLUMNS}, 4)")
    if not isinstance(example.get("video_name"), str) or not example["video_name"]:
        raise ValueError("field 'video_name' must be a non-empty string")


def encode(example: dict[str, Any], level: int = ZSTD_LEVEL) -> bytes:
    """Video dict (FIELDS plus `video_name`) -> record bytes. Validates first."""
    validate_example(example)
    compressor = zstandard.ZstdCompressor(level=level)
    fields, blobs, offset = {}, [], 0
    for name, (dtype, _) in FIELDS.items():
        arr = np.asarray(example[name], dtype=dtype)  # (ascontiguousarray would make scalars 1-d)
        parts = [compressor.compress(np.ascontiguousarray(f).tobytes()) for f in arr] if name in PER_FRAME \
            else [arr.tobytes()]
        chunks = []
        for part in parts:
            chunks.append([offset, len(part)])
            blobs.append(part)
            offset += len(part)
        fields[name] = {"dtype": dtype, "shape": list(arr.shape), "chunks": chunks,
                        "codec": "zstd" if name in PER_FRAME else "raw"}
    header = json.dumps({"schema_version": SCHEMA_VERSION, "video_name": example["video_name"], "fields": fields},
                        separators=(",", ":")).encode()
    return _PREFIX.pack(MAGIC, len(header)) + header + b"".join(blobs)


class LazyRecord:
    """A record whose header is parsed and checked; frames are decompressed only when asked for.

    `extra` holds keys that decode() adds to its output (e.g. the eval padding `mask`).
    """

    def __init__(self, record: bytes, path: str = "<bytes>", index: int | None = None,
                 extra: dict[str, Any] | None = None):
        self.path, self.index, self.extra = path, index, dict(extra or {})
        if len(record) < _PREFIX.size:
            raise self._error(f"truncated record ({len(record)} bytes)")
        magic, header_len = _PREFIX.unpack_from(record)
        if magic != MAGIC:
            raise self._error(f"not a STATM-SAVi video record (magic {magic!r})")
        start = _PREFIX.size + header_len
        try:
            header = json.loads(record[_PREFIX.size : start])
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise self._error(f"truncated or corrupt header ({e})") from None
        if header.get("schema_version") != SCHEMA_VERSION:
            raise self._error(f"record schema version {header.get('schema_version')}, "
                              f"this code reads version {SCHEMA_VERSION}")
        self.fields: dict[str, Any] = header.get("fields", {})
        if not isinstance(self.fields, dict) or not all(
                isinstance(f, dict) and {"dtype", "shape", "chunks", "codec"} <= set(f) for f in self.fields.values()):
            raise self._error("malformed header (fields)")
        missing = sorted(set(FIELDS) - set(self.fields))
        if missing:
            raise self._error(f"missing fields {missing}")
        self.payload = memoryview(record)[start:]
        for name, f in self.fields.items():
            last_offset, last_size = f["chunks"][-1] if f["chunks"] else (0, 0)
            if last_offset + last_size > len(self.payload):
                raise self._error(f"truncated record: field {name!r} ends past the record")
        self.video_name: str = header.get("video_name", "")
        self.num_frames: int = int(self.fields["video"]["shape"][0])

    def with_extra(self, **extra: Any) -> LazyRecord:
        other = object.__new__(LazyRecord)
        other.__dict__.update(self.__dict__)
        other.extra = {**self.extra, **extra}
        return other

    def _error(self, reason: str) -> DataError:
        return DataError(self.path, self.index, reason)

    def _field(self, name: str, start: int, stop: int) -> np.ndarray:
        f = self.fields[name]
        if f["codec"] == "raw":
            offset, size = f["chunks"][0]
            arr = np.frombuffer(self.payload[offset : offset + size], dtype=f["dtype"]).reshape(f["shape"])
            return arr[start:stop] if name == "boxes" else arr
        decompressor = zstandard.ZstdDecompressor()
        try:
            frames = [decompressor.decompress(self.payload[o : o + n]) for o, n in f["chunks"][start:stop]]
        except zstandard.ZstdError as e:
            raise self._error(f"corrupt frame data in field {name!r} ({e})") from None
        frame_shape = f["shape"][1:]
        return np.frombuffer(b"".join(frames), dtype=f["dtype"]).reshape([len(frames), *frame_shape])

    def decode(self, start: int = 0, stop: int | None = None) -> dict[str, Any]:
        """Frames [start, stop) of every per-frame field (and of `boxes`), plus the small fields."""
        stop = self.num_frames if stop is None else min(stop, self.num_frames)
        out: dict[str, Any] = {name: self._field(name, start, stop) for name in FIELDS}
        out["video_name"] = self.video_name
        try:
            validate_example(out)
        except ValueError as e:
            raise self._error(str(e)) from None
        return {**out, **self.extra}


def decode(record: bytes, path: str = "<bytes>", index: int | None = None) -> dict[str, Any]:
    """Record bytes -> dict of numpy arrays plus `video_name`. Raises DataError on any defect."""
    return LazyRecord(record, path, index).decode()
