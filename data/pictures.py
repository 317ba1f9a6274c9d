"""Pictures of examples and predictions: one uint8 conversion, one palette, PNG grids and GIFs (frames as columns).

Batch values are decoded with their schema (data/batch.py) before they are drawn, so a train clip's flow codes
and an eval clip's float flow give the same colours.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from data.batch import Schema


def to_uint8(x: Any) -> np.ndarray:
    """Floats in [0, 1] -> uint8, rounded (a code c decoded as c/255 comes back as c)."""
    return (np.clip(np.asarray(x, np.float32), 0, 1) * 255).round().astype(np.uint8)


def palette(n: int = 256) -> np.ndarray:
    """Fixed, distinct segmentation colours; 0 (background) is black."""
    rng = np.random.default_rng(7)
    pal = (rng.uniform(0.25, 1.0, (n, 3)) * 255).astype(np.uint8)
    pal[0] = 0
    return pal


def draw_boxes(frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Outlines each tracked box (T, K, 4) on uint8 frames (T, H, W, 3) in its segmentation colour."""
    out = frames.copy()
    h, w = out.shape[1:3]
    pal = palette()
    for t in range(out.shape[0]):
        for k, (y0, x0, y1, x1) in enumerate(boxes[t]):
            if y1 - y0 <= 0 or x1 - x0 <= 0:
                continue
            r0, r1 = int(y0 * h), min(int(np.ceil(y1 * h)) - 1, h - 1)
            c0, c1 = int(x0 * w), min(int(np.ceil(x1 * w)) - 1, w - 1)
            out[t, [r0, r1], c0 : c1 + 1] = pal[k + 1]
            out[t, r0 : r1 + 1, [c0, c1]] = pal[k + 1]
    return out


def grid(rows: list[np.ndarray]) -> np.ndarray:
    """Rows of (T, H, W, 3) uint8 -> one (rows*H, T*W, 3) image, frames as columns."""
    return np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)


def example_rows(example: Mapping[str, np.ndarray], schema: Schema, max_frames: int = 8) -> list[np.ndarray]:
    """One unbatched example -> rows for the keys it has, in this order: video with boxes, segmentation, flow
    (RGB), depth (min-max scaled). At most `max_frames` frames, evenly spread."""
    t = example["video"].shape[0]
    idx = np.linspace(0, t - 1, min(t, max_frames)).round().astype(int)
    rows = [draw_boxes(to_uint8(schema.to_float("video", example["video"][idx])), example["boxes"][idx])]
    if "segmentations" in example:
        rows.append(palette()[example["segmentations"][idx]])
    if "flow" in example:
        rows.append(to_uint8(schema.to_float("flow", example["flow"][idx])))
    if "depth" in example:
        depth = schema.to_float("depth", example["depth"][idx])[..., 0]
        scaled = (depth - depth.min()) / max(float(np.ptp(depth)), 1e-6)
        rows.append(np.repeat(to_uint8(scaled)[..., None], 3, -1))
    return rows


def prediction_rows(video, gt_seg, pred_seg, alphas, target, pred_target) -> list[np.ndarray]:
    """One evaluated video, each argument (T, H, W, ...) as floats or ids -> six rows: input, ground-truth
    segmentation, predicted segmentation, slot masks over the input, a target and its reconstruction."""
    pal = palette()
    overlay = np.einsum("sthw,sc->thwc", np.moveaxis(np.asarray(alphas, np.float32), 1, 0),
                        pal[: alphas.shape[1]].astype(np.float32) / 255)
    masks = 0.5 * np.asarray(video, np.float32) + 0.5 * overlay
    return [to_uint8(video), pal[np.asarray(gt_seg)], pal[np.asarray(pred_seg)], to_uint8(masks), to_uint8(target),
            to_uint8(pred_target)]


def prediction_labels(target: str) -> tuple[str, ...]:
    """The names of prediction_rows' rows, for a reconstructed `target` ("video" or "flow")."""
    shown = "frames" if target == "video" else target
    return ("input", "true objects", "predicted slots", "slot masks", f"target {shown}", "reconstruction")


MIN_SIDE = 64  # frames smaller than this are enlarged (nearest neighbour) so that a mask's outline shows
LABEL_WIDTH = 120
INK, PAPER = (0, 0, 0), (255, 255, 255)


def upscale(frames: np.ndarray, factor: int) -> np.ndarray:
    """(T, H, W, C) -> (T, factor*H, factor*W, C), each pixel a factor x factor block."""
    return frames if factor == 1 else np.repeat(np.repeat(frames, factor, axis=1), factor, axis=2)


def scale_for(rows: list[np.ndarray]) -> int:
    return max(1, -(-MIN_SIDE // rows[0].shape[1]))


def labelled_grid(rows: list[np.ndarray], labels: tuple[str, ...], num_slots: int) -> np.ndarray:
    """grid() with each frame enlarged to at least MIN_SIDE pixels, each row's name on its left and, below,
    the slot colours: slot k is conditioned on object k and drawn in object k's colour, slot 0 the background."""
    factor = scale_for(rows)
    body = grid([upscale(r, factor) for r in rows])
    side = rows[0].shape[1] * factor
    legend_h = 24
    image = Image.new("RGB", (LABEL_WIDTH + body.shape[1], body.shape[0] + legend_h), PAPER)
    image.paste(Image.fromarray(body), (LABEL_WIDTH, 0))
    draw = ImageDraw.Draw(image)
    for i, label in enumerate(labels):
        draw.text((4, i * side + side // 2 - 5), label, fill=INK)
    draw.text((4, body.shape[0] + 6), "slot colours", fill=INK)
    x, pal = LABEL_WIDTH, palette()
    for k in range(num_slots):
        draw.rectangle((x, body.shape[0] + 4, x + 15, body.shape[0] + 19), fill=tuple(int(c) for c in pal[k]),
                       outline=INK)
        name = f"{k} background" if k == 0 else str(k)
        draw.text((x + 19, body.shape[0] + 6), name, fill=INK)
        x += 19 + 8 * len(name) + 10
    return np.asarray(image)


def save_png(path: str, rows: list[np.ndarray], labels: tuple[str, ...] | None = None,
             num_slots: int = 0) -> np.ndarray:
    """The rows as one picture (labelled_grid when `labels` are given); returns it."""
    image = labelled_grid(rows, labels, num_slots) if labels else grid(rows)
    Image.fromarray(image).save(path)
    return image


def save_gif(path: str, rows: list[np.ndarray], fps: int = 6) -> None:
    """One frame of the GIF per video frame: the rows stacked, enlarged as in labelled_grid."""
    factor = scale_for(rows)
    frames = [Image.fromarray(np.concatenate([upscale(r[t:t + 1], factor)[0] for r in rows], axis=0))
              for t in range(rows[0].shape[0])]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
