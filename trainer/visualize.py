"""Pictures of a few validation videos: a PNG grid and an animated GIF (frames as columns).

Rows: input, ground-truth segmentation, predicted segmentation, slot masks over the input, target flow,
reconstructed flow (target and reconstructed video for models that reconstruct video only).
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from data.pictures import palette


def _u8(x: np.ndarray) -> np.ndarray:
    return (np.clip(np.asarray(x, np.float32), 0, 1) * 255).round().astype(np.uint8)


def rows_for_video(video, gt_seg, pred_seg, alphas, flow, pred_flow) -> list[np.ndarray]:
    """Each argument for one video, (T, H, W, ...); returns the six rows as (T, H, W, 3) uint8."""
    pal = palette().astype(np.float32) / 255
    overlay = np.einsum("sthw,sc->thwc", np.moveaxis(np.asarray(alphas, np.float32), 1, 0), pal[: alphas.shape[1]])
    masks = 0.5 * np.asarray(video, np.float32) + 0.5 * overlay
    return [_u8(video), palette()[np.asarray(gt_seg)], palette()[np.asarray(pred_seg)], _u8(masks), _u8(flow),
            _u8(pred_flow)]


def grid(rows: list[np.ndarray]) -> np.ndarray:
    """Rows of (T, H, W, 3) -> one (rows*H, T*W, 3) image, frames as columns."""
    return np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)


def save_png(path: str, rows: list[np.ndarray]) -> np.ndarray:
    image = grid(rows)
    Image.fromarray(image).save(path)
    return image


def save_gif(path: str, rows: list[np.ndarray], fps: int = 6) -> None:
    """One frame of the GIF per video frame: the six rows stacked."""
    frames = [Image.fromarray(np.concatenate([r[t] for r in rows], axis=0)) for t in range(rows[0].shape[0])]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
