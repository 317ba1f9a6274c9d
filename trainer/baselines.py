"""The static-box baseline: each object's first-frame box painted in every frame (what conditioning alone gives)."""

from __future__ import annotations

import numpy as np


def static_box_segmentation(boxes: np.ndarray, frames: int, height: int, width: int) -> np.ndarray:
    """boxes (B, T, K, 4) [ymin, xmin, ymax, xmax] -> (B, T, H, W) ids: slot k+1 inside object k's frame-0
    box, 0 elsewhere. Objects are painted from the last to the first, so the more visible ones (lower ids,
    MOVi orders instances by visibility) end up on top where boxes overlap."""
    b, _, k, _ = boxes.shape
    rows = (np.arange(height) + 0.5) / height
    cols = (np.arange(width) + 0.5) / width
    seg = np.zeros((b, height, width), np.int32)
    for n in reversed(range(k)):
        y0, x0, y1, x1 = (boxes[:, 0, n, i][:, None, None] for i in range(4))
        inside = (rows[None, :, None] >= y0) & (rows[None, :, None] < y1) & (cols[None, None] >= x0) & (
            cols[None, None] < x1) & ((y1 - y0) > 0)
        seg = np.where(inside, n + 1, seg)
    return np.repeat(seg[:, None], frames, axis=1)
