"""Spatial-broadcast decoder: each slot is tiled to a grid and decoded to features, alpha logits, targets.

Late fusion (small): a per-slot Dense per target, mixed by the alpha masks. Early fusion (++): the features
are mixed first, then one Dense per target. Targets are read out in sorted key order (docs/model.md §6).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from model.layers import CNN, MLP, Dtype, PositionEmbedding


class SpatialBroadcastDecoder(nn.Module):
    targets: tuple[tuple[str, int], ...] = (("flow", 3),)
    resolution: int = 8
    features: Sequence[int] = (64, 64, 64, 64)
    kernel_size: int = 5
    strides: Sequence[int] = (2, 2, 2, 1)
    transpose: Sequence[bool] = (True, True, True, False)
    early_fusion: bool = False
    conv_transpose: str = "lax"  # "lax" (the original's nn.ConvTranspose) | "phases" (same layer, faster on CPU)
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, slots: jnp.ndarray) -> dict[str, jnp.ndarray]:
        """slots (N, S, D) -> targets (N, H, W, C), alphas (N, S, H, W, 1), segmentations (N, H, W, 1)."""
        n, s, d = slots.shape
        x = jnp.broadcast_to(slots.reshape(n * s, 1, 1, d), (n * s, self.resolution, self.resolution, d))
        x = PositionEmbedding(None, self.dtype, name="PositionEmbedding_0")(x)
        x = CNN(self.features, self.kernel_size, self.strides, self.transpose, self.conv_transpose, dtype=self.dtype,
                name="CNN_0")(x)
        h, w, c = x.shape[1:]
        logits = nn.Dense(1, dtype=self.dtype, name="alpha_logits")(x).reshape(n, s, h, w, 1)
        alphas = jax.nn.softmax(logits.astype(jnp.float32), axis=1).astype(self.dtype)
        x = x.reshape(n, s, h, w, c)
        out = {"alphas": alphas, "alpha_logits": logits, "segmentations": jnp.argmax(logits, axis=1)}
        keys = tuple(sorted(k for k, _ in self.targets))
        channels = tuple(dict(self.targets)[k] for k in keys)
        readout = Readout(keys, channels, self.early_fusion, self.dtype, name="Readout_0")
        if self.early_fusion:
            out.update(readout(jnp.sum(x * alphas, axis=1)))
        else:
            out.update({k: jnp.sum(v * alphas, axis=1) for k, v in readout(x).items()})
        return out


class _Dense(nn.Module):
    """SAVi's misc.Dense wrapper (so the late-fusion leaves read Readout_0/Dense_0/Dense_0)."""

    features: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return nn.Dense(self.features, dtype=self.dtype, name="Dense_0")(x)


class Readout(nn.Module):
    """One linear head per target: `Dense_i` (late fusion, per slot) or `MLP_i` with no hidden layer (early)."""

    keys: tuple[str, ...]
    channels: tuple[int, ...]
    early_fusion: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> dict[str, jnp.ndarray]:
        out = {}
        for i, (key, c) in enumerate(zip(self.keys, self.channels, strict=True)):
            head = (MLP(0, c, num_hidden_layers=0, dtype=self.dtype, name=f"MLP_{i}") if self.early_fusion
                    else _Dense(c, self.dtype, name=f"Dense_{i}"))
            out[key] = head(x)
        return out


def with_readout_bias(params: dict, target_means: dict[str, Any], early_fusion: bool = False) -> dict:
    """`params` with each target head's bias set to that target's per-channel mean (a copy; other leaves
    shared). The mixed output then starts at the mean target instead of 0, so training skips the phase
    where the loss is dominated by that offset (on the demo, the phase in which the slots became identical).
    The original initialises these biases to zero."""
    readout = dict(params["SpatialBroadcastDecoder_0"]["Readout_0"])
    for i, key in enumerate(sorted(target_means)):  # heads are created in sorted key order
        head, leaf = (f"MLP_{i}", "dense_mlp_0") if early_fusion else (f"Dense_{i}", "Dense_0")
        dense = dict(readout[head][leaf])
        if dense["bias"].shape != np.shape(target_means[key]):
            raise ValueError(f"target {key!r}: mean of shape {np.shape(target_means[key])} for a bias of shape "
                             f"{dense['bias'].shape}")
        dense["bias"] = jnp.asarray(target_means[key], dense["bias"].dtype)
        readout[head] = {**readout[head], leaf: dense}
    decoder = {**params["SpatialBroadcastDecoder_0"], "Readout_0": readout}
    return {**params, "SpatialBroadcastDecoder_0": decoder}
