"""The train chain's per-pixel work as one compiled loop (numba): dequantise, crop, resize, log depth, flow->RGB.

NumPy runs SAVi's ops one array at a time, each pass through memory; on a 2-core machine that costs ~50 ms
per 6-frame 128x128 clip. This kernel reads each source pixel once and writes each output once, with the
same float32 operations in the same order as data/transforms.py (TF's bilinear top/bottom/lerp, SAVi's
dequantisation and flow_to_rgb). It is equal to the NumPy chain except where libm's atan2f/logf and NumPy's
vectorised versions round differently in the last bit; tests/test_fused.py bounds that (flow colours are
identical on >= 99.9% of pixels and otherwise one 1/255 step apart). Eval keeps the NumPy chain, which is
tested against SAVi's TensorFlow outputs.
"""

from __future__ import annotations

import dataclasses
import math

import grain
import numba
import numpy as np

from data import allocator
from data import transforms as T

F32 = np.float32


_JIT = dict(cache=True, nogil=True, error_model="numpy")  # numpy error model: no zero-division branches,
# so the simple per-pixel loops below vectorise.


@numba.njit(inline="always", **_JIT)
def _dequant(code, scale, lo):
    return np.float32(code) / np.float32(65535.0) * scale + lo


@numba.njit(inline="always", **_JIT)
def _lerp2(tl, tr, bl, br, wx, wy):
    top = tl + (tr - tl) * wx
    bottom = bl + (br - bl) * wx
    return top + (bottom - top) * wy


@numba.njit(**_JIT)
def _resize(video, depth, flow, seg, depth_scale, depth_lo, flow_scale, flow_lo, ylo, yhi, yl, xlo, xhi, xl,
            ny, nx, flow_mul_r, flow_mul_c, out_video, out_depth, out_flow2, out_seg):  # pragma: no cover
    """Dequantise + crop + bilinear resize (TF's order) of video, depth and flow; nearest for ids."""
    inv255 = np.float32(1.0 / 255.0)
    for t in range(out_video.shape[0]):
        for i in range(out_video.shape[1]):
            y0, y1, wy = ylo[i], yhi[i], yl[i]
            for j in range(out_video.shape[2]):
                x0, x1, wx = xlo[j], xhi[j], xl[j]
                for c in range(3):
                    out_video[t, i, j, c] = _lerp2(
                        np.float32(video[t, y0, x0, c]) * inv255, np.float32(video[t, y0, x1, c]) * inv255,
                        np.float32(video[t, y1, x0, c]) * inv255, np.float32(video[t, y1, x1, c]) * inv255, wx, wy)
                ds, dl, fs, fl = depth_scale, depth_lo, flow_scale, flow_lo
                out_depth[t, i, j, 0] = _lerp2(
                    _dequant(depth[t, y0, x0], ds, dl), _dequant(depth[t, y0, x1], ds, dl),
                    _dequant(depth[t, y1, x0], ds, dl), _dequant(depth[t, y1, x1], ds, dl), wx, wy)
                for c in range(2):
                    out_flow2[c, t, i, j] = _lerp2(
                        _dequant(flow[t, y0, x0, c], fs, fl), _dequant(flow[t, y0, x1, c], fs, fl),
                        _dequant(flow[t, y1, x0, c], fs, fl), _dequant(flow[t, y1, x1, c], fs, fl),
                        wx, wy) * (flow_mul_r if c == 0 else flow_mul_c)
                out_seg[t, i, j] = seg[t, ny[i], nx[j]]


@numba.njit(**_JIT)
def _log_plus(depth):  # pragma: no cover
    flat = depth.reshape(-1)
    for k in range(flat.size):
        flat[k] = math.log(np.float32(1.0) + flat[k])


@numba.njit(inline="always", **_JIT)
def _atan2(y, x):
    """float32 atan2 within 2 ulp of libm (Cephes atanf after reduction to [0, 1]); branch-free, so it vectorises."""
    ax, ay = abs(x), abs(y)
    a = min(ax, ay) / max(max(ax, ay), np.float32(1e-30))
    big = a > np.float32(0.41421356237309503)
    z0 = (a - np.float32(1.0)) / (a + np.float32(1.0)) if big else a
    z = z0 * z0
    poly = (np.float32(8.05374449538e-2) * z - np.float32(1.38776856032e-1)) * z + np.float32(1.99777106478e-1)
    r = (np.float32(np.pi / 4) if big else np.float32(0.0)) + (poly * z - np.float32(3.33329491539e-1)) * z * z0 + z0
    r = np.float32(np.pi / 2) - r if ay > ax else r
    r = np.float32(np.pi) - r if x < np.float32(0.0) else r
    return -r if y < np.float32(0.0) else r


