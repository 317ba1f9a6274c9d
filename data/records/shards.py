"""Converted-dataset layout on disk: ArrayRecord shards, per-shard manifests and `dataset_info.json`.

    DATA_DIR/
      dataset_info.json                          splits, counts, schema version, max instances, source
      train/train-00000-of-00016.array_record    one video per record, group_size:1
      train/train-00000-of-00016.array_record.json   manifest: count, video names, max instances
      validation/...

A shard is written under a temporary name and renamed when complete, so a finished shard is never
partial and an interrupted writer is simply rerun. `dataset_info.json` is assembled from the manifests.
"""

from __future__ import annotations

import bisect
import errno
import json
import os
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from array_record.python import array_record_module

from data.records import codec

INFO_FILE = "dataset_info.json"
FORMAT_NAME = "statm_savi.video_records"
# group_size:1 is required for random access (one record per chunk). Records compress their frames
# themselves (data/records/codec.py), so that a training window decompresses only its own frames.
DEFAULT_WRITER_OPTIONS = "group_size:1,uncompressed"


def shard_name(split: str, index: int, count: int) -> str:
    return f"{split}/{split}-{index:05d}-of-{count:05d}.array_record"


def write_shard(path: str, encoded: Iterable[tuple[str, int, bytes]], writer_options: str = DEFAULT_WRITER_OPTIONS,
                extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Writes (video_name, num_instances, record bytes) to `path` atomically, plus its manifest.

    Returns the manifest. The manifest is written last, so its presence marks a finished shard.
    """
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    writer = array_record_module.ArrayRecordWriter(tmp, writer_options)
    names, max_instances = [], 0
    try:
        for name, num_instances, payload in encoded:
            writer.write(payload)
            names.append(name)
            max_instances = max(max_instances, int(num_instances))
    except BaseException:
        writer.close()
        os.remove(tmp)
        raise
    writer.close()
    os.replace(tmp, path)
    manifest = {"num_records": len(names), "video_names": names, "max_instances": max_instances,
                "writer_options": writer_options, **(extra or {})}
    _write_json_atomic(path + ".json", manifest)
    return manifest


def shard_done(path: str) -> bool:
    return os.path.exists(path) and os.path.exists(path + ".json")


def _write_json_atomic(path: str, obj: Any) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def write_dataset_info(data_dir: str, splits: dict[str, list[str]], meta: dict[str, Any]) -> dict[str, Any]:
    """Assembles dataset_info.json from the shard manifests. `splits` maps split -> relative shard paths."""
    info: dict[str, Any] = {"format": FORMAT_NAME, "schema_version": codec.SCHEMA_VERSION, **meta, "splits": {}}
    max_instances = 0
    for split, files in splits.items():
        manifests = [read_json(os.path.join(data_dir, f) + ".json") for f in files]
        info["splits"][split] = {"num_records": sum(m["num_records"] for m in manifests), "files": list(files)}
        max_instances = max([max_instances] + [m["max_instances"] for m in manifests])
    info["max_instances"] = max_instances
    _write_json_atomic(os.path.join(data_dir, INFO_FILE), info)
    return info


def read_json(path: str) -> Any:
    with open(path) as f:
        return json.load(f)


def read_dataset_info(data_dir: str) -> dict[str, Any]:
    """Reads and checks DATA_DIR/dataset_info.json; every problem is one DataError that says what to do."""
    path = os.path.join(os.fspath(data_dir), INFO_FILE)
    make = ("Create it with `python -m data.synthetic --out_dir DIR` or `python -m data.convert_tfds_to_arrayrecord "
            "--tfds_dir … --out_dir DIR`, then set --config.data.data_dir=DIR.")
    if not os.path.isdir(data_dir):
        raise _info_error(data_dir, "data directory does not exist", make)
    if not os.path.exists(path):
        raise _info_error(data_dir, f"no {INFO_FILE}: not a converted dataset, or its conversion has not finished",
                          make)
    try:
        info = read_json(path)
    except json.JSONDecodeError as e:
        raise _info_error(path, f"unreadable JSON ({e})", make) from None
    if info.get("format") != FORMAT_NAME or info.get("schema_version") != codec.SCHEMA_VERSION:
        raise _info_error(path, f"format {info.get('format')!r} schema v{info.get('schema_version')}, this code reads "
                               f"{FORMAT_NAME!r} v{codec.SCHEMA_VERSION}", make)
    return info


def _info_error(path: str, reason: str, fix: str) -> codec.DataError:
    return codec.DataError(path, None, reason, fix)


def split_files(data_dir: str, info: dict[str, Any], split: str) -> list[str]:
    """Absolute, ordered shard paths of a split; a missing or empty split is a DataError listing the others."""
    splits = info.get("splits", {})
    if split not in splits:
        raise _info_error(data_dir, f"split {split!r} is missing (available: {sorted(splits)})",
                         "Convert that split, or point the config at the split that exists.")
    if splits[split]["num_records"] == 0:
        raise _info_error(data_dir, f"split {split!r} has no records",
                          "Re-run the conversion; check the source shards.")
    files = [os.path.abspath(os.path.join(data_dir, f)) for f in splits[split]["files"]]
    for f in files:
        if not os.path.exists(f):
            raise _info_error(f, "shard listed in dataset_info.json is missing", "Re-run the conversion (it resumes).")
    return files


# ArrayRecord reads through riegeli, whose file readers fail with absl::ErrnoToStatus(errno, "<op> failed")
# (riegeli/bytes/fd_reader.cc, cfile_reader.cc); absl's message for that ends in strerror(errno), which is what
# reaches Python in the status text.
_TRANSIENT_IO = (errno.EIO, errno.ESTALE, errno.ETIMEDOUT, errno.EAGAIN, errno.ENOLCK)


def transient_io_errno(message: str) -> int | None:
    """The error number of a storage failure named in a reader's message (EIO, ESTALE, ...), else None."""
    return next((code for code in _TRANSIENT_IO if os.strerror(code) in message), None)


class VideoRecordSource:
    """Grain random-access source over ArrayRecord shards, returning `codec.LazyRecord`s.

    The header is checked here, so that a bad record's error names its file and index; the frames are
    decompressed by the first transform (all of them for eval, one window for training).
    Readers open lazily and are dropped on pickling: Grain worker processes re-open their own.
    """

    def __init__(self, paths: Sequence[str]):
        self._paths = [os.fspath(p) for p in paths]
        self._lock = threading.Lock()
        self._readers: list[Any] = [None] * len(self._paths)
        counts = [self._reader(i).num_records() for i in range(len(self._paths))]
        self._starts = [0]
        for c in counts:
            self._starts.append(self._starts[-1] + c)

    def _reader(self, i: int):
        reader = self._readers[i]
        if reader is None:
            with self._lock:
                if self._readers[i] is None:
                    try:
                        reader = array_record_module.ArrayRecordReader(self._paths[i], "readahead_buffer_size:0")
                        problem = None if reader.ok() else "the reader reports a bad state"
                    except Exception as e:  # array_record raises RuntimeError/ValueError on some corrupt files
                        problem = str(e)
                    if problem:  # a truncated file opens "successfully" with ok() False and 0 records
                        raise codec.DataError(self._paths[i], None, f"cannot open ArrayRecord file ({problem}); "
                                                "it is truncated or corrupt", "Re-create it (the converter resumes).")
                    self._readers[i] = reader
                reader = self._readers[i]
        return reader

    def __len__(self) -> int:
        return self._starts[-1]

    @property
    def paths(self) -> list[str]:
        return list(self._paths)

    def locate(self, index: int) -> tuple[int, int]:
        """Global record index -> (file number, index within the file)."""
        if not 0 <= index < len(self):
            raise IndexError(f"record {index} out of range [0, {len(self)})")
        f = bisect.bisect_right(self._starts, index) - 1
        return f, index - self._starts[f]

    def read_bytes(self, index: int) -> bytes:
        f, local = self.locate(index)
        reader = self._reader(f)
        try:
            return reader.read([local])[0]
        except OSError:
            raise
        except Exception as e:
            io = transient_io_errno(str(e))
            if io is not None:  # the storage failed, not the record: an OSError, which a restart may get past
                raise OSError(io, f"reading record {local} of {self._paths[f]}: {e}", self._paths[f]) from None
            raise codec.DataError(self._paths[f], local, f"unreadable record ({e})") from None

    def __getitem__(self, index: int) -> codec.LazyRecord:
        index = int(index)
        f, local = self.locate(index)
        return codec.LazyRecord(self.read_bytes(index), self._paths[f], local)

    def decoded(self, index: int) -> dict[str, Any]:
        """All frames of record `index` as numpy arrays."""
        return self[index].decode()

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_readers"] = [None] * len(self._paths)
        del state["_lock"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"VideoRecordSource({len(self._paths)} files, {len(self)} records)"
