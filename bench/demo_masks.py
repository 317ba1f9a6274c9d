"""python -m bench.demo_masks [--workdir workdirs/demo] [--config configs/demo.py] [--config.key=value ...]

Where a trained run's slot masks lose mIoU, on its validation split: for the model and the static first-frame
boxes side by side, per object (slot k against object k, over all frames and valid pixels, mean over objects
present, then over videos):
- recall: the share of the object's pixels that its slot wins;
- precision: the share of the slot's pixels that belong to its object;
- floor taken: the share of the ground truth's background pixels that object slots win (the model) or that lie
  inside a box (the baseline);
- mIoU as the trainer reports it, and mIoU with every background pixel handed to the background slot (what the
  masks would score if the floor were never taken);
- the floor's alpha held by the background slot and its copies (the slots conditioned on a padded box, which
  are exact copies of it), against the share an even split over all slots would give them: near the even split,
  no slot owns the floor and the argmax hands it to whichever object slot is marginally ahead.
The newest checkpoint of WORKDIR is evaluated; nothing is written.
"""

from __future__ import annotations

import os
import sys

import jax
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from cli.config_flags import check_config_overrides
from configs.validate import expand_path, expand_paths

_CONFIG = config_flags.DEFINE_config_file("config", "configs/demo.py", "the run's config", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "workdirs/demo", "the run's workdir (its newest checkpoint is evaluated)")


def per_object(true_ids: np.ndarray, pred_ids: np.ndarray, valid: np.ndarray, num_objects: int) -> dict:
    """(T, H, W) ids of one video -> {recall, precision, miou, miou_floor_given_back, floor_taken}, means over the
    objects present (None when none is)."""
    fg_true = (true_ids > 0) & valid
    floor = (true_ids == 0) & valid
    given_back = np.where(floor, 0, pred_ids)
    rows = {"recall": [], "precision": [], "miou": [], "miou_floor_given_back": []}
    for k in range(1, num_objects + 1):
        g = (true_ids == k) & valid
        if not g.any():
            continue
        p = (pred_ids == k) & valid
        q = (given_back == k) & valid
        inter = (g & p).sum()
        rows["recall"].append(inter / g.sum())
        rows["precision"].append(inter / p.sum() if p.any() else 0.0)
        rows["miou"].append(inter / (g | p).sum())
        rows["miou_floor_given_back"].append((g & q).sum() / (g | q).sum())
    out = {k: float(np.mean(v)) if v else None for k, v in rows.items()}
    out["floor_taken"] = float(((pred_ids > 0) & floor).sum() / max(floor.sum(), 1))
    out["object_share"] = float(fg_true.sum() / max(valid.sum(), 1))
    return out


def background_alpha(alphas: np.ndarray, true_ids: np.ndarray, valid: np.ndarray, background: np.ndarray) -> dict:
    """(T, S, H, W) alphas of one video, (S,) True for slot 0 and its copies (model.slots.background_copies) ->
    the mean alpha they hold on the true background, and what an even split over the S slots gives them
    (trainer.metrics.floor_alpha, which the end-of-run report prints)."""
    from trainer.metrics import floor_alpha

    r = floor_alpha(alphas[None], true_ids[None], background[None], valid[None])
    return {"background_alpha": float(r["floor_alpha"][0]) if r["has_floor"][0] else None,
            "even_split": float(r["floor_even_split"][0])}


def analyse(config, workdir: str) -> dict:
    from configs.validate import eval_batch_size
    from data.pipeline import datasets
    from model import slots
    from trainer import baselines, evaluate, mesh
    from trainer.run import setup

    run = setup(config, workdir, mode="eval")
    try:
        step = run.checkpoints.latest_step()
        if step is None:
            raise SystemExit(f"error: no checkpoint in {run.checkpoints.directory}")
        params = run.checkpoints.restore(step, run.abstract_state)[0].params
        eval_step = evaluate.make_eval_step(run)
        size = eval_batch_size(run.config, jax.device_count(), jax.process_count())
        found: dict[str, list[dict]] = {"model": [], "static first-frame boxes": []}
        for local in datasets.eval_batches(run.eval_source, run.spec, size):
            batch = mesh.global_batch(local, run.mesh)
            out = eval_step(params, {k: v for k, v in batch.items() if k != "mask"})
            gt, valid = np.asarray(batch["segmentations"]), np.asarray(batch["padding_mask"]).astype(bool)
            pred = np.asarray(out["pred_segmentations"])
            boxes, alphas = np.asarray(batch["boxes"]), np.asarray(out["alphas"])
            static = baselines.static_box_segmentation(boxes, *gt.shape[1:])
            background = slots.background_copies(boxes)
            for i in np.nonzero(np.asarray(batch["mask"]))[0]:
                found["model"].append({**per_object(gt[i], pred[i], valid[i], run.config.max_instances),
                                       **background_alpha(alphas[i], gt[i], valid[i], background[i])})
                found["static first-frame boxes"].append(per_object(gt[i], static[i], valid[i],
                                                                    run.config.max_instances))
    finally:
        run.close()
    keys = ("recall", "precision", "floor_taken", "miou", "miou_floor_given_back", "object_share",
            "background_alpha", "even_split")
    return {"step": step, "videos": len(found["model"]), **{
        name: {k: float(np.mean([r[k] for r in rows if r[k] is not None])) for k in keys if k in rows[0]}
        for name, rows in found.items()}}


def main(argv) -> int:
    del argv
    r = analyse(expand_paths(_CONFIG.value), os.path.abspath(expand_path(_WORKDIR.value)))
    print(f"step {r['step']}, {r['videos']} validation videos; objects cover "
          f"{100 * r['model']['object_share']:.1f} % of the valid pixels")
    print(f"{'':<28}{'recall':>8}{'precision':>11}{'floor taken':>13}{'mIoU':>8}{'mIoU, floor given back':>24}")
    for name in ("model", "static first-frame boxes"):
        x = r[name]
        print(f"{name:<28}{100 * x['recall']:8.1f}{100 * x['precision']:11.1f}{100 * x['floor_taken']:13.1f}"
              f"{100 * x['miou']:8.1f}{100 * x['miou_floor_given_back']:24.1f}")
    m = r["model"]
    print(f"the floor's alpha held by the background slot and its copies: {m['background_alpha']:.3f} "
          f"(an even split over all slots: {m['even_split']:.3f})")
    return 0


if __name__ == "__main__":
    check_config_overrides(sys.argv)
    app.run(main)