@numba.njit(**_JIT)
def _flow_rgb(flow2, scaling, out):  # pragma: no cover
    """SAVi's flow_to_rgb on planar (x = Δrow, y = Δcol) with TF's continuous hsv_to_rgb, uint8 round trip."""
    one, zero = np.float32(1.0), np.float32(0.0)
    fx, fy = flow2[0].reshape(-1), flow2[1].reshape(-1)
    o = out.reshape(-1)
    for k in range(fx.size):
        x, y = fx[k], fy[k]
        hue = (_atan2(y, x) / np.float32(np.pi) + one) / np.float32(2.0)
        sat = min(max(math.sqrt(y * y + x * x) * scaling, zero), one)
        dh = hue * np.float32(6.0)
        s1 = one - sat
        rgb0 = s1 + sat * min(max(abs(dh - np.float32(3.0)) - one, zero), one)
        rgb1 = s1 + sat * min(max(np.float32(2.0) - abs(dh - np.float32(2.0)), zero), one)
        rgb2 = s1 + sat * min(max(np.float32(2.0) - abs(dh - np.float32(4.0)), zero), one)
        o[3 * k] = np.float32(np.int32(rgb0 * np.float32(255.5))) * np.float32(1.0 / 255.0)
        o[3 * k + 1] = np.float32(np.int32(rgb1 * np.float32(255.5))) * np.float32(1.0 / 255.0)
        o[3 * k + 2] = np.float32(np.int32(rgb2 * np.float32(255.5))) * np.float32(1.0 / 255.0)


def crop_resize_to_model(raw: T.Features, top: int, left: int, crop_h: int, crop_w: int, out_h: int, out_w: int,
                         log_depth: bool) -> T.Features:
    """Raw codes (after the window and SparseToDense) -> model inputs, as VideoFromRecord + crop + resize +
    TransformDepth + FlowToRGB would produce them."""
    h, w = raw["video"].shape[1:3]
    ylo, yhi, yl = T._bilinear_axis(crop_h, out_h)
    xlo, xhi, xl = T._bilinear_axis(crop_w, out_w)
    ny, nx = T._nearest_axis(crop_h, out_h) + top, T._nearest_axis(crop_w, out_w) + left
    t = raw["video"].shape[0]
    out = {"video": np.empty((t, out_h, out_w, 3), F32), "depth": np.empty((t, out_h, out_w, 1), F32),
           "flow": np.empty((t, out_h, out_w, 3), F32), "segmentations": np.empty((t, out_h, out_w), np.int32)}
    flow2 = np.empty((2, t, out_h, out_w), F32)  # planar, so that the flow->RGB loop vectorises
    depth_lo, depth_hi = raw["depth_range"]
    flow_lo, flow_hi = raw["backward_flow_range"]
    _resize(raw["video"], raw["depth"], raw["backward_flow"], raw["segmentations"], F32(depth_hi - depth_lo),
            F32(depth_lo), F32(flow_hi - flow_lo), F32(flow_lo), ylo + top, yhi + top, yl, xlo + left, xhi + left,
            xl, ny, nx, F32(out_h) / F32(crop_h), F32(out_w) / F32(crop_w), out["video"], out["depth"], flow2,
            out["segmentations"])
    if log_depth:
        _log_plus(out["depth"])
    _flow_rgb(flow2, F32(50.0 / (out_h**2.0 + out_w**2.0) ** 0.5), out["flow"])
    boxes = raw["boxes"]
    if (crop_h, crop_w) != (h, w):
        boxes = T.crop_or_pad_boxes(boxes, top, left, crop_h, crop_w, h, w)
    return {**out, "boxes": boxes, "padding_mask": np.ones((t, out_h, out_w), np.uint8),
            "shape": raw["shape"], "video_name": np.asarray(raw["video_name"])}


@dataclasses.dataclass(frozen=True)
class FusedToModel(grain.transforms.RandomMap):
    """VideoFromRecord │ (RandomResizedCrop | ResizeSmall) │ TransformDepth │ FlowToRGB in one pass."""

    resolution: int
    random_crop: bool
    log_depth: bool
    min_object_covered: float = 0.75

    def random_map(self, raw: T.Features, rng: np.random.Generator) -> T.Features:
        allocator.keep_freed_memory()  # once per process (Grain workers included); see data/allocator.py
        h, w = raw["video"].shape[1:3]
        if self.random_crop:
            top, left, ch, cw = T.sample_distorted_crop(rng, h, w, self.min_object_covered, (3 / 4, 4 / 3),
                                                        (0.08, 1.0))
            out_h = out_w = self.resolution
        else:
            top, left, ch, cw = 0, 0, h, w
            out_h, out_w = T.resize_small_shape(h, w, self.resolution)
        return crop_resize_to_model(raw, top, left, ch, cw, out_h, out_w, self.log_depth)
