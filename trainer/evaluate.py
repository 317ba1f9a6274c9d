"""One evaluation pass over the validation split: metrics for the model and the static-box baseline, pictures."""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from data import pipeline
from trainer import baselines, metrics, visualize
from trainer.mesh import global_batch

MODEL_KEYS = ("video", "boxes", "segmentations", "padding_mask", "flow", "depth")


def to_host(x: jax.Array) -> np.ndarray:
    """A global array on every process (an all-gather when it spans processes; every process must call)."""
    return np.asarray(x) if x.is_fully_addressable else np.asarray(multihost_utils.process_allgather(x, tiled=True))


def evaluate(params: Any, eval_step, eval_src, spec: pipeline.PreprocessSpec, *, batch_size: int, mesh,
             num_slots: int, max_instances: int, writer=None, picture_dir: str | None = None, step: int = 0,
             num_pictures: int = 2, is_primary: bool = True) -> dict[str, float]:
    model_acc, baseline_acc = metrics.MeanOverVideos(), metrics.MeanOverVideos()
    pictures_done = 0
    for local in pipeline.eval_batches(eval_src, spec, batch_size, jax.process_index(), jax.process_count()):
        batch = global_batch({k: v for k, v in local.items() if k in MODEL_KEYS or k == "mask"}, mesh)
        out = eval_step(params, {k: v for k, v in batch.items() if k != "mask"})
        host = {k: to_host(out[k]) for k in ("ari", "fg_ari", "miou", "has_objects")}
        mask, boxes, gt = to_host(batch["mask"]), to_host(batch["boxes"]), to_host(batch["segmentations"])
        valid = to_host(batch["padding_mask"])
        model_acc.update(host, mask)
        static = baselines.static_box_segmentation(boxes, *gt.shape[1:])
        baseline_acc.update({k: np.asarray(v) for k, v in metrics.video_metrics(
            gt, static, num_slots, max_instances, valid).items()}, mask)
        if picture_dir and pictures_done < num_pictures:
            pictures_done += _pictures(batch, out, mask, picture_dir, step, num_pictures - pictures_done, writer,
                                       is_primary)
    result = model_acc.result()
    result.update({f"static_box_{k}": v for k, v in baseline_acc.result().items() if k != "num_videos"})
    return result


def _pictures(batch, out, mask, picture_dir, step, n, writer, is_primary) -> int:
    target = "flow" if "pred_flow" in out else "video"  # the last two rows: a reconstructed target
    arrays = {k: to_host(batch[k]) for k in ("video", "segmentations", target)}
    preds = {k: to_host(out[k]) for k in ("pred_segmentations", "alphas", f"pred_{target}")}
    done = 0
    for i in np.nonzero(mask)[0][:n]:
        rows = visualize.rows_for_video(arrays["video"][i], arrays["segmentations"][i],
                                        preds["pred_segmentations"][i], preds["alphas"][i], arrays[target][i],
                                        preds[f"pred_{target}"][i])
        if is_primary:
            os.makedirs(picture_dir, exist_ok=True)
            stem = os.path.join(picture_dir, f"step{step:07d}_video{done}")
            image = visualize.save_png(stem + ".png", rows)
            visualize.save_gif(stem + ".gif", rows)
            if writer is not None:
                writer.write_images(step, {f"eval/video{done}": image})
        done += 1
    return done
