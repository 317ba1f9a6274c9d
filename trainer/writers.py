"""Metric sinks: TensorBoard events without TensorFlow and metrics.jsonl, behind clu's MetricWriter interface;
a console progress line. Only process 0 writes (`create_writer` returns a no-op elsewhere).

clu's interface is loaded when the first writer is created, not when this module is imported, and our sinks
are registered as its (virtual) subclasses once they are checked to implement every abstract method."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

INTERFACE_MODULE = "clu_metric_writers_interface"


@functools.cache
def clu_metric_writer() -> type:
    """clu's MetricWriter ABC, loaded from its own file: `import clu.metric_writers` runs a package __init__
    that imports TensorFlow (clu 0.0.12); interface.py itself needs only numpy and jax."""
    origin = importlib.util.find_spec("clu").origin
    spec = importlib.util.spec_from_file_location(
        INTERFACE_MODULE, os.path.join(os.path.dirname(origin), "metric_writers", "interface.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[INTERFACE_MODULE] = module  # one copy per process, visible as loaded
    return module.MetricWriter


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

    def write_summaries(self, step, values, metadata=None):
        self.write_scalars(step, values)

    def write_scalars(self, step: int, scalars: Mapping[str, Any]):
        for k, v in scalars.items():
            self._w.add_scalar(k, float(v), int(step))

    def write_images(self, step: int, images: Mapping[str, Any]):
        for k, v in images.items():  # (H, W, C) uint8 or float in [0, 1]
            self._w.add_image(k, np.asarray(v), int(step), dataformats="HWC")

    def write_videos(self, step: int, videos: Mapping[str, Any]):
        for k, v in videos.items():  # (T, H, W, C): shown as a row of frames (GIFs go to the workdir)
            v = np.asarray(v)
            self._w.add_image(k, np.concatenate(list(v), axis=1), int(step), dataformats="HWC")

    def write_audios(self, step: int, audios: Mapping[str, Any], *, sample_rate: int):
        raise NotImplementedError("this project writes no audio")

    def write_texts(self, step: int, texts: Mapping[str, str]):
        for k, v in texts.items():
            self._w.add_text(k, v, int(step))

    def write_histograms(self, step: int, arrays: Mapping[str, Any], num_buckets: Mapping[str, int] | None = None):
        for k, v in arrays.items():
            self._w.add_histogram(k, np.asarray(v), int(step))

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
        self._f = open(path, "a")  # noqa: SIM115 - closed in close()

    def resume_at(self, step: int) -> None:
        """Drops the rows past `step` (written by an attempt that was interrupted after its last checkpoint),
        so that every step has one row however often the run restarts. Rewritten atomically."""
        self._f.close()
        with open(self._path) as f:
            keep = [line for line in f if line.strip() and json.loads(line)["step"] <= step]
        tmp = f"{self._path}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            f.writelines(keep)
        os.replace(tmp, self._path)
        self._f = open(self._path, "a")  # noqa: SIM115 - closed in close()

    def write_summaries(self, step, values, metadata=None):
        self.write_scalars(step, values)

    def write_scalars(self, step: int, scalars: Mapping[str, Any]):
        self._f.write(json.dumps({"step": int(step), **{k: float(v) for k, v in scalars.items()}}) + "\n")
        self._f.flush()

    def write_images(self, step, images):
        pass

    def write_videos(self, step, videos):
        pass

    def write_audios(self, step, audios, *, sample_rate):
        pass

    def write_texts(self, step, texts):
        pass

    def write_histograms(self, step, arrays, num_buckets=None):
        pass

    def write_hparams(self, hparams):
        pass

    def flush(self):
        self._f.flush()

    def close(self):
        self._f.close()


class MultiWriter:
    def __init__(self, writers: list):
        self._writers = writers

    def _all(self, method, *args, **kwargs):
        for w in self._writers:
            getattr(w, method)(*args, **kwargs)

    def write_summaries(self, step, values, metadata=None):
        self._all("write_summaries", step, values, metadata)

    def write_scalars(self, step, scalars):
        self._all("write_scalars", step, scalars)

    def write_images(self, step, images):
        self._all("write_images", step, images)

    def write_videos(self, step, videos):
        self._all("write_videos", step, videos)

    def write_audios(self, step, audios, *, sample_rate):
        self._all("write_audios", step, audios, sample_rate=sample_rate)

    def write_texts(self, step, texts):
        self._all("write_texts", step, texts)

    def write_histograms(self, step, arrays, num_buckets=None):
        self._all("write_histograms", step, arrays, num_buckets)

    def write_hparams(self, hparams):
        self._all("write_hparams", hparams)

    def resume_at(self, step: int) -> None:
        self._all("resume_at", step)

    def flush(self):
        self._all("flush")

    def close(self):
        self._all("close")


@functools.cache
def register_with_clu() -> type:
    """Registers our sinks as implementations of clu's MetricWriter (isinstance holds); returns that ABC."""
    interface = clu_metric_writer()
    for cls in (TensorBoardWriter, JsonlWriter, MultiWriter):
        missing = sorted(m for m in interface.__abstractmethods__ if not callable(getattr(cls, m, None)))
        if missing:
            raise TypeError(f"{cls.__name__} does not implement clu's MetricWriter: missing {missing}")
        interface.register(cls)
    return interface


def create_writer(workdir: str, is_primary: bool) -> MultiWriter:
    """TensorBoard under WORKDIR/tensorboard plus WORKDIR/metrics.jsonl on process 0; nothing elsewhere."""
    register_with_clu()
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
