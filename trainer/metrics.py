"""Segmentation metrics: ARI and FG-ARI exactly as SAVi/STATM define them, and a conditional mIoU.

All metrics are per video over all its frames jointly (frame 0, the conditioning frame, included), and
pixels with padding_mask == 0 are ignored. Dataset scores are means over real (mask=True) videos.

mIoU is implemented in neither the SAVi nor the STATM code, and neither paper defines it, so two definitions are
reported, named (also in docs/training.md, "Evaluation protocol"). Both pair slot k with ground-truth object k
(slot 0 is the background slot, conditioned on the zero box; slot k on object k's first-frame box; segmentation
id k = object k), both count only objects present in the video (at least one valid pixel in any frame) and both
are means over objects, then over videos (videos without objects are left out):
- `miou` (video IoU): IoU_k = sum_t |P_k,t ∩ G_k,t| / sum_t |P_k,t ∪ G_k,t|, one IoU per object over the whole
  video; frames where the object is absent count (a slot that paints pixels there is penalised);
- `miou_per_frame` (frame IoU, as video object segmentation's J): IoU_k,t per frame, averaged over the frames
  where the object or its slot has a pixel (union > 0); a frame where both are empty counts for neither.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from clu import metrics as clu_metrics


def adjusted_rand_index(true_ids: jnp.ndarray, pred_ids: jnp.ndarray, num_true: int, num_pred: int,
                        padding_mask: jnp.ndarray | None = None, ignore_background: bool = False) -> jnp.ndarray:
    """(B, T, H, W) integer ids -> (B,) ARI. true ids outside [0, num_true) vanish (one-hot of zeros).

    With ignore_background (FG-ARI), ground-truth background pixels are dropped; the background *slot*
    still counts as a predicted cluster. If the denominator is 0 (both assign everything to one cluster,
    or every cluster has at most one point) the score is 1.
    """
    true_oh = jax.nn.one_hot(true_ids, num_true, dtype=jnp.float32)
    pred_oh = jax.nn.one_hot(pred_ids, num_pred, dtype=jnp.float32)
    if padding_mask is not None:
        true_oh = true_oh * padding_mask[..., None].astype(jnp.float32)
    if ignore_background:
        true_oh = true_oh[..., 1:]
    n = jnp.einsum("bthwc,bthwk->bck", true_oh, pred_oh)
    a, b = jnp.sum(n, axis=-1), jnp.sum(n, axis=-2)
    num_points = jnp.sum(a, axis=1)
    rindex = jnp.sum(n * (n - 1), axis=(1, 2))
    aindex = jnp.sum(a * (a - 1), axis=1)
    bindex = jnp.sum(b * (b - 1), axis=1)
    expected = aindex * bindex / jnp.clip(num_points * (num_points - 1), 1)
    denominator = (aindex + bindex) / 2 - expected
    return jnp.where(denominator != 0, (rindex - expected) / jnp.where(denominator != 0, denominator, 1), 1.0)


def conditional_miou(true_ids: jnp.ndarray, pred_ids: jnp.ndarray, num_objects: int,
                     padding_mask: jnp.ndarray | None = None) -> tuple[jnp.ndarray, jnp.ndarray]:
    """(B, T, H, W) ids -> (per-video mIoU (B,), has_objects (B,) bool). Object k <-> slot k, k = 1..K."""
    valid = jnp.ones_like(true_ids, bool) if padding_mask is None else padding_mask.astype(bool)
    k = jnp.arange(1, num_objects + 1)
    g = (true_ids[..., None] == k) & valid[..., None]  # (B, T, H, W, K)
    p = (pred_ids[..., None] == k) & valid[..., None]
    inter = jnp.sum(g & p, axis=(1, 2, 3)).astype(jnp.float32)
    union = jnp.sum(g | p, axis=(1, 2, 3)).astype(jnp.float32)
    present = jnp.any(g, axis=(1, 2, 3))  # (B, K)
    iou = jnp.where(present, inter / jnp.maximum(union, 1), 0.0)
    count = jnp.sum(present, axis=1)
    return jnp.sum(iou, axis=1) / jnp.maximum(count, 1), count > 0


def conditional_miou_per_frame(true_ids: jnp.ndarray, pred_ids: jnp.ndarray, num_objects: int,
                               padding_mask: jnp.ndarray | None = None) -> jnp.ndarray:
    """(B, T, H, W) ids -> per-video mean over present objects of each object's mean per-frame IoU (B,)."""
    valid = jnp.ones_like(true_ids, bool) if padding_mask is None else padding_mask.astype(bool)
    k = jnp.arange(1, num_objects + 1)
    g = (true_ids[..., None] == k) & valid[..., None]  # (B, T, H, W, K)
    p = (pred_ids[..., None] == k) & valid[..., None]
    inter = jnp.sum(g & p, axis=(2, 3)).astype(jnp.float32)  # (B, T, K)
    union = jnp.sum(g | p, axis=(2, 3)).astype(jnp.float32)
    counted = union > 0
    per_object = jnp.sum(jnp.where(counted, inter / jnp.maximum(union, 1), 0.0), axis=1) / jnp.maximum(
        jnp.sum(counted, axis=1), 1)  # (B, K)
    present = jnp.any(g, axis=(1, 2, 3))
    return jnp.sum(jnp.where(present, per_object, 0.0), axis=1) / jnp.maximum(jnp.sum(present, axis=1), 1)


