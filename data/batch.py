"""The batch contract between the input pipeline and its consumers (the trainer, the picture code, the tools).

One place says which keys a train and an eval batch carry, their shapes and dtypes, and how a stored dtype
maps to the float32 the model sees. The pipeline produces exactly these keys (`Select`); the loss, the target
means and the pictures decode them with `to_float`, by what the schema states, never by guessing from a dtype.

Train flow travels as flow_to_rgb's uint8 colour codes: a quarter of the bytes to batch and move to the device.
`codes_to_float` is TensorFlow's convert_image_dtype(uint8 -> float32), so a code c decodes to exactly the
float32 value that SAVi's float chain produces, on the host or on the device.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import grain
import numpy as np

F32 = np.float32
# Decoder targets the data provides, with their channel counts (flow is flow_to_rgb's RGB image).
TARGET_CHANNELS: dict[str, int] = {"video": 3, "flow": 3, "depth": 1}


def codes_to_float(codes: Any) -> Any:
    """uint8 colour codes -> float32 in [0, 1] as convert_image_dtype: codes * (1/255) in float32.
    NumPy and jax.numpy arrays alike (the train step runs it on the device)."""
    return codes.astype(F32) * F32(1.0 / 255.0)


@dataclasses.dataclass(frozen=True)
class Field:
    """One batch key. dims name the axes: B batch, T frames, R resolution, K max_instances; ints are sizes."""

    name: str
    dims: tuple[str | int, ...]
    dtype: str
    codes: bool = False  # uint8 colour codes standing for codes / 255 (decode with to_float)

    def shape(self, sizes: Mapping[str, int]) -> tuple[int, ...]:
        return tuple(sizes[d] if isinstance(d, str) else d for d in self.dims)


VIDEO = Field("video", ("B", "T", "R", "R", 3), "float32")  # in [0, 1]
BOXES = Field("boxes", ("B", "T", "K", 4), "float32")  # [ymin, xmin, ymax, xmax], zeros = not tracked
FLOW = Field("flow", ("B", "T", "R", "R", 3), "float32")  # backward flow as RGB (flow_to_rgb)
FLOW_CODES = dataclasses.replace(FLOW, dtype="uint8", codes=True)
DEPTH = Field("depth", ("B", "T", "R", "R", 1), "float32")  # camera distance, or log(1 + d)
SEGMENTATIONS = Field("segmentations", ("B", "T", "R", "R"), "int32")  # 0 = background, k = k-th object
PADDING_MASK = Field("padding_mask", ("B", "T", "R", "R"), "uint8")  # 1 = a real pixel
MASK = Field("mask", ("B",), "bool")  # False for the copies that pad the last eval batch


@dataclasses.dataclass(frozen=True)
class Schema:
    fields: tuple[Field, ...]

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    def field(self, key: str) -> Field:
        for f in self.fields:
            if f.name == key:
                return f
        raise KeyError(f"{key!r} is not in this batch (keys: {self.keys})")

    def to_float(self, key: str, x: Any) -> Any:
        """The float32 value of batch[key] as the model sees it."""
        return codes_to_float(x) if self.field(key).codes else x.astype(F32)

    def shapes(self, batch: int, frames: int, resolution: int, max_instances: int) -> dict[str, tuple[int, ...]]:
        sizes = {"B": batch, "T": frames, "R": resolution, "K": max_instances}
        return {f.name: f.shape(sizes) for f in self.fields}

    def check(self, batch: Mapping[str, Any], batch_size: int, frames: int, resolution: int,
              max_instances: int) -> None:
        """Raises ValueError naming every key whose presence, shape or dtype breaks the contract."""
        shapes = self.shapes(batch_size, frames, resolution, max_instances)
        bad = [f"{f.name}: missing" for f in self.fields if f.name not in batch]
        bad += [f"{k}: unexpected key" for k in batch if k not in shapes]
        bad += [f"{f.name}: {np.shape(batch[f.name])} {np.asarray(batch[f.name]).dtype}, expected {shapes[f.name]} "
                f"{f.dtype}" for f in self.fields if f.name in batch and (
                    np.shape(batch[f.name]) != shapes[f.name] or np.asarray(batch[f.name]).dtype != f.dtype)]
        if bad:
            raise ValueError("batch breaks its schema (data/batch.py): " + "; ".join(bad))


def train_schema(targets: tuple[str, ...]) -> Schema:
    """What the train step reads: the frames, the conditioning boxes and the decoder's targets."""
    carried = {"flow": FLOW_CODES, "depth": DEPTH}  # a video target is the VIDEO input itself
    return Schema((VIDEO, BOXES, *(carried[t] for t in sorted(targets) if t != "video")))


# What evaluation reads: the model's inputs, the ground truth for the metrics and pictures, the padding flag.
EVAL = Schema((VIDEO, BOXES, SEGMENTATIONS, PADDING_MASK, FLOW, DEPTH, MASK))


@dataclasses.dataclass(frozen=True)
class Select(grain.transforms.Map):
    """The last op of a chain: exactly the schema's keys, in its order (the rest is never batched)."""

    schema: Schema

    def map(self, features: dict[str, Any]) -> dict[str, Any]:
        return {k: features[k] for k in self.schema.keys}
