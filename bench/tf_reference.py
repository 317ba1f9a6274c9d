"""The original's input path, re-built in TensorFlow for a side-by-side throughput figure (bench only).

Runs in its own virtual environment (`make bench-tf` creates `.venv-tf` with a pinned tensorflow-cpu); the
project never imports TensorFlow. What it times, on one pinned core with one tf.data thread, on the MOVi
TFRecord shard itself:
    tf.data.TFRecordDataset -> parse only SAVi's keys -> PNG decodes (video, segmentations, 16-bit depth)
    -> SAVi's STATM-SAVi++ train chain: uint16 dequantisation, dense boxes (K tracks, NOTRACK elsewhere),
    strided random 6-frame window, random resized crop (sample_distorted_bounding_box of the whole frame,
    min_object_covered 0.75, aspect 3/4..4/3, area 0.08..1) with bilinear / nearest resize and flow rescaling,
    log(1 + depth), flow_to_rgb -> batches of 8.
With --cached_decode the decoded videos are held in memory (tf.data cache) and only the chain is timed.
Parsing only the keys the chain reads is what TF's graph optimiser does for TFDS's own `as_dataset`, so this
is the strong form of the baseline.

    .venv-tf/bin/python bench/tf_reference.py SHARD [--seconds S] [--rounds N]  ->  one JSON line
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time

K = 10
WINDOW = 6
RESOLUTION = 128


def _pin_one_core():
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})


def build_dataset(shard: str, batch: int = 8, cached_decode: bool = False):
    import tensorflow as tf

    spec = {
        "video": tf.io.VarLenFeature(tf.string),
        "segmentations": tf.io.VarLenFeature(tf.string),
        "depth": tf.io.VarLenFeature(tf.string),
        "backward_flow": tf.io.VarLenFeature(tf.int64),
        "metadata/backward_flow_range": tf.io.FixedLenFeature([2], tf.float32),
        "metadata/depth_range": tf.io.FixedLenFeature([2], tf.float32),
        "instances/bboxes/ragged_flat_values": tf.io.VarLenFeature(tf.float32),
        "instances/bboxes/ragged_row_lengths_0": tf.io.VarLenFeature(tf.int64),
        "instances/bbox_frames/ragged_flat_values": tf.io.VarLenFeature(tf.int64),
        "instances/bbox_frames/ragged_row_lengths_0": tf.io.VarLenFeature(tf.int64),
    }

    def pngs(strings, dtype, channels):
        return tf.map_fn(lambda s: tf.io.decode_png(s, channels=channels, dtype=dtype), strings,
                         fn_output_signature=dtype)

    def dequantise(codes, value_range):
        return tf.cast(codes, tf.float32) / 65535.0 * (value_range[1] - value_range[0]) + value_range[0]

    def dense_boxes(ex, num_frames):
        boxes = tf.RaggedTensor.from_row_lengths(
            tf.reshape(tf.sparse.to_dense(ex["instances/bboxes/ragged_flat_values"]), (-1, 4)),
            tf.sparse.to_dense(ex["instances/bboxes/ragged_row_lengths_0"]))
        frames = tf.RaggedTensor.from_row_lengths(
            tf.sparse.to_dense(ex["instances/bbox_frames/ragged_flat_values"]),
            tf.sparse.to_dense(ex["instances/bbox_frames/ragged_row_lengths_0"]))

        def track(n):
            return tf.tensor_scatter_nd_update(tf.zeros((num_frames, 4)), frames[n][:, None], boxes[n])

        tracks = tf.map_fn(track, tf.range(tf.minimum(boxes.nrows(), K)), fn_output_signature=tf.float32)
        tracks = tf.pad(tracks, ((0, K - tf.shape(tracks)[0]), (0, 0), (0, 0)))
        return tf.transpose(tracks, (1, 0, 2))  # (T, K, 4)

    def decode(payload):
        ex = tf.io.parse_single_example(payload, spec)
        video = tf.image.convert_image_dtype(pngs(tf.sparse.to_dense(ex["video"]), tf.uint8, 3), tf.float32)
        t, h, w = tf.shape(video)[0], tf.shape(video)[1], tf.shape(video)[2]
        seg = tf.cast(pngs(tf.sparse.to_dense(ex["segmentations"]), tf.uint8, 1)[..., 0], tf.int32)
        depth = dequantise(pngs(tf.sparse.to_dense(ex["depth"]), tf.uint16, 1), ex["metadata/depth_range"])
        flow = dequantise(tf.reshape(tf.sparse.to_dense(ex["backward_flow"]), (t, h, w, 2)),
                          ex["metadata/backward_flow_range"])
        return {"video": video, "segmentations": tf.where(seg <= K, seg, 0), "depth": depth, "flow": flow,
                "boxes": dense_boxes(ex, t), "padding_mask": tf.ones((t, h, w), tf.uint8)}

    def window(f, seed):
        t = tf.shape(f["video"])[0]
        n = tf.cast(tf.math.ceil(t / WINDOW), tf.int32)
        start = tf.random.stateless_uniform((), seed, 0, n, tf.int32) * WINDOW

        def cut(x):
            x = x[start:start + WINDOW]
            return tf.pad(x, [(0, WINDOW - tf.shape(x)[0])] + [(0, 0)] * (len(x.shape) - 1))

        return {k: cut(v) for k, v in f.items()}

    def crop_boxes(boxes, top, left, ch, cw, h, w):
        a = tf.cast(tf.stack([h, w]), tf.float32)
        b = tf.cast(tf.stack([top, left]), tf.float32)
        c = tf.cast(tf.stack([ch, cw]), tf.float32)
        boxes = tf.reshape((tf.reshape(boxes, (WINDOW, K, 2, 2)) * a - b) / c, (WINDOW, K, 4))
        boxes = tf.clip_by_value(boxes, 0.0, 1.0)
        keep = tf.reduce_all(boxes[..., 2:] - boxes[..., :2] > 0.0, axis=-1)
        return tf.where(keep[..., None], boxes, 0.0)

    def random_resized_crop(f, seed):
        shape = tf.shape(f["video"])
        h, w = shape[1], shape[2]
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            shape[1:], tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed, min_object_covered=0.75,
            aspect_ratio_range=(3 / 4, 4 / 3), area_range=(0.08, 1.0), max_attempts=100,
            use_image_if_no_bounding_boxes=True)
        top, left, ch, cw = begin[0], begin[1], size[0], size[1]
        out = {}
        for key, v in f.items():
            if key == "boxes":
                out[key] = crop_boxes(v, top, left, ch, cw, h, w)
                continue
            flat = v[..., None] if key in ("segmentations", "padding_mask") else v
            flat = flat[:, top:top + ch, left:left + cw]
            method = "nearest" if flat.dtype.is_integer else "bilinear"
            flat = tf.image.resize(flat, (RESOLUTION, RESOLUTION), method=method)
            if key == "flow":  # flow stays valid in the new pixel units
                flat *= tf.reshape(tf.stack([RESOLUTION / tf.cast(ch, tf.float32),
                                             RESOLUTION / tf.cast(cw, tf.float32)]), (1, 1, 1, 2))
            out[key] = tf.cast(flat[..., 0], v.dtype) if key in ("segmentations", "padding_mask") else flat
        return out

    def flow_to_rgb(flow):
        scaling = 50.0 / math.hypot(RESOLUTION, RESOLUTION)
        x, y = flow[..., 0], flow[..., 1]
        hue = (tf.atan2(y, x) / math.pi + 1.0) / 2.0
        sat = tf.clip_by_value(tf.sqrt(x * x + y * y) * scaling, 0.0, 1.0)
        hsv = tf.stack([hue, sat, tf.ones_like(hue)], axis=-1)
        rgb = tf.image.convert_image_dtype(tf.image.hsv_to_rgb(hsv), tf.uint8)
        return tf.image.convert_image_dtype(rgb, tf.float32)

    def train_chain(index, f):
        seed = tf.stack([tf.constant(0, tf.int64), index])
        f = window(f, tf.random.experimental.stateless_fold_in(seed, 0))
        f = random_resized_crop(f, tf.random.experimental.stateless_fold_in(seed, 1))
        f["depth"] = tf.math.log(1.0 + f["depth"])
        f["flow"] = flow_to_rgb(f["flow"])
        return f

    options = tf.data.Options()
    options.threading.private_threadpool_size = 1
    options.threading.max_intra_op_parallelism = 1
    ds = tf.data.TFRecordDataset(shard).map(decode)
    ds = ds.cache() if cached_decode else ds  # the chain alone, on decoded videos held in memory
    ds = ds.repeat().enumerate().map(train_chain).batch(batch, drop_remainder=True)
    return ds.with_options(options)


def measure(shard: str, seconds: float = 4.0, rounds: int = 5, batch: int = 8, cached_decode: bool = False) -> dict:
    _pin_one_core()
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    it = iter(build_dataset(shard, batch, cached_decode))
    next(it)  # trace and warm up
    per_batch = []
    for _ in range(rounds):
        n, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds / rounds:
            last = next(it)
            n += 1
        per_batch.append((time.perf_counter() - start) / n)
    shapes = {k: list(v.shape) for k, v in last.items()}
    return {"batched_videos_per_s": batch / statistics.median(per_batch),
            "batched_videos_per_s_best": batch / min(per_batch), "tensorflow": tf.__version__, "shapes": shapes}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("shard")
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--cached_decode", action="store_true", help="time the chain alone on decoded videos in memory")
    a = p.parse_args()
    print(json.dumps(measure(a.shard, a.seconds, a.rounds, cached_decode=a.cached_decode)))
