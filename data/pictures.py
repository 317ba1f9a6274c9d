"""PNG grids of preprocessed examples (rows: video with boxes, segmentation, flow, depth; frames as columns)."""

from __future__ import annotations

import numpy as np


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


def example_grid(ex: dict[str, np.ndarray], max_frames: int = 8) -> np.ndarray:
    """Rows: video with boxes, segmentation, flow (RGB), depth; frames as columns."""
    t = ex["video"].shape[0]
    idx = np.linspace(0, t - 1, min(t, max_frames)).round().astype(int)
    video = (np.clip(ex["video"][idx], 0, 1) * 255).astype(np.uint8)
    depth = ex["depth"][idx, ..., 0]
    depth = ((depth - depth.min()) / max(float(np.ptp(depth)), 1e-6) * 255).astype(np.uint8)
    rows = [draw_boxes(video, ex["boxes"][idx]), palette()[ex["segmentations"][idx]],
            (np.clip(ex["flow"][idx], 0, 1) * 255).astype(np.uint8), np.repeat(depth[..., None], 3, -1)]
    return np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)
