"""Convert a local MOVi TFDS directory (TFRecord shards) to our TensorFlow-free video records.

    python -m data.convert_tfds_to_arrayrecord --tfds_dir ~/tfds --dataset movi_e/128x128:1.0.0 \
        --out_dir ~/data/movi_e_128 --num_workers 8
    # on a SLURM cluster, launch/slurm/convert.sbatch runs one array task per slice of the shards:
    python -m data.convert_tfds_to_arrayrecord ... --task_index $SLURM_ARRAY_TASK_ID --num_tasks 32

One TFRecord shard becomes one ArrayRecord shard (group_size:1). Each output shard is written under a
temporary name and renamed when complete, then its manifest is written; `dataset_info.json` is assembled
once every shard of every split is done (by whichever task finishes last, or by a rerun).
"""

from __future__ import annotations

import argparse
import glob
import multiprocessing
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

from data.records import codec, shards
from data.tfds import movi
from data.tfds.tfrecord import TFRecordError, iter_tfrecord, parse_example


class ConversionError(RuntimeError):
    """A source record that cannot be converted (without --skip_corrupt)."""


@dataclass(frozen=True)
class ShardTask:
    split: str
    index: int
    count: int
    src: str
    out: str  # relative to out_dir
    expected_records: int | None


def list_tasks(dataset_dir: str, tfds_info: dict[str, Any], splits: list[str] | None) -> list[ShardTask]:
    """All (split, shard) conversion tasks in a fixed order, so every array task sees the same list."""
    name = tfds_info.get("name") or os.path.basename(os.path.dirname(os.path.dirname(dataset_dir)))
    available = {s["name"]: s for s in tfds_info.get("splits", [])}
    wanted = splits or sorted(available)
    tasks = []
    for split in wanted:
        if split not in available:
            raise ValueError(f"split {split!r} not in {dataset_dir} (available: {sorted(available)})")
        files = sorted(glob.glob(os.path.join(dataset_dir, f"{name}-{split}.tfrecord-*-of-*")))
        lengths = [int(x) for x in available[split].get("shardLengths", [])]
        if not files:
            raise FileNotFoundError(f"no TFRecord shards {name}-{split}.tfrecord-* in {dataset_dir}")
        if lengths and len(lengths) != len(files):
            raise FileNotFoundError(f"split {split!r}: dataset_info.json lists {len(lengths)} shards but "
                                    f"{len(files)} are on disk in {dataset_dir}; finish the download")
        for i, src in enumerate(files):
            tasks.append(ShardTask(split, i, len(files), src, shards.shard_name(split, i, len(files)),
                                   lengths[i] if lengths else None))
    return tasks


def _encoded_records(task: ShardTask, skip_corrupt: bool, skipped: list[dict[str, Any]]):
    for index, payload in iter_tfrecord(task.src):
        try:
            if isinstance(payload, TFRecordError):
                raise payload
            video = movi.example_to_video(parse_example(payload))
            yield video["video_name"], int(video["num_instances"]), codec.encode(video)
        except Exception as e:  # protobuf DecodeError, PNG errors, schema violations, CRC failures
            reason = e.reason if isinstance(e, TFRecordError) else f"{type(e).__name__}: {e}"
            if not skip_corrupt:
                raise ConversionError(f"{task.src}: record {index}: {reason}. Re-download the shard, or pass "
                                      "--skip_corrupt to count and skip bad records.") from None
            skipped.append({"record": index, "reason": reason})


def convert_shard(task: ShardTask, out_dir: str, writer_options: str, skip_corrupt: bool) -> dict[str, Any]:
    """Converts one shard (atomically). Returns its manifest."""
    skipped: list[dict[str, Any]] = []
    # Filled while streaming; write_shard merges it into the manifest after the last record.
    extra: dict[str, Any] = {"source": task.src, "skipped": skipped}

    def tracked():
        for name, k, payload in _encoded_records(task, skip_corrupt, skipped):
            if "resolution" not in extra:
                shape = codec.LazyRecord(payload).fields["video"]["shape"]
                extra.update(resolution=shape[1:3], num_frames=shape[0])
            yield name, k, payload

    return shards.write_shard(os.path.join(out_dir, task.out), tracked(), writer_options, extra=extra)


def _run(args_tuple):
    task, out_dir, writer_options, skip_corrupt = args_tuple
    return task, convert_shard(task, out_dir, writer_options, skip_corrupt)


