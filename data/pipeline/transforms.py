"""SAVi's preprocessing ops in NumPy, one small picklable Grain transform per op.

Semantics follow `savi/lib/preprocessing.py` exactly (docs/data.md §3), computed in float32 in TensorFlow's
order of operations so that the eval chains reproduce SAVi's TF outputs (tests/test_preprocessing_parity.py).
The random ops (window, crop) match TF's distributions, not its stateless RNG bits.

Every op reads and writes a dict, except the first of a chain, which decodes a `records.LazyRecord`:
`DecodeRecord` (all frames, eval) or `DecodeStridedWindow` (SAVi's strided window applied while decoding,
so a 6-frame train clip never decompresses the other 18 frames; dequantisation is elementwise, so
windowing the codes first gives the identical result).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import grain
import numpy as np

from data.batch import codes_to_float

Features = dict[str, Any]
F32 = np.float32
TEMPORAL_KEYS = ("video", "segmentations", "padding_mask", "flow", "depth", "boxes", "backward_flow")
# Keys resized as images: float ones bilinearly, integer ones with nearest neighbour.
SPATIAL_KEYS = ("video", "segmentations", "padding_mask", "flow", "depth")


# --------------------------------------------------------------------------------------------------------
# Resampling kernels (tf.image.resize, antialias=False, half-pixel centres).
# --------------------------------------------------------------------------------------------------------


def _bilinear_axis(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TF's compute_interpolation_weights with HalfPixelScaler, in float32."""
    scale = F32(in_size) / F32(out_size)
    x = (np.arange(out_size, dtype=F32) + F32(0.5)) * scale - F32(0.5)
    floor = np.floor(x)
    lo = np.maximum(floor, 0).astype(np.int64)
    hi = np.minimum(np.ceil(x), in_size - 1).astype(np.int64)
    return lo, hi, (x - floor).astype(F32)


def _nearest_axis(in_size: int, out_size: int) -> np.ndarray:
    scale = F32(in_size) / F32(out_size)
    idx = np.floor((np.arange(out_size, dtype=F32) + F32(0.5)) * scale).astype(np.int64)
    return np.clip(idx, 0, in_size - 1)


