"""Grain train/eval input pipelines over converted video records.

Train: records -> global shuffle, re-drawn every epoch, repeated forever -> SAVi ops -> ElasticIterator,
which shards by process and batches to global_batch / process_count. Its state is one JSON counter,
`{"global_next_index": N}`, the same on every process and independent of process and worker counts;
random ops draw from (seed, global element index), so augmentations are too.

Eval: one pass over the split, padded to a multiple of the global batch with copies flagged `mask=False`,
sliced `[process_index::process_count]` so every process yields the same number of batches.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import sys
from collections.abc import Iterator
from typing import Any

import grain
import numpy as np

from data import fused, record_io
from data import transforms as T

log = logging.getLogger(__name__)
TRAIN_CROPS = ("none", "random_resized_crop")


@dataclasses.dataclass(frozen=True)
class PreprocessSpec:
    """What the SAVi chains need; built from the config's `data` block and `max_instances`."""

    resolution: int = 64  # resize_small size (eval, and train without crop); crop output size otherwise
    max_instances: int = 10  # K
    depth_transform: str = "none"  # "none" | "log_plus"
    train_crop: str = "none"  # "none" | "random_resized_crop"
    train_frames: int = 6
    eval_frames: int = 24
    min_object_covered: float = 0.75
    fused: bool = True  # train chain as one compiled pass (data/fused.py); False: op-by-op NumPy

    def __post_init__(self):
        problems = []
        if self.train_crop not in TRAIN_CROPS:
            problems.append(f"data.train_crop={self.train_crop!r} (expected one of {TRAIN_CROPS})")
        if self.depth_transform not in ("none", "log_plus"):
            problems.append(f"data.depth_transform={self.depth_transform!r} (expected 'none' or 'log_plus')")
        for name in ("resolution", "max_instances", "train_frames", "eval_frames"):
            if int(getattr(self, name)) <= 0:
                problems.append(f"{name}={getattr(self, name)} (must be positive)")
        if problems:
            raise ValueError("bad data config: " + "; ".join(problems))


def spec_from_config(config) -> PreprocessSpec:
    d = config.data
    return PreprocessSpec(resolution=int(d.resolution), max_instances=int(config.max_instances),
                          depth_transform=str(d.depth_transform), train_crop=str(d.train_crop),
                          train_frames=int(d.train_frames), eval_frames=int(d.eval_frames),
                          fused=bool(d.fused_train_ops))


def train_ops(spec: PreprocessSpec) -> list[grain.transforms.Transformation]:
    """SAVi's train chain. The window is taken while decoding (identical result, 4x less decoding); flow stays
    flow_to_rgb's uint8 codes (T.flow_codes_to_float gives its float32 values exactly, on the device)."""
    ops: list[Any] = [T.DecodeStridedWindow(spec.train_frames), T.SparseToDenseAnnotation(spec.max_instances)]
    if spec.fused:
        return ops + [fused.FusedToModel(spec.resolution, spec.train_crop == "random_resized_crop",
                                         spec.depth_transform == "log_plus", spec.min_object_covered)]
    ops.append(T.VideoFromRecord())
    if spec.train_crop == "random_resized_crop":
        ops.append(T.RandomResizedCrop(spec.resolution, spec.resolution, spec.min_object_covered))
    else:
        ops.append(T.ResizeSmall(spec.resolution))
    return ops + [T.TransformDepth(spec.depth_transform), T.FlowToRGB(codes=True)]


def eval_ops(spec: PreprocessSpec) -> list[grain.transforms.Transformation]:
    return [T.DecodeRecord(), T.VideoFromRecord(), T.SparseToDenseAnnotation(spec.max_instances),
            T.TemporalCropOrPad(spec.eval_frames),
            T.ResizeSmall(spec.resolution), T.TransformDepth(spec.depth_transform), T.FlowToRGB()]


def apply_ops(ds: grain.MapDataset, ops) -> grain.MapDataset:
    for op in ops:
        ds = ds.random_map(op) if isinstance(op, grain.transforms.RandomMap) else ds.map(op)
    return ds


def open_split(data_dir: str, split: str, max_instances: int) -> record_io.VideoRecordSource:
    """Opens a split after checking the dataset (exists, converted, split present, non-empty)."""
    info = record_io.read_dataset_info(data_dir)
    source = record_io.VideoRecordSource(record_io.split_files(data_dir, info, split))
    if info.get("max_instances", 0) > max_instances:
        log.warning("%s has videos with up to %d instances but max_instances=%d: boxes beyond the first %d "
                    "are dropped and their segmentation ids set to background (as SAVi's sparse_to_dense)",
                    data_dir, info["max_instances"], max_instances, max_instances)
    return source


def data_fingerprint(source: record_io.VideoRecordSource, spec: PreprocessSpec, seed: int) -> dict[str, Any]:
    """What an iterator state is only valid with: the ordered file list, counts, seed and the chain."""
    files = [p.rsplit("/", 2)[-2:] for p in source.paths]
    blob = json.dumps({"files": files, "n": len(source), "seed": seed, "spec": dataclasses.asdict(spec)},
                      sort_keys=True)
    return {"num_records": len(source), "seed": seed, "sha256": hashlib.sha256(blob.encode()).hexdigest()}


