"""MOVi's TFDS on-disk format -> our video dict (the only module that knows TFDS feature names).

Keeps exactly what SAVi/STATM read (docs/data.md §1), losslessly: PNG frames decoded to uint8/uint16 codes,
backward-flow codes and ranges as stored, and the ragged `instances/bboxes` + `instances/bbox_frames`
densified to (T, K, 4) with NOTRACK (0,0,0,0) wherever an object has no box (gaps included).
"""

from __future__ import annotations

import io
import json
import os
from typing import Any

import numpy as np
from PIL import Image

from data.records import codec


def decode_png_stack(frames: list[bytes], dtype: str, channels: int) -> np.ndarray:
    """24 PNG frames -> (T, H, W[, C]) array. 16-bit grey PNGs decode through PIL's 'I;16' mode."""
    out = []
    for png in frames:
        with Image.open(io.BytesIO(png)) as im:
            arr = np.asarray(im)
        if arr.dtype != np.dtype(dtype):
            if dtype == "uint16" and arr.dtype.kind in "iu" and arr.min() >= 0 and arr.max() <= 65535:
                arr = arr.astype(np.uint16)
            else:
                raise ValueError(f"PNG decoded as {arr.dtype}{list(arr.shape)} (mode {im.mode}), expected {dtype}")
        if channels == 1 and arr.ndim == 3:
            arr = arr[..., 0]
        if (channels == 1 and arr.ndim != 2) or (channels > 1 and (arr.ndim != 3 or arr.shape[-1] != channels)):
            raise ValueError(f"PNG frame has shape {arr.shape}, expected {channels} channel(s)")
        out.append(arr)
    return np.stack(out)


def _ragged(ex: dict[str, Any], key: str) -> list[np.ndarray]:
    values = ex[f"{key}/ragged_flat_values"]
    lengths = ex[f"{key}/ragged_row_lengths_0"].astype(np.int64)
    if lengths.sum() * (values.size // max(int(lengths.sum()), 1)) != values.size:
        raise ValueError(f"{key}: {values.size} values do not fit row lengths {lengths.tolist()}")
    width = values.size // max(int(lengths.sum()), 1) if lengths.sum() else 1
    rows, start = [], 0
    for n in lengths:
        rows.append(values[start * width : (start + n) * width].reshape(int(n), width) if width > 1
                    else values[start : start + n])
        start += int(n)
    return rows


def dense_boxes(bboxes: list[np.ndarray], frames: list[np.ndarray], num_frames: int) -> np.ndarray:
    """Ragged per-object boxes and frame ids -> (T, max(23, k), 4) float32, NOTRACK where absent."""
    k = len(bboxes)
    out = np.zeros((num_frames, max(codec.MIN_BOX_COLUMNS, k), 4), np.float32)
    for n, (boxes_n, frames_n) in enumerate(zip(bboxes, frames, strict=True)):
        if len(boxes_n) != len(frames_n):
            raise ValueError(f"instance {n}: {len(boxes_n)} boxes but {len(frames_n)} bbox_frames")
        if len(frames_n) and (frames_n.min() < 0 or frames_n.max() >= num_frames):
            raise ValueError(f"instance {n}: bbox_frames {frames_n.tolist()} outside [0, {num_frames})")
        out[frames_n.astype(np.int64), n] = boxes_n
    return out


def example_to_video(ex: dict[str, Any]) -> dict[str, Any]:
    """Parsed MOVi tf.train.Example (data.tfds.tfrecord.parse_example) -> record dict (data.records.codec.FIELDS)."""
    missing = [k for k in ("video", "segmentations", "depth", "backward_flow", "metadata/depth_range",
                           "metadata/video_name", "instances/bboxes/ragged_flat_values",
                           "instances/bbox_frames/ragged_flat_values") if k not in ex]
    if missing:
        raise ValueError(f"not a MOVi example: missing keys {missing}")
    video = decode_png_stack(ex["video"], "uint8", 3)
    t, h, w, _ = video.shape
    flow = ex["backward_flow"]
    if flow.size != t * h * w * 2 or flow.min(initial=0) < 0 or flow.max(initial=0) > 65535:
        raise ValueError(f"backward_flow has {flow.size} codes in [{flow.min()}, {flow.max()}], "
                         f"expected {t * h * w * 2} uint16 codes")
    # SAVi's default when a dataset has no flow range (VideoFromTfds).
    flow_range = ex.get("metadata/backward_flow_range", np.array([-255.0, 255.0], np.float32))
    bboxes = _ragged(ex, "instances/bboxes")
    frames = _ragged(ex, "instances/bbox_frames")
    num_instances = int(ex["metadata/num_instances"][0]) if "metadata/num_instances" in ex else len(bboxes)
    if num_instances != len(bboxes):
        raise ValueError(f"metadata/num_instances = {num_instances} but {len(bboxes)} box tracks")
    return {
        "video": video,
        "segmentations": decode_png_stack(ex["segmentations"], "uint8", 1),
        "backward_flow": flow.astype(np.uint16).reshape(t, h, w, 2),
        "backward_flow_range": np.asarray(flow_range, np.float32).reshape(2),
        "depth": decode_png_stack(ex["depth"], "uint16", 1),
        "depth_range": np.asarray(ex["metadata/depth_range"], np.float32).reshape(2),
        "boxes": dense_boxes(bboxes, frames, t),
        "num_instances": np.int32(num_instances),
        "video_name": ex["metadata/video_name"][0].decode("utf-8"),
    }


def resolve_dataset_dir(tfds_dir: str, dataset: str) -> tuple[str, dict[str, Any]]:
    """`movi_e/128x128:1.0.0` under a TFDS data dir -> (version directory, its dataset_info.json)."""
    name_config, _, version = dataset.partition(":")
    name, _, config = name_config.partition("/")
    if not name or not config:
        raise ValueError(f"--dataset {dataset!r}: expected NAME/CONFIG[:VERSION], e.g. movi_e/128x128:1.0.0")
    base = os.path.join(tfds_dir, name, config)
    if not version:
        versions = sorted(os.listdir(base)) if os.path.isdir(base) else []
        version = versions[-1] if versions else "1.0.0"
    path = os.path.join(base, version)
    info_path = os.path.join(path, "dataset_info.json")
    if not os.path.exists(info_path):
        raise FileNotFoundError(
            f"{info_path} not found: --tfds_dir must hold {name}/{config}/{version}/ as copied by "
            f"`gsutil -m cp -r gs://kubric-public/tfds/{name}/{config}/{version} DIR/{name}/{config}/`")
    with open(info_path) as f:
        return path, json.load(f)