def _fmt_eta(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def convert(tfds_dir: str, dataset: str, out_dir: str, splits: list[str] | None = None, num_workers: int = 1,
            task_index: int = 0, num_tasks: int = 1, skip_corrupt: bool = False,
            writer_options: str = shards.DEFAULT_WRITER_OPTIONS, log=print) -> dict[str, Any] | None:
    """Converts this task's share of the shards; returns dataset_info once every shard is done, else None."""
    if not 0 <= task_index < num_tasks:
        raise ValueError(f"--task_index {task_index} must be in [0, --num_tasks={num_tasks})")
    dataset_dir, tfds_info = movi.resolve_dataset_dir(os.path.abspath(tfds_dir), dataset)
    out_dir = os.path.abspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    tasks = list_tasks(dataset_dir, tfds_info, splits)
    mine = [t for i, t in enumerate(tasks) if i % num_tasks == task_index]
    todo = [t for t in mine if not shards.shard_done(os.path.join(out_dir, t.out))]
    log(f"{dataset}: {len(tasks)} shards in all, {len(mine)} for task {task_index}/{num_tasks}, "
        f"{len(mine) - len(todo)} already done, {len(todo)} to convert with {num_workers} worker(s)")
    total = sum(t.expected_records or 0 for t in todo) or None
    done_records, skipped, start = 0, 0, time.time()
    jobs = [(t, out_dir, writer_options, skip_corrupt) for t in todo]
    pool = multiprocessing.get_context("spawn").Pool(num_workers) if num_workers > 1 and len(jobs) > 1 else None
    try:
        results = pool.imap_unordered(_run, jobs) if pool else map(_run, jobs)
        for n, (task, manifest) in enumerate(results, 1):
            done_records += manifest["num_records"]
            skipped += len(manifest["skipped"])
            rate = done_records / max(time.time() - start, 1e-9)
            eta = _fmt_eta((total - done_records) / rate) if total and rate else "?"
            bad = f", {len(manifest['skipped'])} skipped" if manifest["skipped"] else ""
            of_total = f"/{total}" if total else ""
            log(f"[{n}/{len(todo)} shards] {task.out}: {manifest['num_records']} videos{bad} | "
                f"{done_records}{of_total} videos, {rate:.1f} videos/s, ETA {eta}")
    finally:
        if pool:
            pool.terminate()
    if skipped:
        log(f"skipped {skipped} corrupt record(s); see 'skipped' in the shard manifests")
    pending = [t for t in tasks if not shards.shard_done(os.path.join(out_dir, t.out))]
    if pending:
        log(f"{len(pending)} shard(s) still pending in other tasks; the last task to finish (or a rerun) "
            "writes dataset_info.json")
        return None
    return _finalize(out_dir, tasks, tfds_dir, dataset, tfds_info, log)


def _finalize(out_dir, tasks, tfds_dir, dataset, tfds_info, log) -> dict[str, Any]:
    splits: dict[str, list[str]] = {}
    for t in tasks:
        splits.setdefault(t.split, []).append(t.out)
    manifests = [shards.read_json(os.path.join(out_dir, t.out) + ".json") for t in tasks]
    shaped = [m for m in manifests if "resolution" in m]
    meta = {
        "source": {"tfds_dir": os.path.abspath(tfds_dir), "dataset": dataset, "name": tfds_info.get("name"),
                   "version": tfds_info.get("version"), "description": tfds_info.get("description", "")},
        "resolution": shaped[0]["resolution"] if shaped else None,
        "num_frames": shaped[0]["num_frames"] if shaped else None,
        "skipped_records": sum(len(m["skipped"]) for m in manifests),
        "writer_options": manifests[0]["writer_options"],
    }
    info = shards.write_dataset_info(out_dir, splits, meta)
    counts = {s: v["num_records"] for s, v in info["splits"].items()}
    log(f"wrote {os.path.join(out_dir, shards.INFO_FILE)}: {counts}, max_instances {info['max_instances']}")
    return info


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tfds_dir", required=True, help="TFDS data dir holding NAME/CONFIG/VERSION/")
    p.add_argument("--dataset", required=True, help="NAME/CONFIG[:VERSION], e.g. movi_e/128x128:1.0.0")
    p.add_argument("--out_dir", required=True)
    p.add_argument("--splits", default="", help="comma-separated; default: every split in dataset_info.json")
    p.add_argument("--num_workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    p.add_argument("--task_index", type=int, default=0)
    p.add_argument("--num_tasks", type=int, default=1)
    p.add_argument("--skip_corrupt", action="store_true", help="count and skip bad records instead of failing")
    p.add_argument("--writer_options", default=shards.DEFAULT_WRITER_OPTIONS)
    a = p.parse_args(argv)
    if "group_size:1" not in a.writer_options.replace(" ", ""):
        p.error("--writer_options must contain group_size:1 (random access for Grain)")
    try:
        convert(a.tfds_dir, a.dataset, a.out_dir, [s for s in a.splits.split(",") if s] or None, a.num_workers,
                a.task_index, a.num_tasks, a.skip_corrupt, a.writer_options)
    except (ConversionError, FileNotFoundError, ValueError, codec.DataError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