class EpochShuffledSource:
    """`source` repeated forever, every epoch in its own permutation drawn from (seed, epoch).

    Random access (element i = source[perm_{i // n}[i % n]]), so the stream is a pure function of the
    global index, as the ElasticIterator state requires. Grain's index_shuffle costs ~11 ms per element on a
    3-record dataset (and ~12 us on 10k); a cached permutation costs one numpy shuffle per epoch.
    """

    def __init__(self, source, seed: int):
        self._source, self._seed = source, int(seed)
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return sys.maxsize

    def permutation(self, epoch: int) -> np.ndarray:
        perm = self._cache.get(epoch)
        if perm is None:
            n = len(self._source)
            perm = np.random.default_rng([self._seed, epoch]).permutation(n)
            perm = perm.astype(np.int64 if n >= 2**31 else np.int32)
            self._cache = {epoch - 1: self._cache.get(epoch - 1), epoch: perm}  # keep two epochs (prefetch overlap)
        return perm

    def __getitem__(self, index: int):
        epoch, j = divmod(int(index), len(self._source))
        return self._source[int(self.permutation(epoch)[j])]

    def __getstate__(self):
        return {**self.__dict__, "_cache": {}}


def train_dataset(source: record_io.VideoRecordSource, spec: PreprocessSpec, seed: int) -> grain.MapDataset:
    ds = grain.MapDataset.source(EpochShuffledSource(source, seed)).seed(seed)
    return apply_ops(ds, train_ops(spec)).map(DropStrings())


def train_iterator(ds: grain.MapDataset, global_batch_size: int, process_index: int = 0, process_count: int = 1,
                   worker_count: int = 0, read_threads: int = 8, prefetch_buffer_size: int = 32):
    """ElasticIterator over `ds`: yields this process's share of each global batch."""
    if global_batch_size % process_count:
        suggestion = process_count * max(1, global_batch_size // process_count)
        raise ValueError(f"global batch {global_batch_size} is not divisible by {process_count} processes; "
                         f"use a multiple of {process_count}, e.g. {suggestion}")
    mp = grain.MultiprocessingOptions(num_workers=worker_count) if worker_count > 0 else None
    return grain.experimental.ElasticIterator(
        ds, global_batch_size, grain.sharding.ShardOptions(process_index, process_count),
        read_options=grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch_buffer_size),
        multiprocessing_options=mp)


def target_means(ds: grain.MapDataset, keys: tuple[str, ...], num_examples: int) -> dict[str, np.ndarray]:
    """Per-channel float32 means of the given train targets over the first `num_examples` elements of the
    stream (random access: the iterator is not advanced, and every process computes the same values)."""
    sums: dict[str, np.ndarray] = {}
    for i in range(num_examples):
        element = ds[i]
        for key in keys:
            x = T.train_target_to_float(element[key])
            sums[key] = sums.get(key, 0.0) + x.reshape(-1, x.shape[-1]).astype(np.float64).mean(axis=0)
    return {key: (total / num_examples).astype(np.float32) for key, total in sums.items()}


@dataclasses.dataclass(frozen=True)
class DropStrings(grain.transforms.Map):
    """Device batches carry numbers only; the video name stays available in preview and eval sources."""

    def map(self, f: T.Features) -> T.Features:
        return {k: v for k, v in f.items() if np.asarray(v).dtype.kind not in "US"}


class PaddedSource:
    """`source` padded to a multiple of `multiple` with copies of record 0, each tagged with `mask`."""

    def __init__(self, source: record_io.VideoRecordSource, multiple: int):
        self._source = source
        self._len = -(-len(source) // multiple) * multiple

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int):
        real = index < len(self._source)
        return self._source[index if real else 0].with_extra(mask=np.bool_(real))


def eval_dataset(source: record_io.VideoRecordSource, spec: PreprocessSpec, global_batch_size: int,
                 process_index: int = 0, process_count: int = 1, keep_names: bool = False) -> grain.MapDataset:
    """One padded pass; batches of global_batch_size / process_count for this process."""
    if global_batch_size % process_count:
        raise ValueError(f"eval batch {global_batch_size} is not divisible by {process_count} processes")
    ds = grain.MapDataset.source(PaddedSource(source, global_batch_size))[process_index::process_count]
    ds = apply_ops(ds, eval_ops(spec))
    if not keep_names:
        ds = ds.map(DropStrings())
    return ds.batch(global_batch_size // process_count, drop_remainder=False)


def eval_batches(source: record_io.VideoRecordSource, spec: PreprocessSpec, global_batch_size: int,
                 process_index: int = 0, process_count: int = 1, read_threads: int = 4) -> Iterator[T.Features]:
    ds = eval_dataset(source, spec, global_batch_size, process_index, process_count)
    return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=4)))


def eval_examples(source: record_io.VideoRecordSource, spec: PreprocessSpec, num_examples: int) -> list[T.Features]:
    """The first `num_examples` videos of a split through the eval chain, unbatched, names kept."""
    ds = eval_dataset(source, spec, global_batch_size=1, keep_names=True)
    return [{k: v[0] for k, v in ds[i].items()} for i in range(min(num_examples, len(source)))]


def expected_shapes(spec: PreprocessSpec, batch: int, train: bool, frames: int | None = None) -> dict[str, tuple]:
    """The documented batch shapes (README "Data"); used by tests and the smoke run."""
    t = frames or (spec.train_frames if train else spec.eval_frames)
    r, k = spec.resolution, spec.max_instances
    shapes = {"video": (batch, t, r, r, 3), "segmentations": (batch, t, r, r), "flow": (batch, t, r, r, 3),
              "depth": (batch, t, r, r, 1), "boxes": (batch, t, k, 4), "padding_mask": (batch, t, r, r),
              "shape": (batch, 4)}
    if not train:
        shapes["mask"] = (batch,)
    return shapes

