"""The train chain's per-pixel work as one compiled loop (numba): dequantise, crop, resize, log depth, flow->RGB.

NumPy runs SAVi's ops one array at a time, each a pass through memory; this is one pass. The suite times this
chain (BENCHMARKS.md, "Input pipeline"); `--config.data.fused_train_ops=False` runs the op-by-op chain, for a
comparison on your machine. These kernels resize separably (each needed source row
is interpolated across once, then rows are blended in contiguous loops), with the same float32 operations in
the same order as data/pipeline/transforms.py (TF's bilinear top/bottom/lerp, SAVi's dequantisation and
flow_to_rgb). It is equal to the NumPy chain except where our atan2f/logf and NumPy's round differently in the
last bits; tests/test_fused.py bounds that (log depth within 2 ulp; flow colour codes identical on >= 99.9% of
pixels, otherwise off by one). Flow leaves as flow_to_rgb's uint8 codes, as the train batch schema states
(data/batch.py). Eval keeps the NumPy chain, which is tested against SAVi's TensorFlow outputs.
"""

from __future__ import annotations

import dataclasses
import functools
import math

import grain
import numba
import numpy as np

from data.pipeline import transforms as T

F32 = np.float32


_JIT = dict(cache=True, nogil=True, error_model="numpy")  # numpy error model: no zero-division branches,
# so the simple per-pixel loops below vectorise.


@numba.njit(**_JIT)
def _rows_u8(src, x0, x1, wx, first, last, out):  # pragma: no cover
    """Horizontal pass over source rows first..last of one frame: TF's `top` lerp of the [0, 1] float32
    values at each output column. src (H, W*C) uint8 rows; x0/x1 flat tap indices per output value (unsigned,
    so numba emits no negative-index wraparound per load), wx the weight per output value."""
    inv255 = np.float32(1.0 / 255.0)
    for r in range(first, last + 1):
        row, o = src[r], out[r - first]
        for k in range(o.size):
            a = np.float32(row[x0[k]]) * inv255
            o[k] = a + (np.float32(row[x1[k]]) * inv255 - a) * wx[k]


@numba.njit(**_JIT)
def _rows_u16(src, scale, lo, x0, x1, wx, first, last, k0, k1, scratch, out):  # pragma: no cover
    """As _rows_u8 for C-channel uint16 codes, dequantised like SAVi (code / 65535 * (max - min) + min) once
    per source value (values k0..k1-1 of each row) into `scratch`; x0/x1 (C, W_out) taps, out (C, rows, W_out)."""
    for r in range(first, last + 1):
        row = src[r]
        for k in range(k0, k1):
            scratch[k] = np.float32(row[k]) / np.float32(65535.0) * scale + lo
        for c in range(out.shape[0]):
            o, i0, i1 = out[c, r - first], x0[c], x1[c]
            for k in range(o.size):
                a = scratch[i0[k]]
                o[k] = a + (scratch[i1[k]] - a) * wx[k]


@numba.njit(**_JIT)
def _cols(rows, y0, y1, wy, first, mul, out):  # pragma: no cover
    """Vertical pass: out[i] = (top + (bottom - top) * wy[i]) * mul, rows indexed from `first`."""
    for i in range(out.shape[0]):
        top, bottom, w, o = rows[y0[i] - first], rows[y1[i] - first], wy[i], out[i]
        for k in range(o.size):
            o[k] = (top[k] + (bottom[k] - top[k]) * w) * mul


