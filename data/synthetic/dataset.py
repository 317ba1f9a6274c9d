"""Synthetic MOVi-A-like videos in our record format: the built-in demo data (NumPy only).

    python -m data.synthetic --out_dir demo_data                       # defaults: 128x128, 24 frames
    python -m data.synthetic --out_dir /tmp/s --num_train 64 --num_validation 8 --resolution 64

Each video: 3-10 shaded objects (see data/synthetic/scene.py) rendered at `supersample`x the output size and
reduced as MOVi is (video: block mean; segmentation, depth, flow: nearest pick), with backward flow from the
rigid motion, depth as camera distance, visible objects only, ordered by visibility, boxes at render
resolution with NOTRACK where an object is not visible. Deterministic in (seed, split, index, style).
The style flags (--size_scale, --speed, --friction, --shadow_light, --floor_jitter, --floor_tint, --floor_gradient;
scene.Style) default to MOVi-A's look; the demo's are in the Makefile (DEMO_SYNTH_ARGS).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import sys
import time
from typing import Any

import numpy as np

from data.records import codec, shards
from data.synthetic import scene as scenes

VIDEOS_PER_SHARD = 64


def generate_video(seed: int, split: str, index: int, resolution: int = 128, num_frames: int = 24,
                   min_objects: int = 3, max_objects: int = 10, supersample: int = 2,
                   style: scenes.Style = scenes.MOVI_A) -> dict[str, Any]:
    rng = np.random.default_rng([seed, {"train": 0, "validation": 1}.get(split, 2), index])
    scene = scenes.sample_scene(rng, int(rng.integers(min_objects, max_objects + 1)), num_frames, style=style)
    big = resolution * supersample
    dirs = scenes.camera_rays(scene, big, big)
    frames = [scenes.render_frame(scene, t, dirs) for t in range(num_frames)]
    ids_big = np.stack([f[1] for f in frames]).reshape(num_frames, big, big)
    rgb = np.stack([f[0] for f in frames]).reshape(num_frames, resolution, supersample, resolution, supersample, 3)
    pick = (supersample - 1) // 2  # MOVi's nearest subsampling offset
    sub = (slice(None), slice(pick, None, supersample), slice(pick, None, supersample))
    depth = np.minimum(np.stack([f[2] for f in frames]).reshape(num_frames, big, big), 100.0)[sub]
    flow = np.stack([scenes.backward_flow(scene, t, f[1], f[3], big, big) for t, f in enumerate(frames)])
    flow = flow.reshape(num_frames, big, big, 2)[sub] / supersample
    ids = ids_big[sub]

    # Visible objects only, sorted by visibility (descending), as MOVi: id k+1 = k-th most visible.
    counts = np.bincount(ids.ravel(), minlength=len(scene.shape) + 1)[1:]
    order = [k for k in np.argsort(-counts, kind="stable") if counts[k] > 0]
    remap = np.zeros(len(scene.shape) + 1, np.uint8)
    remap[np.array(order, dtype=np.int64) + 1] = np.arange(1, len(order) + 1)
    boxes = np.zeros((num_frames, max(codec.MIN_BOX_COLUMNS, len(order)), 4), np.float32)
    for rank, k in enumerate(order):
        for t in range(num_frames):
            ys, xs = np.nonzero(ids_big[t] == k + 1)
            if len(ys):  # boxes at render resolution, as Kubric computes them
                boxes[t, rank] = [ys.min() / big, xs.min() / big, (ys.max() + 1) / big, (xs.max() + 1) / big]
    return {
        "video": np.round(rgb.mean(axis=(2, 4)) * 255).astype(np.uint8),
        "segmentations": remap[ids],
        "backward_flow": _quantise(flow)[0],
        "backward_flow_range": _quantise(flow)[1],
        "depth": _quantise(depth)[0],
        "depth_range": _quantise(depth)[1],
        "boxes": boxes,
        "num_instances": np.int32(len(order)),
        "video_name": f"synth_{split}_{index:06d}",
    }


def _quantise(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Float field -> (uint16 codes, float32 [min, max]) as MOVi stores depth and flow."""
    lo, hi = np.float32(x.min()), np.float32(x.max())
    scale = (x - lo) / max(float(hi - lo), 1e-12)
    return np.round(scale * 65535).astype(np.uint16), np.array([lo, hi], np.float32)


def _write_shard(job: tuple) -> dict[str, Any]:
    out_dir, rel, split, indices, params = job
    def encoded():
        for i in indices:
            v = generate_video(params["seed"], split, i, params["resolution"], params["num_frames"],
                               params["min_objects"], params["max_objects"], params["supersample"],
                               scenes.Style(**params["style"]))
            yield v["video_name"], int(v["num_instances"]), codec.encode(v)
    return shards.write_shard(os.path.join(out_dir, rel), encoded(), extra={"generator": params})


