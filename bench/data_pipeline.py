"""Record decode cost and train-pipeline throughput on one pinned core, on the converted shared MOVi sample,
and the same chain side by side with the original's TensorFlow one.

Each measurement runs in a fresh process pinned to one core (no Grain worker processes), so results do not
depend on what ran before. Ours is the compiled train chain (data/pipeline/fused.py), with glibc's trim/mmap
thresholds raised as the trainer's iterator setup raises them (data/pipeline/allocator.py).
"""

from __future__ import annotations

import functools
import json
import os
import statistics
import subprocess
import tempfile
import time

from bench import child
from bench.report import Measure, Section


def _pin():
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})


def _timeit(fn, min_seconds: float = 2.0) -> float:
    fn()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        fn()
        n += 1
    return (time.perf_counter() - start) / n


def measure_decode(data_dir: str) -> dict:
    """ms per 24-frame 128x128 record: read, header, decode all frames, decode a 6-frame window."""
    _pin()
    from data.pipeline import datasets

    src = datasets.open_split(data_dir, "train", 10)
    recs = [src[i] for i in range(len(src))]
    i = [0]

    def rotate(fn):
        def run():
            i[0] = (i[0] + 1) % len(src)
            return fn(i[0])
        return run

    return {
        "read_ms": 1e3 * _timeit(rotate(src.read_bytes)),
        "read_and_header_ms": 1e3 * _timeit(rotate(lambda k: src[k])),
        "decode_all_24_frames_ms": 1e3 * _timeit(rotate(lambda k: recs[k].decode())),
        "decode_6_frame_window_ms": 1e3 * _timeit(rotate(lambda k: recs[k].decode(6, 12))),
        "record_mb": os.path.getsize(src.paths[0]) / len(src) / 1e6,
    }


def measure_train(data_dir: str, fused: bool, seconds: float = 4.0) -> dict:
    """Videos/s of the STATM-SAVi++ train chain (128x128, window 6, random resized crop, log depth, flow RGB)."""
    _pin()
    from data.pipeline import allocator, datasets

    if fused:  # as the trainer, which sets up its iterator before it pulls the first element
        allocator.keep_freed_memory()

    spec = datasets.PreprocessSpec(resolution=128, max_instances=10, train_crop="random_resized_crop",
                                   depth_transform="log_plus", fused=fused)
    ds = datasets.train_dataset(datasets.open_split(data_dir, "train", 10), spec, seed=0)
    idx = [0]

    def element():
        idx[0] += 1
        return ds[idx[0]]

    # Five rounds each: the median is the figure; the best shows how much the shared machine's noise costs.
    per_element = [_timeit(element, seconds / 5) for _ in range(5)]
    out = {"element_videos_per_s": 1 / statistics.median(per_element)}
    # Batches through the ElasticIterator, synchronously (on one core a prefetch thread cannot overlap
    # anything) and with the trainer's read thread (its switching costs show as the difference).
    for threads, suffix in ((0, ""), (1, "_read_thread")):
        it = datasets.train_iterator(ds, 8, read_threads=threads, prefetch_buffer_size=8 * threads)
        per_batch = [_timeit(functools.partial(next, it), seconds / 5) for _ in range(5)]
        it.close()
        out[f"batched_videos_per_s{suffix}"] = 8 / statistics.median(per_batch)
        out[f"batched_videos_per_s{suffix}_best"] = 8 / min(per_batch)
    return out


def _tf_child(tf_python: str, shard: str, cached_decode: bool) -> dict:
    """The original's input path rebuilt in TensorFlow (bench/tf_reference.py), in its own environment."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tf_reference.py")
    r = subprocess.run([tf_python, script, shard] + (["--cached_decode"] if cached_decode else []),
                       capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"tf_reference failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def side_by_side_tf(data_dir: str, shard: str, tf_python: str, alternations: int = 3) -> dict:
    """Our train chain and the original's TF one, alternating in fresh processes on the same pinned core, so
    that the shared machine's drift (1.3-1.5x within an hour) hits both alike. Ratios are per alternation."""
    rows: dict[str, list[float]] = {"ours": [], "tf_cached_decode": [], "tf_full": []}
    for _ in range(alternations):
        rows["ours"].append(child.call("data_pipeline", "measure_train", data_dir, True)["batched_videos_per_s"])
        rows["tf_cached_decode"].append(_tf_child(tf_python, shard, True)["batched_videos_per_s"])
        rows["tf_full"].append(_tf_child(tf_python, shard, False)["batched_videos_per_s"])
    out = {k: statistics.median(v) for k, v in rows.items()}
    for name in ("tf_cached_decode", "tf_full"):
        out[f"ratio_vs_{name}"] = statistics.median(o / t for o, t in zip(rows["ours"], rows[name], strict=True))
    out["rounds"] = rows
    return out


def measure(quick: bool, movi_sample: str, tf_python: str | None = None, log=print) -> tuple[Section, dict]:
    """The suite's data section: our ++ train chain on one core and, with `tf_python`, side by side with the
    original's TensorFlow chain (alternating fresh processes)."""
    from data.convert_tfds_to_arrayrecord import convert

    measures = []
    with tempfile.TemporaryDirectory() as tmp:
        convert(movi_sample, "movi_a/128x128:1.0.0", tmp, num_workers=1, log=lambda *a: None)
        log("  data: the STATM-SAVi++ train chain on one core")
        ours = child.call("data_pipeline", "measure_train", tmp, True, 2.0 if quick else 4.0)
        rate = ours["batched_videos_per_s"]
        decode = child.call("data_pipeline", "measure_decode", tmp)
        measures.append(Measure("decode one 24-frame 128x128 record (eval)", decode["decode_all_24_frames_ms"], "ms",
                                None, f"{decode['record_mb']:.3f} MB on disk"))
        measures.append(Measure("decode one 6-frame window (train)", decode["decode_6_frame_window_ms"], "ms"))
        measures.append(Measure("STATM-SAVi++ train chain, one core, batches of 8", rate, "videos/s", None,
                                f"best round {ours['batched_videos_per_s_best']:.0f}"))
        shard = os.path.join(movi_sample, "movi_a/128x128/1.0.0/movi_a-train.tfrecord-00000-of-00001")
        if tf_python:
            log("  data: side by side with the original's TensorFlow chain")
            tf = side_by_side_tf(tmp, shard, tf_python, alternations=1 if quick else 3)
            measures.append(Measure("STATM-SAVi++ train chain per core, ours / the original's tf.data chain",
                                    tf["ratio_vs_tf_cached_decode"], "x", ">= 2.5",
                                    f"TF: {tf['tf_cached_decode']:.0f} videos/s on decoded videos held in memory, "
                                    f"{tf['tf_full']:.0f} from the TFRecord shard; ours {tf['ours']:.0f}"))
        else:
            measures.append(Measure("STATM-SAVi++ train chain per core, ours / the original's tf.data chain", None,
                                    "x", ">= 2.5", "needs TensorFlow: .venv-tf (python -m bench builds it unless "
                                                   "--no_tf), or --tf_python"))
    return Section("data", "Input pipeline", measures), {"videos_per_core": rate}