@numba.njit(**_JIT)
def _resize(video, depth, flow, depth_scale, depth_lo, flow_scale, flow_lo, ylo, yhi, yl, xlo, xhi, xl,
            flow_mul_r, flow_mul_c, out_video, out_depth, out_flow2):  # pragma: no cover
    """Dequantise + crop + bilinear resize of video, depth and flow, separably: each needed source row is
    interpolated across once (TF's top/bottom lerps), then rows are blended (TF's final lerp) in contiguous,
    vectorised loops. The float32 operations and their order equal the 4-tap form's."""
    t_len, h, w = video.shape[:3]
    oh, ow = out_video.shape[1:3]
    first, last = ylo.min(), yhi.max()
    c0, c1 = xlo.min(), xhi.max() + 1  # the source columns the taps read
    n_rows = last - first + 1
    one = np.float32(1.0)
    # Flat tap indices into one source row per output column (and channel), interleaved as stored.
    u = np.uint32
    xv0, xv1, wv = np.empty(ow * 3, u), np.empty(ow * 3, u), np.empty(ow * 3, np.float32)
    xd0, xd1 = np.empty((1, ow), u), np.empty((1, ow), u)
    xf0, xf1 = np.empty((2, ow), u), np.empty((2, ow), u)
    for j in range(ow):
        for c in range(3):
            xv0[3 * j + c], xv1[3 * j + c], wv[3 * j + c] = 3 * xlo[j] + c, 3 * xhi[j] + c, xl[j]
        xd0[0, j], xd1[0, j] = xlo[j], xhi[j]
        for c in range(2):
            xf0[c, j], xf1[c, j] = 2 * xlo[j] + c, 2 * xhi[j] + c
    scratch = np.empty(w * 3, np.float32)
    rows_v = np.empty((n_rows, ow * 3), np.float32)
    rows_d = np.empty((1, n_rows, ow), np.float32)
    rows_f = np.empty((2, n_rows, ow), np.float32)
    for t in range(t_len):
        _rows_u8(video[t].reshape(h, w * 3), xv0, xv1, wv, first, last, rows_v)
        _cols(rows_v, ylo, yhi, yl, first, one, out_video[t].reshape(oh, ow * 3))
        _rows_u16(depth[t], depth_scale, depth_lo, xd0, xd1, xl, first, last, c0, c1, scratch, rows_d)
        _cols(rows_d[0], ylo, yhi, yl, first, one, out_depth[t].reshape(oh, ow))
        _rows_u16(flow[t].reshape(h, w * 2), flow_scale, flow_lo, xf0, xf1, xl, first, last, 2 * c0, 2 * c1,
                  scratch, rows_f)
        _cols(rows_f[0], ylo, yhi, yl, first, flow_mul_r, out_flow2[0, t])
        _cols(rows_f[1], ylo, yhi, yl, first, flow_mul_c, out_flow2[1, t])


@numba.njit(**_JIT)
def _log_plus(depth, mantissa):  # pragma: no cover
    """depth <- log(1 + depth) in float32: Cephes logf on the IEEE exponent and mantissa, within 2 ulp of
    libm's logf, and faster than calling it per value. `mantissa`: int32 scratch of depth's size.
    If any 1 + depth is not a positive normal finite float, all values take libm's logf instead."""
    x = depth.reshape(-1)
    bits, m_bits = x.view(np.int32), mantissa.reshape(-1)
    m_f = m_bits.view(np.float32)
    bad = 0
    for k in range(x.size):  # positive normal finite <=> bits in [0x00800000, 0x7F7FFFFF]
        x[k] = np.float32(1.0) + x[k]
        bad |= np.uint32(bits[k]) - np.uint32(0x00800000) >= np.uint32(0x7F000000)
    if bad:
        for k in range(x.size):
            x[k] = math.log(x[k])
        return
    for k in range(x.size):  # x = m * 2^e, m halved above sqrt(2) so that m is in [sqrt(1/2), sqrt(2))
        big = (bits[k] & 0x007FFFFF) > 0x003504F3
        m_bits[k] = (bits[k] & 0x007FFFFF) | (0x3F000000 if big else 0x3F800000)
        e = np.float32((bits[k] >> 23) - 127) + (np.float32(1.0) if big else np.float32(0.0))
        f = m_f[k] - np.float32(1.0)
        z = f * f
        y = np.float32(7.0376836292e-2) * f - np.float32(1.1514610310e-1)
        y = y * f + np.float32(1.1676998740e-1)
        y = y * f - np.float32(1.2420140846e-1)
        y = y * f + np.float32(1.4249322787e-1)
        y = y * f - np.float32(1.6668057665e-1)
        y = y * f + np.float32(2.0000714765e-1)
        y = y * f - np.float32(2.4999993993e-1)
        y = y * f + np.float32(3.3333331174e-1)
        y = y * f * z
        y = y + np.float32(-2.12194440e-4) * e
        y = y - np.float32(0.5) * z
        x[k] = f + y + np.float32(0.693359375) * e


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
    """SAVi's flow_to_rgb on planar (x = Δrow, y = Δcol) with TF's continuous hsv_to_rgb -> its uint8 codes."""
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
        o[3 * k] = np.uint8(np.int32(rgb0 * np.float32(255.5)))
        o[3 * k + 1] = np.uint8(np.int32(rgb1 * np.float32(255.5)))
        o[3 * k + 2] = np.uint8(np.int32(rgb2 * np.float32(255.5)))