def video_metrics(true_ids: jnp.ndarray, pred_ids: jnp.ndarray, num_slots: int, max_instances: int,
                  padding_mask: jnp.ndarray | None = None) -> dict[str, jnp.ndarray]:
    """Per-video ARI, FG-ARI, mIoU (+ which videos have objects), for (B, T, H, W) ids."""
    miou, has_objects = conditional_miou(true_ids, pred_ids, max_instances, padding_mask)
    return {
        "ari": adjusted_rand_index(true_ids, pred_ids, max_instances + 1, num_slots, padding_mask),
        "fg_ari": adjusted_rand_index(true_ids, pred_ids, max_instances + 1, num_slots, padding_mask,
                                      ignore_background=True),
        "miou": miou,
        "miou_per_frame": conditional_miou_per_frame(true_ids, pred_ids, max_instances, padding_mask),
        "has_objects": has_objects,
    }


def floor_alpha(alphas: jnp.ndarray, true_ids: jnp.ndarray, background: jnp.ndarray,
                padding_mask: jnp.ndarray | None = None) -> dict[str, jnp.ndarray]:
    """Whether the background slot owns the floor, per video: the mean alpha that slot 0 and its copies (`background`,
    (B, S) bool: model.slots.background_copies) hold on the valid true-background pixels of the (B, T, S, H, W)
    `alphas`, and the share an even split over the S slots would give them (their count / S). Near the even
    split, every slot paints the floor alike, and the argmax hands floor pixels to whichever slot is marginally
    ahead: ARI and mIoU drop while FG-ARI, which leaves the background out, does not."""
    floor = true_ids == 0 if padding_mask is None else (true_ids == 0) & padding_mask.astype(bool)
    held = jnp.sum(jnp.where(background[:, None, :, None, None], alphas, 0.0), axis=2)  # (B, T, H, W)
    count = jnp.sum(floor, axis=(1, 2, 3))
    return {"floor_alpha": jnp.sum(jnp.where(floor, held, 0.0), axis=(1, 2, 3)) / jnp.maximum(count, 1),
            "floor_even_split": jnp.mean(background.astype(jnp.float32), axis=1), "has_floor": count > 0}


def _video_average(name: str, objects_only: bool):
    """A clu average of one per-video metric over the real videos (mask), for mIoU those with objects."""
    return clu_metrics.Average.from_fun(
        lambda mask, has_objects, **per_video: {"values": per_video[name],
                                                "mask": mask & has_objects if objects_only else mask})


def _floor_average(name: str):
    """A clu average of one floor measure over the real videos that have a background pixel."""
    return clu_metrics.Average.from_fun(lambda mask, has_floor, **per_video: {"values": per_video[name],
                                                                             "mask": mask & has_floor})


VIDEO = ("ari", "fg_ari", "miou", "miou_per_frame")
OBJECTS_ONLY = ("miou", "miou_per_frame")  # averaged over the videos with objects only
VideoMeans = clu_metrics.Collection.create(**{name: _video_average(name, name in OBJECTS_ONLY) for name in VIDEO})
FLOOR = ("floor_alpha", "floor_even_split")
# Every per-video output that MeanOverVideos reads: what an evaluation brings to the host from each batch.
PER_VIDEO = VIDEO + ("has_objects",) + FLOOR + ("has_floor",)
FloorMeans = clu_metrics.Collection.create(**{name: _floor_average(name) for name in FLOOR})


class MeanOverVideos:
    """Means of per-video metrics over eval batches, accumulated as SAVi accumulates its Ari (clu.metrics
    averages, merged batch by batch), skipping padded examples (mask False) and, for mIoU, videos without
    objects. A mean over no video is 0. The floor measures (floor_alpha) are averaged too when the batches have
    them, over the videos with a background pixel."""

    def __init__(self):
        self._merged = None
        self._floor = None

    def update(self, per_video: dict, mask) -> None:
        mask = np.asarray(mask, bool)
        one = VideoMeans.single_from_model_output(
            mask=mask, has_objects=np.asarray(per_video["has_objects"], bool),
            **{k: np.asarray(per_video[k], np.float32) for k in VIDEO})
        self._merged = one if self._merged is None else self._merged.merge(one)
        if "floor_alpha" in per_video:
            floor = FloorMeans.single_from_model_output(
                mask=mask, has_floor=np.asarray(per_video["has_floor"], bool),
                **{k: np.asarray(per_video[k], np.float32) for k in FLOOR})
            self._floor = floor if self._floor is None else self._floor.merge(floor)

    def result(self) -> dict[str, float]:
        if self._merged is None:
            return {"num_videos": 0}
        averages = {name: getattr(self._merged, name) for name in VIDEO}
        if self._floor is not None:
            averages.update({name: getattr(self._floor, name) for name in FLOOR})
        return {name: float(a.total) / max(int(a.count), 1) for name, a in averages.items()} | {
            "num_videos": int(self._merged.ari.count)}