def resize_bilinear(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """(T, H, W, C) float -> (T, out_h, out_w, C) float32; TF's top/bottom/lerp order of operations."""
    _, h, w, _ = x.shape
    if (h, w) == (out_h, out_w):
        return x.astype(F32, copy=False)
    ylo, yhi, yl = _bilinear_axis(h, out_h)
    xlo, xhi, xl = _bilinear_axis(w, out_w)
    x = x.astype(F32, copy=False)
    xl = xl[None, None, :, None]
    top_rows, bot_rows = x[:, ylo], x[:, yhi]
    top = top_rows[:, :, xlo] + (top_rows[:, :, xhi] - top_rows[:, :, xlo]) * xl
    bottom = bot_rows[:, :, xlo] + (bot_rows[:, :, xhi] - bot_rows[:, :, xlo]) * xl
    return top + (bottom - top) * yl[None, :, None, None]


def resize_nearest(x: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """(T, H, W[, C]) any dtype -> nearest-neighbour resize, half-pixel centres (128->64 picks x[1::2])."""
    h, w = x.shape[1:3]
    if (h, w) == (out_h, out_w):
        return x
    return x[:, _nearest_axis(h, out_h)][:, :, _nearest_axis(w, out_w)]


def _resize_features(features: Features, out_h: int, out_w: int) -> None:
    h, w = features["video"].shape[1:3]
    for key in SPATIAL_KEYS:
        if key not in features:
            continue
        arr = features[key]
        if arr.dtype.kind == "f":
            arr = resize_bilinear(arr, out_h, out_w)
        else:
            arr = resize_nearest(arr, out_h, out_w)
        if key == "flow":  # flow is in pixels: rescale (Δrow, Δcol) with the image
            arr = arr * np.array([F32(out_h) / F32(h), F32(out_w) / F32(w)], F32)
        features[key] = arr


# --------------------------------------------------------------------------------------------------------
# Ops.
# --------------------------------------------------------------------------------------------------------


def strided_window_start(num_frames: int, length: int, rng: np.random.Generator) -> int:
    """SAVi's temporal_random_strided_window: one of ceil(T/L) non-overlapping windows, uniformly."""
    return int(rng.integers(0, math.ceil(num_frames / length))) * length


@dataclasses.dataclass(frozen=True)
class DecodeRecord(grain.transforms.Map):
    """LazyRecord -> dict of raw codes, all frames."""

    def map(self, record) -> Features:
        return record.decode()


@dataclasses.dataclass(frozen=True)
class DecodeStridedWindow(grain.transforms.RandomMap):
    """LazyRecord -> dict of raw codes for one strided window (zero-padded if short), `shape` of the source."""

    length: int

    def random_map(self, record, rng: np.random.Generator) -> Features:
        start = strided_window_start(record.num_frames, self.length, rng)
        f = record.decode(start, start + self.length)
        out = {k: (_crop_or_pad_time(v, 0, self.length) if k in TEMPORAL_KEYS else v) for k, v in f.items()}
        out["shape"] = np.array(record.fields["video"]["shape"], np.int32)
        return out


@dataclasses.dataclass(frozen=True)
class VideoFromRecord(grain.transforms.Map):
    """SAVi's VideoFromTfds on our record: dequantise codes, add `padding_mask` and `shape`."""

    def map(self, r: Features) -> Features:
        flow_min, flow_max = r["backward_flow_range"]
        depth_min, depth_max = r["depth_range"]
        return {
            "video": r["video"].astype(F32) * F32(1.0 / 255.0),  # tf.image.convert_image_dtype
            "segmentations": r["segmentations"].astype(np.int32),
            "depth": _uint16_to_float(r["depth"], depth_min, depth_max)[..., None],
            "flow": _uint16_to_float(r["backward_flow"], flow_min, flow_max),
            "boxes": r["boxes"],
            "padding_mask": np.ones(r["video"].shape[:3], np.uint8),
            # The *source* shape, never updated by later ops (as SAVi's `shape`); set by an earlier window.
            "shape": r.get("shape", np.array(r["video"].shape, np.int32)),
            "video_name": np.asarray(r["video_name"]),
            **({"mask": r["mask"]} if "mask" in r else {}),  # eval padding flag (pipeline.PaddedSource)
        }


def _uint16_to_float(codes: np.ndarray, lo: np.float32, hi: np.float32) -> np.ndarray:
    return codes.astype(F32) / F32(65535.0) * F32(hi - lo) + F32(lo)


@dataclasses.dataclass(frozen=True)
class SparseToDenseAnnotation(grain.transforms.Map):
    """Keep the first `max_instances` box tracks (pad with NOTRACK) and zero segmentation ids > K."""

    max_instances: int

    def map(self, f: Features) -> Features:
        boxes = f["boxes"][:, : self.max_instances]
        if boxes.shape[1] < self.max_instances:
            boxes = np.pad(boxes, ((0, 0), (0, self.max_instances - boxes.shape[1]), (0, 0)))
        seg = f["segmentations"]
        if seg.size and seg.max() > self.max_instances:  # the pass is only paid by videos with more than K objects
            seg = np.where(seg <= self.max_instances, seg, 0).astype(seg.dtype)
        return {**f, "boxes": boxes, "segmentations": seg}


def _crop_or_pad_time(x: np.ndarray, start: int, length: int) -> np.ndarray:
    x = x[start : start + length]
    if x.shape[0] < length:  # NOTRACK boxes and every other key pad with zeros
        x = np.pad(x, [(0, length - x.shape[0])] + [(0, 0)] * (x.ndim - 1))
    return x


@dataclasses.dataclass(frozen=True)
class TemporalCropOrPad(grain.transforms.Map):
    length: int

    def map(self, f: Features) -> Features:
        return {k: (_crop_or_pad_time(v, 0, self.length) if k in TEMPORAL_KEYS else v) for k, v in f.items()}


@dataclasses.dataclass(frozen=True)
class ResizeSmall(grain.transforms.Map):
    """Resize so the smaller side is `size` (aspect kept; TF rounds half to even). Boxes are unchanged."""

    size: int

    def map(self, f: Features) -> Features:
        f = dict(f)
        _resize_features(f, *resize_small_shape(*f["video"].shape[1:3], self.size))
        return f


def resize_small_shape(h: int, w: int, size: int) -> tuple[int, int]:
    """SAVi's get_resize_small_shape, in float32 (tf.round rounds half to even, as np.round)."""
    ratio = F32(size) / F32(min(h, w))
    return int(np.round(F32(h) * ratio)), int(np.round(F32(w) * ratio))


def sample_distorted_crop(rng: np.random.Generator, h: int, w: int, min_object_covered: float,
                          aspect_ratio_range: tuple[float, float], area_range: tuple[float, float],
                          max_attempts: int = 100) -> tuple[int, int, int, int]:
    """tf.image.sample_distorted_bounding_box with the whole frame as the only object box.

    Returns (top, left, height, width) in pixels; the whole frame when no attempt succeeds.
    """
    min_area, max_area = area_range[0] * h * w, area_range[1] * h * w
    # TF's attempt loop, evaluated for all attempts at once (one Python pass costs ~40 us per attempt, and
    # with the whole frame as the object ~80% of attempts fail the coverage test).
    aspect = rng.uniform(*aspect_ratio_range, max_attempts)
    height = np.rint(np.sqrt(min_area / aspect)).astype(np.int64)
    max_height = np.rint(np.sqrt(max_area / aspect)).astype(np.int64)
    too_wide = np.rint(max_height * aspect) > w
    max_height = np.where(too_wide, ((w + 0.5 - 1e-7) / aspect).astype(np.int64), max_height)
    max_height = np.minimum(max_height, h)
    height = np.minimum(height, max_height)
    # rng.integers(0, max_height - height + 1) where height < max_height, drawn as a uniform index
    span = max_height - height + 1
    height = height + np.where(height < max_height, np.minimum((rng.random(max_attempts) * span).astype(np.int64),
                                                               span - 1), 0)
    width = np.rint(height * aspect).astype(np.int64)
    up = width * height < min_area
    height = np.where(up, height + 1, height)
    width = np.where(up, np.rint(height * aspect).astype(np.int64), width)
    down = width * height > max_area
    height = np.where(down, height - 1, height)
    width = np.where(down, np.rint(height * aspect).astype(np.int64), width)
    area = width * height
    ok = ((min_area <= area) & (area <= max_area) & (width > 0) & (width <= w) & (height > 0) & (height <= h)
          & (area >= min_object_covered * h * w))  # the only "object" is the whole frame
    if not ok.any():
        return 0, 0, h, w
    i = int(np.argmax(ok))
    ch, cw = int(height[i]), int(width[i])
    return int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw


def crop_or_pad_boxes(boxes: np.ndarray, top: int, left: int, height: int, width: int, h: int, w: int) -> np.ndarray:
    """SAVi's crop_or_pad_boxes for (T, K, 4) tracks: NOTRACK where the cropped box is empty."""
    t, k, _ = boxes.shape
    b = boxes.reshape(t, k, 2, 2) * np.array([h, w], F32) - np.array([top, left], F32)
    b = np.clip(b / np.array([height, width], F32), 0.0, 1.0).reshape(t, k, 4).astype(F32)
    valid = np.all(b[..., 2:] - b[..., :2] > 0.0, axis=-1)
    return np.where(valid[..., None], b, F32(0.0))


@dataclasses.dataclass(frozen=True)
class RandomResizedCrop(grain.transforms.RandomMap):
    """One crop per video (all frames and keys), then resize to (height, width); SAVi++'s train augmentation."""

    height: int
    width: int
    min_object_covered: float = 0.75
    aspect_ratio_range: tuple[float, float] = (3 / 4, 4 / 3)
    area_range: tuple[float, float] = (0.08, 1.0)
    max_attempts: int = 100

    def random_map(self, f: Features, rng: np.random.Generator) -> Features:
        h, w = f["video"].shape[1:3]
        top, left, ch, cw = sample_distorted_crop(rng, h, w, self.min_object_covered, self.aspect_ratio_range,
                                                  self.area_range, self.max_attempts)
        out = dict(f)
        for key in SPATIAL_KEYS:
            if key in out:
                out[key] = out[key][:, top : top + ch, left : left + cw]
        _resize_features(out, self.height, self.width)
        if "boxes" in out:
            out["boxes"] = crop_or_pad_boxes(out["boxes"], top, left, ch, cw, h, w)
        return out


@dataclasses.dataclass(frozen=True)
class TransformDepth(grain.transforms.Map):
    transform: str = "log_plus"

    def __post_init__(self):
        if self.transform not in ("log_plus", "none"):
            raise ValueError(f"depth transform {self.transform!r}: expected 'none' or 'log_plus'")

    def map(self, f: Features) -> Features:
        if self.transform == "none" or "depth" not in f:
            return f
        return {**f, "depth": np.log(F32(1.0) + f["depth"])}


def flow_to_rgb(flow: np.ndarray) -> np.ndarray:
    """SAVi's flow_tensor_to_rgb_tensor + convert_image_dtype round trip: (…, H, W, 2) -> (…, H, W, 3) float32."""
    return codes_to_float(flow_to_rgb_codes(flow))


def flow_to_rgb_codes(flow: np.ndarray) -> np.ndarray:
    """flow_to_rgb up to its uint8 round trip: (…, H, W, 2) -> (…, H, W, 3) uint8.

    Channel 0 is Δrow (SAVi's docstring calls it x). hsv_to_rgb uses TF's continuous form.
    """
    h, w = flow.shape[-3:-1]
    scaling = F32(50.0 / (h**2.0 + w**2.0) ** 0.5)
    x, y = flow[..., 0].astype(F32), flow[..., 1].astype(F32)
    hue = (np.arctan2(y, x) / F32(np.pi) + F32(1.0)) / F32(2.0)
    sat = np.clip(np.sqrt(y * y + x * x) * scaling, F32(0.0), F32(1.0))
    dh = hue * F32(6.0)
    dr = np.clip(np.abs(dh - F32(3.0)) - F32(1.0), F32(0.0), F32(1.0))
    dg = np.clip(F32(2.0) - np.abs(dh - F32(2.0)), F32(0.0), F32(1.0))
    db = np.clip(F32(2.0) - np.abs(dh - F32(4.0)), F32(0.0), F32(1.0))
    one_minus_s = F32(1.0) - sat
    rgb = np.stack([one_minus_s + sat * dr, one_minus_s + sat * dg, one_minus_s + sat * db], axis=-1)
    return (rgb * F32(255.5)).astype(np.uint8)  # convert_image_dtype(float -> uint8): truncating cast


@dataclasses.dataclass(frozen=True)
class FlowToRGB(grain.transforms.Map):
    """codes=True keeps the uint8 colour codes, as the train batch schema carries flow (data/batch.py)."""

    codes: bool = False

    def map(self, f: Features) -> Features:
        if "flow" not in f:
            return f
        return {**f, "flow": flow_to_rgb_codes(f["flow"]) if self.codes else flow_to_rgb(f["flow"])}