@functools.lru_cache(maxsize=1024)
def _axis(in_size: int, out_size: int) -> tuple[np.ndarray, ...]:
    """Bilinear taps and weights along one axis (read-only; crops repeat their sizes)."""
    arrays = T._bilinear_axis(in_size, out_size)
    for a in arrays:
        a.flags.writeable = False
    return arrays


def crop_resize_to_model(raw: T.Features, top: int, left: int, crop_h: int, crop_w: int, out_h: int, out_w: int,
                         log_depth: bool) -> T.Features:
    """Raw codes (after the window and SparseToDense) -> the train step's inputs and targets (video, boxes, flow
    as colour codes, depth), as VideoFromRecord + crop + resize + TransformDepth + FlowToRGB(codes=True) would
    produce them. Segmentations, padding mask and shape are not made: training reads none of them."""
    h, w = raw["video"].shape[1:3]
    ylo, yhi, yl = _axis(crop_h, out_h)
    xlo, xhi, xl = _axis(crop_w, out_w)
    t = raw["video"].shape[0]
    out = {"video": np.empty((t, out_h, out_w, 3), F32), "depth": np.empty((t, out_h, out_w, 1), F32),
           "flow": np.empty((t, out_h, out_w, 3), np.uint8)}
    flow2 = np.empty((2, t, out_h, out_w), F32)  # planar, so that the flow->RGB loop vectorises
    depth_lo, depth_hi = raw["depth_range"]
    flow_lo, flow_hi = raw["backward_flow_range"]
    _resize(raw["video"], raw["depth"], raw["backward_flow"], F32(depth_hi - depth_lo), F32(depth_lo),
            F32(flow_hi - flow_lo), F32(flow_lo), ylo + top, yhi + top, yl, xlo + left, xhi + left, xl,
            F32(out_h) / F32(crop_h), F32(out_w) / F32(crop_w), out["video"], out["depth"], flow2)
    if log_depth:
        _log_plus(out["depth"], np.empty(out["depth"].shape, np.int32))
    _flow_rgb(flow2, F32(50.0 / (out_h**2.0 + out_w**2.0) ** 0.5), out["flow"])
    boxes = raw["boxes"]
    if (crop_h, crop_w) != (h, w):
        boxes = T.crop_or_pad_boxes(boxes, top, left, crop_h, crop_w, h, w)
    return {**out, "boxes": boxes}


@dataclasses.dataclass(frozen=True)
class FusedToModel(grain.transforms.RandomMap):
    """VideoFromRecord │ (RandomResizedCrop | ResizeSmall) │ TransformDepth │ FlowToRGB(codes=True) in one pass."""

    resolution: int
    random_crop: bool
    log_depth: bool
    min_object_covered: float = 0.75

    def random_map(self, raw: T.Features, rng: np.random.Generator) -> T.Features:
        h, w = raw["video"].shape[1:3]
        if self.random_crop:
            top, left, ch, cw = T.sample_distorted_crop(rng, h, w, self.min_object_covered, (3 / 4, 4 / 3),
                                                        (0.08, 1.0))
            out_h = out_w = self.resolution
        else:
            top, left, ch, cw = 0, 0, h, w
            out_h, out_w = T.resize_small_shape(h, w, self.resolution)
        return crop_resize_to_model(raw, top, left, ch, cw, out_h, out_w, self.log_depth)
