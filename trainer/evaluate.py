"""Evaluation: one pass over the validation split (the model and the static-box baseline, pictures), its log
line during training, and `--mode eval` on a saved checkpoint."""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.experimental import multihost_utils

from configs.validate import eval_batch_size
from data import pictures
from data.pipeline import datasets
from trainer import baselines, checkpoint, metrics, steps, writers
from trainer.exits import BadInput
from trainer.mesh import global_batch
from trainer.run import Run, setup


def to_host(x: jax.Array) -> np.ndarray:
    """A global array on every process (an all-gather when it spans processes; every process must call)."""
    return np.asarray(x) if x.is_fully_addressable else np.asarray(multihost_utils.process_allgather(x, tiled=True))


def make_eval_step(run: Run):
    c, p = run.config, run.program
    return steps.jit_eval_step(p.model, c.num_slots, c.max_instances, c.eval_slice_size, p.replicated,
                               p.batch_sharding, floor=c.conditioning_key != "none")


class EvaluationCut(Exception):
    """A termination signal came during an evaluation: the rest of it was abandoned."""

    def __init__(self, step: int, done: int, total: int):
        super().__init__(f"evaluation at step {step} cut short by a termination signal after {done} of {total} "
                         "batches")
        self.step = step


def evaluate(run: Run, eval_step, params: Any, step: int, picture_dir: str | None, writer=None,
             num_pictures: int = 2, stop: Callable[[], bool] | None = None) -> dict[str, float]:
    """Means over the real videos of the split: ARI, FG-ARI, mIoU for the model and the static-box baseline.
    `stop` is polled after every batch (the same batches on every process); EvaluationCut when it says so."""
    c = run.config
    model_acc, baseline_acc = metrics.MeanOverVideos(), metrics.MeanOverVideos()
    pictures_done = 0
    size = eval_batch_size(c, jax.device_count(), jax.process_count())
    total = math.ceil(len(run.eval_source) / size)
    if run.is_primary:
        rounded = f" (eval_batch_size={c.eval_batch_size} rounded up to {jax.device_count()} devices)" * (
            size != c.eval_batch_size)
        print(f"evaluating step {step}: {total} batches of {size}{rounded}", flush=True)
    for done, local in enumerate(datasets.eval_batches(run.eval_source, run.spec, size,
                                                       jax.process_index(), jax.process_count()), 1):
        batch = global_batch(local, run.mesh)
        out = eval_step(params, {k: v for k, v in batch.items() if k != "mask"})
        host = {k: to_host(v) for k, v in out.items() if k in metrics.PER_VIDEO}
        mask, boxes, gt = to_host(batch["mask"]), to_host(batch["boxes"]), to_host(batch["segmentations"])
        valid = to_host(batch["padding_mask"])
        model_acc.update(host, mask)
        static = baselines.static_box_segmentation(boxes, *gt.shape[1:])
        baseline_acc.update({k: np.asarray(v) for k, v in metrics.video_metrics(
            gt, static, c.num_slots, c.max_instances, valid).items()}, mask)
        if picture_dir and pictures_done < num_pictures:
            if run.lease is not None:  # a run whose workdir was taken over writes no picture into it
                run.lease.check()
            pictures_done += _pictures(batch, out, mask, picture_dir, step, num_pictures - pictures_done, writer,
                                       run.is_primary)
        if stop is not None and done < total and stop():
            raise EvaluationCut(step, done, total)
    result = model_acc.result()
    result.update({f"static_box_{k}": v for k, v in baseline_acc.result().items() if k != "num_videos"})
    return result