def generate(out_dir: str, num_train: int = 512, num_validation: int = 64, resolution: int = 128,
             num_frames: int = 24, min_objects: int = 3, max_objects: int = 10, seed: int = 0,
             supersample: int = 2, num_workers: int = 1, skip_existing: bool = False, log=print,
             style: scenes.Style = scenes.MOVI_A) -> dict[str, Any]:
    params = dict(seed=seed, resolution=resolution, num_frames=num_frames, min_objects=min_objects,
                  max_objects=max_objects, supersample=supersample, num_train=num_train,
                  num_validation=num_validation, style=dataclasses.asdict(style))
    if not 1 <= min_objects <= max_objects or max_objects > 255:
        raise ValueError(f"need 1 <= min_objects ({min_objects}) <= max_objects ({max_objects}) <= 255")
    out_dir = os.path.abspath(out_dir)
    info_path = os.path.join(out_dir, shards.INFO_FILE)
    if skip_existing and os.path.exists(info_path):
        with open(info_path) as f:
            info = json.load(f)
        if info.get("generator") == params:
            counts = {s: v["num_records"] for s, v in info["splits"].items()}
            log(f"{out_dir}: synthetic data already present ({counts})")
            return info
        log(f"{out_dir}: existing data was generated with other settings; regenerating")
    jobs, splits = [], {}
    for split, count in (("train", num_train), ("validation", num_validation)):
        num_shards = max(1, -(-count // VIDEOS_PER_SHARD))
        splits[split] = [shards.shard_name(split, s, num_shards) for s in range(num_shards)]
        for s, rel in enumerate(splits[split]):
            if not shards.shard_done(os.path.join(out_dir, rel)):
                jobs.append((out_dir, rel, split, list(range(s, count, num_shards)), params))
    start, done = time.time(), 0
    total = sum(len(j[3]) for j in jobs)
    pool = multiprocessing.get_context("spawn").Pool(num_workers) if num_workers > 1 and len(jobs) > 1 else None
    try:
        for m in (pool.imap_unordered(_write_shard, jobs) if pool else map(_write_shard, jobs)):
            done += m["num_records"]
            rate = done / (time.time() - start)
            log(f"synthetic: {done}/{total} videos, {rate:.1f} videos/s, ETA {(total - done) / rate:.0f} s")
    finally:
        if pool:
            pool.terminate()
    meta = {"source": {"generator": "data.synthetic"}, "generator": params,
            "resolution": [resolution, resolution], "num_frames": num_frames, "skipped_records": 0,
            "writer_options": shards.DEFAULT_WRITER_OPTIONS}
    info = shards.write_dataset_info(out_dir, splits, meta)
    log(f"wrote {info_path}: { {s: v['num_records'] for s, v in info['splits'].items()} }")
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out_dir", required=True)
    p.add_argument("--num_train", type=int, default=512)
    p.add_argument("--num_validation", type=int, default=64)
    p.add_argument("--resolution", type=int, default=128)
    p.add_argument("--num_frames", type=int, default=24)
    p.add_argument("--min_objects", type=int, default=3)
    p.add_argument("--max_objects", type=int, default=10)
    style = p.add_argument_group("style (defaults: MOVi-A's look)")
    style.add_argument("--size_scale", type=float, default=scenes.Style.size_scale, help="multiplies object sizes")
    style.add_argument("--speed", type=float, default=scenes.Style.speed, help="multiplies initial velocities")
    style.add_argument("--friction", type=float, default=scenes.Style.friction,
                       help="sliding friction: lower keeps objects moving longer")
    style.add_argument("--shadow_light", type=float, default=scenes.Style.shadow_light,
                       help="share of the direct light in shadows (1: no shadows)")
    style.add_argument("--floor_jitter", type=float, default=scenes.Style.floor_jitter,
                       help="the floor's gray level varies per video by this fraction")
    style.add_argument("--floor_tint", type=float, default=scenes.Style.floor_tint,
                       help="then each colour channel of the floor varies per video by this fraction")
    style.add_argument("--floor_gradient", type=float, default=scenes.Style.floor_gradient,
                       help="the floor's brightness ramps by +- this fraction across it, in a direction per video")
    p.add_argument("--supersample", type=int, default=2, help="render at this multiple, then reduce as MOVi")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num_workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--skip_existing", action="store_true", help="do nothing if the same data is already there")
    a = p.parse_args(argv)
    try:
        generate(a.out_dir, a.num_train, a.num_validation, a.resolution, a.num_frames, a.min_objects,
                 a.max_objects, a.seed, a.supersample, a.num_workers, a.skip_existing,
                 style=scenes.Style(size_scale=a.size_scale, speed=a.speed, friction=a.friction,
                                    shadow_light=a.shadow_light, floor_jitter=a.floor_jitter,
                                    floor_tint=a.floor_tint, floor_gradient=a.floor_gradient))
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
