"""The original's checkpoints, read without TensorFlow.

The original saves with clu's `checkpoint.MultihostCheckpoint` (clu 0.0.7 and later): WORKDIR/checkpoints-0/ holds
`ckpt-N.flax`, the msgpack (flax.serialization) of the whole train state {step, optimizer: {target, state},
variables, rng}, beside TensorFlow's `ckpt-N.index` and `ckpt-N.data-*`, which hold only clu's bookkeeping. N
counts saves, not steps: the step is the `step` stored in the state. `find` picks one file, `read` its step and
its parameter tree; every path that is not such a checkpoint raises NotACheckpoint naming what it is.
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Any

import numpy as np

_CKPT = re.compile(r"^ckpt-(\d+)\.flax$")
_TF_SHARD = re.compile(r"^ckpt-\d+\.(index|data-\d{5}-of-\d{5})$")


class NotACheckpoint(ValueError):
    """The path holds no clu `ckpt-N.flax` train state with a parameter tree; says what it holds instead."""


@dataclasses.dataclass(frozen=True)
class Original:
    file: str  # the ckpt-N.flax read
    step: int | None  # the training step stored in it (None: a bare parameter file)
    params: dict  # the nested parameter tree, as the original names its modules


def _numbered(directory: str) -> list[str]:
    """The directory's ckpt-N.flax files, highest N (the newest save) first."""
    found = [(int(m.group(1)), n) for n in os.listdir(directory) if (m := _CKPT.match(n))]
    return [os.path.join(directory, n) for _, n in sorted(found, reverse=True)]


def _describe_directory(directory: str) -> str:
    names = set(os.listdir(directory))
    if {"_CHECKPOINT_METADATA", "_METADATA", "checkpoint"} & names or "params" in names or "checkpoints" in names:
        return ("an Orbax checkpoint or a workdir of this trainer, not the original's: pass it as "
                "--config.init_from (converted weights) or --workdir (a run of ours) instead")
    if any(_TF_SHARD.match(n) for n in names):
        return ("only TensorFlow's half of a clu checkpoint (ckpt-N.index, ckpt-N.data-*), which holds no "
                "parameters: download the ckpt-N.flax files too")
    return f"no ckpt-N.flax file (it holds: {', '.join(sorted(names)[:8]) or 'nothing'})"


def find(path: str) -> list[str]:
    """Candidate state files for `path`: a ckpt-N.flax file, a clu checkpoint directory (checkpoints-0/), or a
    workdir of the original that holds one; newest first."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"--checkpoint {path}: no such file or directory")
    if os.path.isfile(path):
        return [path]
    if files := _numbered(path):
        return files
    inner = os.path.join(path, "checkpoints-0")  # the original's workdir: clu writes checkpoints-{process}
    if os.path.isdir(inner) and (files := _numbered(inner)):
        return files
    raise NotACheckpoint(f"--checkpoint {path}: {_describe_directory(path)}. Pass the original's checkpoints-0/ "
                         "directory (or its workdir, or one ckpt-N.flax file)")


def _what_file(path: str, head: bytes) -> str | None:
    """What a file that is not a flax msgpack state looks like, or None if it may be one."""
    name = os.path.basename(path)
    if _TF_SHARD.match(name) or name == "checkpoint":
        return ("TensorFlow's half of a clu checkpoint, which holds no parameters: pass the ckpt-N.flax file "
                "beside it, or the directory")
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "a Python pickle, not the msgpack that clu writes (ckpt-N.flax)"
    if head[:2] == b"PK":
        return "a zip archive (an .npz?): pass a reference .npz to `convert` with the .npz suffix"
    if head[:4] == b"\x89HDF":
        return "an HDF5 file, not the msgpack that clu writes (ckpt-N.flax)"
    if not head or not (0x80 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF)):  # a msgpack map starts so
        return f"not msgpack (its first bytes: {head[:8].hex(' ') or 'none, the file is empty'})"
    return None


def _parameter_tree(state: Any) -> dict | None:
    """The original's TrainState keeps its params at optimizer/target; bare files keep them at params or root."""
    for keys in (("optimizer", "target"), ("params",), ("target",), ()):
        node = state
        for k in keys:
            node = node.get(k) if isinstance(node, dict) else None
        if isinstance(node, dict) and any(str(k).startswith("FrameEncoder") for k in node):
            return node
    return None


def read(file: str) -> Original:
    """One state file: its stored step and parameter tree."""
    from flax import serialization

    with open(file, "rb") as f:
        data = f.read()
    if (what := _what_file(file, data[:16])) is not None:
        raise NotACheckpoint(f"--checkpoint {file}: {what}")
    try:
        state = serialization.msgpack_restore(data)
    except Exception as e:  # msgpack's errors say "extra data", "unpack(b) received ...": not the fix
        raise NotACheckpoint(f"--checkpoint {file}: not a complete msgpack file ({type(e).__name__}: {e}); "
                             "a truncated download? Download it again") from None
    tree = _parameter_tree(state)
    if tree is None:
        keys = ", ".join(map(str, state)) if isinstance(state, dict) else type(state).__name__
        raise NotACheckpoint(f"--checkpoint {file}: no parameter tree (FrameEncoder_0/...) under optimizer/target, "
                             f"params or the root (top-level keys: {keys}); is it the original's train state?")
    step = state.get("step") if isinstance(state, dict) else None
    return Original(file, None if step is None else int(np.asarray(step)), tree)


def load(path: str, step: int | None = None) -> Original:
    """The newest state under `path`, or the one whose stored step is `step`."""
    files = find(path)
    if step is None:
        return read(files[0])
    seen = []
    for file in files:
        original = read(file)
        if original.step == step:
            return original
        seen.append(f"{os.path.basename(file)}: step {original.step}")
    raise NotACheckpoint(f"--checkpoint {path}: no checkpoint of step {step} (found {'; '.join(seen)}); "
                         "pass one of those steps to --step, or leave --step out for the newest")
