"""Pipeline smoke run: train batches, an iterator save/restore round trip, one eval pass, PNG previews.

    python -m data.tools.smoke --config configs/demo.py --config.data.data_dir=$PWD/demo_data --workdir /tmp/smoke

Checks the data path on its own, without a model: it fails loudly if a batch breaks its schema
(data/batch.py), if a restored iterator does not continue exactly where the saved one stopped, or if the eval
pass does not cover the split exactly once. It writes previews of two eval videos and of one train clip
(`preview_train_clip.png`, with the clip itself as `preview_train_clip.npz`).
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
from absl import app, flags
from ml_collections import config_flags
from PIL import Image

from cli.config_flags import check_config_overrides
from configs.validate import expand_path, expand_paths, validate
from data import batch as schema_lib
from data import pictures
from data.pipeline import datasets
from data.records import codec

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Where previews and the iterator state are written.")
_NUM_BATCHES = flags.DEFINE_integer("num_batches", 20, "Train batches to pull.")


def run(config, workdir: str, num_batches: int, log=print) -> dict:
    validate(config)
    spec = datasets.spec_from_config(config)
    d = config.data
    train_src = datasets.open_split(d.data_dir, d.train_split, spec.max_instances)
    eval_src = datasets.open_split(d.data_dir, d.eval_split, spec.max_instances)
    ds = datasets.train_dataset(train_src, spec, config.seed)

    def make_iterator():
        return datasets.train_iterator(ds, config.batch_size, worker_count=d.worker_count,
                                       read_threads=d.read_threads, prefetch_buffer_size=d.prefetch_buffer_size)

    it = make_iterator()
    start = time.perf_counter()
    for _ in range(num_batches):
        batch = next(it)
        spec.train_schema.check(batch, config.batch_size, spec.train_frames, spec.resolution, spec.max_instances)
    rate = num_batches * config.batch_size / (time.perf_counter() - start)
    log(f"train: {num_batches} batches of {config.batch_size} from {len(train_src)} videos, {rate:.1f} videos/s; "
        + ", ".join(f"{k} {v.shape} {v.dtype}" for k, v in batch.items()))

    # The iterator state is a small JSON counter: save it, continue, restore into a fresh iterator, compare.
    state = it.get_state()
    with open(os.path.join(workdir, "data_state.json"), "w") as f:
        json.dump(state, f)
    after = next(it)
    restored = make_iterator()
    restored.set_state(json.loads(json.dumps(state)))
    again = next(restored)
    if not all(np.array_equal(after[k], again[k]) for k in after):
        raise AssertionError(f"restored iterator ({state}) did not reproduce the next batch")
    log(f"iterator state {state}: restored iterator continues bit-identically")

    seen, n_batches, eval_start = 0, 0, time.perf_counter()
    for eval_batch in datasets.eval_batches(eval_src, spec, config.eval_batch_size):
        schema_lib.EVAL.check(eval_batch, config.eval_batch_size, spec.eval_frames, spec.resolution,
                              spec.max_instances)
        seen += int(eval_batch["mask"].sum())
        n_batches += 1
    if seen != len(eval_src):
        raise AssertionError(f"eval pass covered {seen} real videos, split has {len(eval_src)}")
    log(f"eval: {n_batches} batches covering all {seen} videos once ({time.perf_counter() - eval_start:.1f} s)")

    paths = []
    for ex in datasets.eval_examples(eval_src, spec, 2):
        paths.append(os.path.join(workdir, f"preview_{ex['video_name']}.png"))
        Image.fromarray(pictures.grid(pictures.example_rows(ex, schema_lib.EVAL))).save(paths[-1])
    clip = {k: v[0] for k, v in after.items()}
    paths.append(os.path.join(workdir, "preview_train_clip.png"))
    Image.fromarray(pictures.grid(pictures.example_rows(clip, spec.train_schema))).save(paths[-1])
    np.savez(os.path.join(workdir, "preview_train_clip.npz"), **clip)
    log("previews (rows: video+boxes, segmentation (eval only), flow, depth, for the keys a batch has): "
        + ", ".join(paths))
    return {"train_videos_per_s": rate, "eval_videos": seen, "state": state}


def main(argv):
    del argv
    workdir = os.path.abspath(expand_path(_WORKDIR.value))
    try:
        os.makedirs(workdir, exist_ok=True)
        run(expand_paths(_CONFIG.value), workdir, _NUM_BATCHES.value)
    except (codec.DataError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("data pipeline OK")
    return 0


if __name__ == "__main__":
    check_config_overrides(sys.argv)
    flags.mark_flags_as_required(["config", "workdir"])
    app.run(main)
