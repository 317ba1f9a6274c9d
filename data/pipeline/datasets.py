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

from data import batch
from data.pipeline import allocator, fused
from data.pipeline import transforms as T
from data.records import shards

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class PreprocessSpec:
    """What the SAVi chains need; built from the config by `spec_from_config` (its values are checked by
    configs/validate.py before anything is built)."""

    resolution: int = 64  # resize_small size (eval, and train without crop); crop output size otherwise
    max_instances: int = 10  # K
    depth_transform: str = "none"  # "none" | "log_plus"
    train_crop: str = "none"  # "none" | "random_resized_crop"
    train_frames: int = 6
    eval_frames: int = 24
    min_object_covered: float = 0.75
    fused: bool = True  # train chain as one compiled pass (data/pipeline/fused.py); False: op-by-op NumPy
    targets: tuple[str, ...] = ("flow",)  # the decoder's targets: train batches carry only these besides the inputs

    @property
    def train_schema(self) -> batch.Schema:
        return batch.train_schema(self.targets)


def spec_from_config(config) -> PreprocessSpec:
    d = config.data
    return PreprocessSpec(resolution=int(d.resolution), max_instances=int(config.max_instances),
                          depth_transform=str(d.depth_transform), train_crop=str(d.train_crop),
                          train_frames=int(d.train_frames), eval_frames=int(d.eval_frames),
                          fused=bool(d.fused_train_ops), targets=tuple(sorted(config.model.decoder.targets)))


def train_ops(spec: PreprocessSpec) -> list[grain.transforms.Transformation]:
    """SAVi's train chain, ending in the train batch schema (data/batch.py). The window is taken while decoding
    (identical result, 4x less decoding); flow is carried as the schema states (flow_to_rgb's uint8 codes).
    Grain seeds each random op by its depth below `.seed()`: an op inserted before the last random op changes
    every augmentation draw."""
    schema = spec.train_schema
    ops: list[Any] = [T.DecodeStridedWindow(spec.train_frames), T.SparseToDenseAnnotation(spec.max_instances)]
    if spec.fused:
        return ops + [fused.FusedToModel(spec.resolution, spec.train_crop == "random_resized_crop",
                                         spec.depth_transform == "log_plus", spec.min_object_covered),
                      batch.Select(schema)]
    ops.append(T.VideoFromRecord())
    if spec.train_crop == "random_resized_crop":
        ops.append(T.RandomResizedCrop(spec.resolution, spec.resolution, spec.min_object_covered))
    else:
        ops.append(T.ResizeSmall(spec.resolution))
    return ops + [T.TransformDepth(spec.depth_transform), T.FlowToRGB(codes=batch.FLOW_CODES.codes),
                  batch.Select(schema)]


def eval_ops(spec: PreprocessSpec) -> list[grain.transforms.Transformation]:
    return [T.DecodeRecord(), T.VideoFromRecord(), T.SparseToDenseAnnotation(spec.max_instances),
            T.TemporalCropOrPad(spec.eval_frames),
            T.ResizeSmall(spec.resolution), T.TransformDepth(spec.depth_transform), T.FlowToRGB()]


def apply_ops(ds: grain.MapDataset, ops) -> grain.MapDataset:
    for op in ops:
        ds = ds.random_map(op) if isinstance(op, grain.transforms.RandomMap) else ds.map(op)
    return ds


def open_split(data_dir: str, split: str, max_instances: int) -> shards.VideoRecordSource:
    """Opens a split after checking the dataset (exists, converted, split present, non-empty)."""
    info = shards.read_dataset_info(data_dir)
    source = shards.VideoRecordSource(shards.split_files(data_dir, info, split))
    if info.get("max_instances", 0) > max_instances:
        log.warning("%s has videos with up to %d instances but max_instances=%d: boxes beyond the first %d "
                    "are dropped and their segmentation ids set to background (as SAVi's sparse_to_dense)",
                    data_dir, info["max_instances"], max_instances, max_instances)
    return source


# The PreprocessSpec fields that decide which training example comes at which global index and how it is
# preprocessed, under their config keys. eval_frames and fused (equal batches by another implementation) do not.
STREAM_FIELDS = {"resolution": "data.resolution", "max_instances": "max_instances",
                 "depth_transform": "data.depth_transform", "train_crop": "data.train_crop",
                 "train_frames": "data.train_frames", "min_object_covered": "min_object_covered (train crop)",
                 "targets": "model.decoder.targets"}


