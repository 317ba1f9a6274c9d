"""Metric sinks: TensorBoard events (tensorboardX, no TensorFlow) and metrics.jsonl on process 0, behind one
small interface (`Writer`); a console progress line. `create_writer` returns a writer of no sinks elsewhere."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np

from trainer.lease import append_alone


@runtime_checkable
class Writer(Protocol):
    """What the trainer writes: scalars per step, pictures at evaluations, the config once. `resume_at(step)`
    drops what an interrupted attempt wrote past `step`, so that every step has one row however often a run
    restarts."""

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None: ...
    def write_images(self, step: int, images: Mapping[str, Any]) -> None: ...
    def write_hparams(self, hparams: Mapping[str, Any]) -> None: ...
    def resume_at(self, step: int) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


class TensorBoardWriter:
    """Event files through tensorboardX."""

    def __init__(self, logdir: str):
        from tensorboardX import SummaryWriter

        self._logdir, self._cls = logdir, SummaryWriter
        self._w = SummaryWriter(logdir, flush_secs=30)

    def resume_at(self, step: int) -> None:
        """TensorBoard hides the events of earlier attempts past `step` (tensorboardX's purge_step)."""
        self._w.close()
        self._w = self._cls(self._logdir, flush_secs=30, purge_step=step + 1)

    def write_scalars(self, step: int, scalars: Mapping[str, Any]):
        for k, v in scalars.items():
            self._w.add_scalar(k, float(v), int(step))

    def write_images(self, step: int, images: Mapping[str, Any]):
        for k, v in images.items():  # (H, W, C) uint8 or float in [0, 1]
            self._w.add_image(k, np.asarray(v), int(step), dataformats="HWC")

    def write_hparams(self, hparams: Mapping[str, Any]):
        self._w.add_text("hparams", json.dumps(dict(hparams), indent=1, default=str), 0)

    def flush(self):
        self._w.flush()

    def close(self):
        self._w.close()


class JsonlWriter:
    """metrics.jsonl: one JSON object per write_scalars call, {"step": N, name: value, ...}."""

    def __init__(self, path: str):
        self._path = path
        self._f = append_alone(path)  # a file no earlier holder of the workdir appends to

    def resume_at(self, step: int) -> None:
        """Drops the rows past `step` (written by an attempt that was interrupted after its last checkpoint),
        so that every step has one row however often the run restarts. Rewritten atomically."""
        self._f.close()
        with open(self._path) as f:
            keep = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
        tmp = f"{self._path}.tmp-{uuid.uuid4().hex}"
        with open(tmp, "w") as f:
            f.writelines(keep)
        os.replace(tmp, self._path)
        self._f = open(self._path, "a")  # noqa: SIM115 - closed in close()

    def write_scalars(self, step: int, scalars: Mapping[str, Any]):
        self._f.write(json.dumps({"step": int(step), **{k: float(v) for k, v in scalars.items()}}) + "\n")
        self._f.flush()

    def write_images(self, step, images):  # scalars only: pictures go to TensorBoard and WORKDIR/pictures
        pass

    def write_hparams(self, hparams):  # the config is in every checkpoint's metadata
        pass

    def flush(self):
        self._f.flush()

    def close(self):
        self._f.close()


class MultiWriter:
    """Every call goes to each sink in turn."""

    def __init__(self, writers: list):
        self._writers = writers

    def _all(self, method, *args, **kwargs):
        for w in self._writers:
            getattr(w, method)(*args, **kwargs)

    def write_scalars(self, step, scalars):
        self._all("write_scalars", step, scalars)

    def write_images(self, step, images):
        self._all("write_images", step, images)

    def write_hparams(self, hparams):
        self._all("write_hparams", hparams)

    def resume_at(self, step: int) -> None:
        self._all("resume_at", step)

    def flush(self):
        self._all("flush")

    def close(self):
        self._all("close")


def create_writer(workdir: str, is_primary: bool) -> MultiWriter:
    """TensorBoard under WORKDIR/tensorboard plus WORKDIR/metrics.jsonl on process 0; nothing elsewhere."""
    if not is_primary:
        return MultiWriter([])
    return MultiWriter([TensorBoardWriter(os.path.join(workdir, "tensorboard")),
                        JsonlWriter(os.path.join(workdir, "metrics.jsonl"))])


class Progress:
    """Step rate, videos/s, data-wait share and ETA, measured between log points (the clock pauses for
    evaluation and checkpointing via `pause()`)."""

    def __init__(self, total_steps: int, start_step: int, batch_size: int):
        self.total, self.batch = total_steps, batch_size
        self._t0, self._step0, self._wait, self._paused = time.perf_counter(), start_step, 0.0, 0.0

    def data_wait(self, seconds: float) -> None:
        self._wait += seconds

    def pause(self, seconds: float) -> None:
        self._paused += seconds

    def measure(self, step: int) -> dict[str, float]:
        elapsed = max(time.perf_counter() - self._t0 - self._paused, 1e-9)
        steps = max(step - self._step0, 1)
        out = {"steps_per_sec": steps / elapsed, "videos_per_sec": steps * self.batch / elapsed,
               "data_wait_share": min(self._wait / elapsed, 1.0),
               "eta_min": (self.total - step) * elapsed / steps / 60}
        self._t0, self._step0, self._wait, self._paused = time.perf_counter(), step, 0.0, 0.0
        return out


def progress_line(step: int, total: int, scalars: Mapping[str, float]) -> str:
    parts = [f"step {step}/{total}"]
    for key, fmt in (("loss", ".4g"), ("grad_norm", ".3g"), ("learning_rate", ".2e"), ("steps_per_sec", ".3g"),
                     ("videos_per_sec", ".3g"), ("data_wait_share", ".0%"), ("mfu", ".1%"), ("eta_min", ".1f")):
        if key in scalars:
            parts.append(f"{key} {format(scalars[key], fmt)}")
    return " | ".join(parts)