def evaluate_and_log(run: Run, eval_step, params: Any, step: int,
                     progress: writers.Progress | None = None) -> dict[str, float]:
    """An evaluation during training: scalars to the writer, one console line, the progress clock paused.
    EvaluationCut when a termination signal comes during it (polled between batches)."""
    start = time.perf_counter()
    try:
        result = evaluate(run, eval_step, params, step, os.path.join(run.workdir, "pictures"), run.writer,
                          stop=run.checkpoints.evaluation_polls(step))
    finally:
        run.checkpoints.resume_polls(step)
    run.writer.write_scalars(step, {f"eval/{k}": v for k, v in result.items()})
    if run.is_primary:
        print(f"eval step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in result.items()), flush=True)
    if progress is not None:
        progress.pause(time.perf_counter() - start)
    return result


def protocol(config: ml_collections.ConfigDict, num_videos: int) -> dict[str, Any]:
    """What an evaluation number means, for comparing it with a paper's table (docs/training.md, "Evaluation
    protocol")."""
    c, d = config, config.data
    memory = c.model.recurrence.memory_size
    return {
        "split": f"{d.eval_split} ({num_videos} videos)",
        "frames": f"the first {d.eval_frames}, frame 0 (the conditioning frame) included",
        "buffer": (f"restarts every {c.eval_slice_size} frames (eval_slice_size)" if c.eval_slice_size else
                   "one buffer over all frames (eval_slice_size=0)")
        + (f", window of {memory} frames" if memory else ""),
        "conditioning": {"boxes": "first-frame boxes", "center_of_mass": "first-frame box centres",
                         "none": "learned slots"}[c.conditioning_key] + f", K={c.max_instances}",
        "metrics": "per video over all its frames, then the mean over videos, in %: ARI; FG-ARI (ground-truth "
                   "background pixels left out); miou (one IoU per object over the video) and miou_per_frame (per-"
                   "frame IoU averaged over the frames where the object or its slot appears), slot k paired with "
                   "object k",
    }


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str, step: int | None = None) -> dict[str, Any]:
    """--mode eval on the full validation split, pictures to pictures_eval/: the latest checkpoint in WORKDIR (or
    `step`); with no checkpoint there and config.init_from set, the parameters in init_from (converted weights of
    the original: `python -m model.seed_import convert`), labelled step 0."""
    run = setup(config, workdir, mode="eval")
    try:
        available = run.checkpoints.all_steps()
        origin = {}
        if step is None and not available and config.init_from:
            source = f"init_from={config.init_from}"
            origin = checkpoint.converted_origin(config.init_from, config)
            params, step = checkpoint.restore_params(config.init_from, run.abstract_state.params), 0
        else:
            step = run.checkpoints.latest_step() if step is None else step
            if step is None or step not in available:
                hint = "" if config.init_from else "; to evaluate converted weights, pass --config.init_from=DIR"
                raise BadInput(f"no checkpoint {'' if step is None else step} in {run.checkpoints.directory} "
                               f"(available: {list(available)}){hint}")
            source = f"checkpoint {step} in {run.checkpoints.directory}"
            params = run.checkpoints.restore(step, run.abstract_state)[0].params
        if run.is_primary:
            print(f"evaluating the parameters of {source}", flush=True)
            if origin:
                stored = "no step stored" if origin.get("step") is None else f"the original's step {origin['step']}"
                print(f"  converted on {origin.get('converted')} from {origin.get('checkpoint')} ({stored}) for "
                      f"{origin.get('config')}", flush=True)
        result = evaluate(run, make_eval_step(run), params, step, os.path.join(run.workdir, "pictures_eval"),
                          stop=run.checkpoints.evaluation_polls(0))
    finally:
        run.close()
    return {"step": step, "parameters": source, **({"origin": origin} if origin else {}), **result,
            "protocol": protocol(config, len(run.eval_source))}


def _pictures(batch, out, mask, picture_dir, step, n, writer, is_primary) -> int:
    target = "flow" if "pred_flow" in out else "video"  # the last two rows: a reconstructed target
    arrays = {k: to_host(batch[k]) for k in ("video", "segmentations", target)}
    preds = {k: to_host(out[k]) for k in ("pred_segmentations", "alphas", f"pred_{target}")}
    done = 0
    for i in np.nonzero(mask)[0][:n]:
        rows = pictures.prediction_rows(arrays["video"][i], arrays["segmentations"][i],
                                        preds["pred_segmentations"][i], preds["alphas"][i], arrays[target][i],
                                        preds[f"pred_{target}"][i])
        if is_primary:
            os.makedirs(picture_dir, exist_ok=True)
            stem = os.path.join(picture_dir, f"step{step:07d}_video{done}")
            image = pictures.save_png(stem + ".png", rows, pictures.prediction_labels(target),
                                      preds["alphas"].shape[2])
            pictures.save_gif(stem + ".gif", rows)
            if writer is not None:
                writer.write_images(step, {f"eval/video{done}": image})
        done += 1
    return done
