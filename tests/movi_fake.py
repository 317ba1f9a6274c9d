"""Builds small MOVi-format TFDS directories (TFRecord shards of tf.train.Examples) for converter tests."""

import io
import json
import os
import struct

import numpy as np
from PIL import Image

from data.tfds.tfrecord import Example, masked_crc32c


def _png(arr):
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def frame_record(payload: bytes) -> bytes:
    """One TFRecord frame for `payload`: u64 length, its masked CRC32C, the payload, its masked CRC32C."""
    length = struct.pack("<Q", len(payload))
    return length + struct.pack("<I", masked_crc32c(length)) + payload + struct.pack("<I", masked_crc32c(payload))


def build_example(features: dict) -> bytes:
    """The inverse of data.tfds.tfrecord.parse_example (bytes lists, float arrays, int arrays)."""
    example = Example()
    for key, value in features.items():
        feature = example.features.feature[key]
        if isinstance(value, list | tuple) and (not value or isinstance(value[0], bytes)):
            feature.bytes_list.value.extend(value)
        else:
            arr = np.asarray(value).ravel()
            if arr.dtype.kind == "f":
                feature.float_list.value.extend(arr.tolist())
            else:
                feature.int64_list.value.extend(arr.astype(np.int64).tolist())
    return example.SerializeToString()


def fake_video(rng, name, num_instances, t=6, h=16, w=16, gaps=True):
    """Random MOVi-like example and its ground truth (dense arrays and ragged boxes/frames)."""
    video = rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8)
    seg = rng.integers(0, num_instances + 1, (t, h, w), dtype=np.uint8)
    depth = rng.integers(0, 65536, (t, h, w), dtype=np.uint16)
    flow = rng.integers(0, 65536, (t, h, w, 2), dtype=np.int64)
    boxes, frames = [], []
    for n in range(num_instances):
        fr = np.arange(t)
        if gaps and n % 3 == 1:
            fr = fr[(fr < 2) | (fr > 3)]  # a gap: absent in frames 2-3
        if gaps and n % 4 == 2:
            fr = fr[: max(1, t // 2)]  # leaves the frame half-way
        y0 = rng.uniform(0, 0.5, len(fr))
        x0 = rng.uniform(0, 0.5, len(fr))
        b = np.stack([y0, x0, y0 + rng.uniform(0.1, 0.5, len(fr)), x0 + rng.uniform(0.1, 0.5, len(fr))], 1)
        boxes.append(b.astype(np.float32))
        frames.append(fr)
    ex = {
        "video": [_png(f) for f in video],
        "segmentations": [_png(f) for f in seg],
        "depth": [_png(f) for f in depth],
        "backward_flow": flow.ravel(),
        "forward_flow": flow.ravel(),
        "metadata/backward_flow_range": np.array([-4.5, 0.5], np.float32),
        "metadata/depth_range": np.array([6.0, 30.0], np.float32),
        "metadata/video_name": [name.encode()],
        "metadata/num_instances": np.array([num_instances]),
        "metadata/height": np.array([h]),
        "instances/bboxes/ragged_flat_values": np.concatenate(boxes).ravel() if boxes else np.zeros(0, np.float32),
        "instances/bboxes/ragged_row_lengths_0": np.array([len(f) for f in frames], np.int64),
        "instances/bbox_frames/ragged_flat_values": np.concatenate(frames) if frames else np.zeros(0, np.int64),
        "instances/bbox_frames/ragged_row_lengths_0": np.array([len(f) for f in frames], np.int64),
    }
    truth = {"video": video, "segmentations": seg, "depth": depth, "backward_flow": flow.astype(np.uint16),
             "boxes": boxes, "frames": frames}
    return build_example(ex), truth


def write_fake_tfds(root, name="movi_e", config="128x128", splits=None, seed=0):
    """splits: {split: [[num_instances per video] per shard]}. Returns (version dir, {video_name: truth})."""
    splits = splits or {"train": [[3, 15], [23]], "validation": [[12, 5]]}
    rng = np.random.default_rng(seed)
    vdir = os.path.join(root, name, config, "1.0.0")
    os.makedirs(vdir, exist_ok=True)
    truths, info_splits = {}, []
    for split, shards in splits.items():
        for s, counts in enumerate(shards):
            path = os.path.join(vdir, f"{name}-{split}.tfrecord-{s:05d}-of-{len(shards):05d}")
            with open(path, "wb") as f:
                for i, k in enumerate(counts):
                    vname = f"{split}{s}_{i}"
                    payload, truths[vname] = fake_video(rng, vname, k)
                    f.write(frame_record(payload))
        info_splits.append({"name": split, "shardLengths": [str(len(c)) for c in shards],
                            "filepathTemplate": "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"})
    with open(os.path.join(vdir, "dataset_info.json"), "w") as f:
        json.dump({"name": name, "version": "1.0.0", "fileFormat": "tfrecord", "splits": info_splits}, f)
    return vdir, truths