def data_fingerprint(source: shards.VideoRecordSource, spec: PreprocessSpec, seed: int) -> dict[str, Any]:
    """What an iterator state is only valid with, key by key: the ordered shard list and counts, the seed and
    the train chain's settings (STREAM_FIELDS). "sha256" covers them all."""
    files = [p.rsplit("/", 2)[-2:] for p in source.paths]
    digest = hashlib.sha256(json.dumps(files).encode()).hexdigest()[:16]
    keys = {"data.data_dir (train shards)": f"{len(files)} shards, {len(source)} videos, sha256 {digest}",
            "seed": seed}
    fields = dataclasses.asdict(spec)
    keys.update({name: list(fields[f]) if isinstance(fields[f], tuple) else fields[f]
                 for f, name in STREAM_FIELDS.items()})
    return {"keys": keys, "sha256": hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()}


def stream_changes(saved: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{key: (saved value, current value)} for every key whose value differs (None: absent)."""
    old, new = saved.get("keys", {}), current.get("keys", {})
    return {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}


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


def train_dataset(source: shards.VideoRecordSource, spec: PreprocessSpec, seed: int) -> grain.MapDataset:
    ds = grain.MapDataset.source(EpochShuffledSource(source, seed)).seed(seed)
    return apply_ops(ds, train_ops(spec))


def train_iterator(ds: grain.MapDataset, global_batch_size: int, process_index: int = 0, process_count: int = 1,
                   worker_count: int = 0, read_threads: int = 8, prefetch_buffer_size: int = 32):
    """ElasticIterator over `ds`: yields this process's share of each global batch."""
    if global_batch_size % process_count:
        suggestion = process_count * max(1, global_batch_size // process_count)
        raise ValueError(f"global batch {global_batch_size} is not divisible by {process_count} processes; "
                         f"use a multiple of {process_count}, e.g. {suggestion}")
    allocator.keep_freed_memory()  # this process, and (through the environment) the Grain workers it starts
    mp = grain.MultiprocessingOptions(num_workers=worker_count) if worker_count > 0 else None
    return grain.experimental.ElasticIterator(
        ds, global_batch_size, grain.sharding.ShardOptions(process_index, process_count),
        read_options=grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=prefetch_buffer_size),
        multiprocessing_options=mp)


def target_means(ds: grain.MapDataset, schema: batch.Schema, keys: tuple[str, ...],
                 num_examples: int) -> dict[str, np.ndarray]:
    """Per-channel float32 means of the given train targets over the first `num_examples` elements of the
    stream (random access: the iterator is not advanced, and every process computes the same values)."""
    sums: dict[str, np.ndarray] = {}
    for i in range(num_examples):
        element = ds[i]
        for key in keys:
            x = schema.to_float(key, element[key])
            sums[key] = sums.get(key, 0.0) + x.reshape(-1, x.shape[-1]).astype(np.float64).mean(axis=0)
    return {key: (total / num_examples).astype(np.float32) for key, total in sums.items()}


class PaddedSource:
    """`source` padded to a multiple of `multiple` with copies of record 0, each tagged with `mask`."""

    def __init__(self, source: shards.VideoRecordSource, multiple: int):
        self._source = source
        self._len = -(-len(source) // multiple) * multiple

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int):
        real = index < len(self._source)
        return self._source[index if real else 0].with_extra(mask=np.bool_(real))


def eval_dataset(source: shards.VideoRecordSource, spec: PreprocessSpec, global_batch_size: int,
                 process_index: int = 0, process_count: int = 1, raw: bool = False) -> grain.MapDataset:
    """One padded pass; batches of global_batch_size / process_count for this process, in the eval batch
    schema (data/batch.py). raw=True keeps every key the chain makes (`shape`, `video_name`: previews)."""
    if global_batch_size % process_count:
        raise ValueError(f"eval batch {global_batch_size} is not divisible by {process_count} processes")
    ds = grain.MapDataset.source(PaddedSource(source, global_batch_size))[process_index::process_count]
    ds = apply_ops(ds, eval_ops(spec) if raw else [*eval_ops(spec), batch.Select(batch.EVAL)])
    return ds.batch(global_batch_size // process_count, drop_remainder=False)


def eval_batches(source: shards.VideoRecordSource, spec: PreprocessSpec, global_batch_size: int,
                 process_index: int = 0, process_count: int = 1, read_threads: int = 4) -> Iterator[T.Features]:
    ds = eval_dataset(source, spec, global_batch_size, process_index, process_count)
    return iter(ds.to_iter_dataset(grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=4)))


def eval_examples(source: shards.VideoRecordSource, spec: PreprocessSpec, num_examples: int) -> list[T.Features]:
    """The first `num_examples` videos of a split through the eval chain, unbatched, names kept."""
    ds = eval_dataset(source, spec, global_batch_size=1, raw=True)
    return [{k: v[0] for k, v in ds[i].items()} for i in range(min(num_examples, len(source)))]
