"""Building blocks shared by encoder, corrector, predictor and decoder (SAVi's `misc` modules).

Submodule names follow the original's parameter tree (dense_mlp_0, dense_pe_0, conv_0, …) so that the
importer (model/seed_import.py) is a rename of prefixes, not a re-layout. Conventions that the reference
forward passes pin down (docs/model.md §8): LayerNorm ε = 1e-6 with exact (two-pass) variance; every Dense
has a bias unless stated; coordinate grids are constants built with jnp.linspace.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

Dtype = Any


def layer_norm(name: str | None = None, dtype: Dtype = jnp.float32) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=1e-6, use_fast_variance=False, dtype=dtype, name=name)


class MLP(nn.Module):
    """[LayerNorm] -> (Dense -> ReLU) x num_hidden_layers -> Dense (SAVi's misc.MLP, no residual)."""

    hidden_size: int
    output_size: int | None = None
    num_hidden_layers: int = 1
    layernorm: str | None = None  # None | "pre"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        output_size = self.output_size or x.shape[-1]
        if self.layernorm == "pre":
            x = layer_norm("LayerNorm_0", self.dtype)(x)
        for i in range(self.num_hidden_layers):
            x = nn.relu(nn.Dense(self.hidden_size, dtype=self.dtype, name=f"dense_mlp_{i}")(x))
        return nn.Dense(output_size, dtype=self.dtype, name=f"dense_mlp_{self.num_hidden_layers}")(x)


def coordinate_grid(height: int, width: int) -> jnp.ndarray:
    """(1, H, W, 2) in [-1, 1], channel 0 = row, channel 1 = column. A constant, not a parameter
    (the original kept it as a stop-gradient "param"); jnp.linspace matches the original bit for bit."""
    rows = jnp.linspace(-1.0, 1.0, height, dtype=jnp.float32)
    cols = jnp.linspace(-1.0, 1.0, width, dtype=jnp.float32)
    return jnp.stack(jnp.meshgrid(rows, cols, indexing="ij"), axis=-1)[None]


class PositionEmbedding(nn.Module):
    """x + Dense(grid) ("linear", "project_add"), then an optional MLP that *replaces* x (no residual)."""

    mlp_hidden_size: int | None = None  # None: no output transform
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        grid = coordinate_grid(x.shape[-3], x.shape[-2]).astype(self.dtype)
        x = x + nn.Dense(x.shape[-1], dtype=self.dtype, name="dense_pe_0")(grid)
        if self.mlp_hidden_size is not None:
            x = MLP(self.mlp_hidden_size, layernorm="pre", dtype=self.dtype, name="MLP_0")(x)
        return x


def _transpose_padding(kernel: int, stride: int) -> int:
    """The leading pad of lax.conv_transpose(padding="SAME") on the dilated input (the trailing one follows)."""
    return kernel - 1 if stride > kernel - 1 else -(-(kernel + stride - 2) // 2)


class PhaseConvTranspose(nn.Module):
    """nn.ConvTranspose(padding="SAME", transpose_kernel=False) computed as stride x stride ordinary convolutions,
    one per output phase, interleaved. The same parameters (names, shapes, initialisers) and the same sums
    (up to float rounding): output pixel s*m + r only meets the kernel taps k = k0(r) (mod s), so each phase is
    a stride-1 convolution of the undilated input with the kernel's taps k0::s. XLA's CPU backend runs the
    dilated form 2.4-3.5x slower than this (demo decoder layers, fwd + bwd; python -m bench --only conv_transpose)."""

    features: int
    kernel_size: int
    stride: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        k, s = self.kernel_size, self.stride
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (k, k, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
        n, h, w, _ = x.shape
        lead = _transpose_padding(k, s)
        taps = [((lead - r) % s, (r + (lead - r) % s - lead) // s) for r in range(s)]  # (first tap, offset)
        rows = []
        for k0y, dy in taps:
            cols = []
            for k0x, dx in taps:
                sub = kernel[k0y::s, k0x::s]
                if 0 in sub.shape:  # kernel < stride: this phase meets no tap, only the bias
                    cols.append(jnp.zeros((n, h, w, self.features), x.dtype))
                    continue
                # Zero-pad (or crop) so that output m reads inputs m + d .. m + d + taps - 1.
                xp = lax.pad(x, jnp.zeros((), x.dtype), ((0, 0, 0), (-dy, dy + sub.shape[0] - 1, 0),
                                                         (-dx, dx + sub.shape[1] - 1, 0), (0, 0, 0)))
                cols.append(lax.conv_general_dilated(xp, sub, (1, 1), "VALID",
                                                     dimension_numbers=("NHWC", "HWIO", "NHWC")))
            rows.append(jnp.stack(cols, axis=3))  # (N, H, W, s, C): column phase next to the column
        y = jnp.stack(rows, axis=2)  # (N, H, s, W, s, C)
        return y.reshape(n, h * s, w * s, self.features) + bias


class CNN(nn.Module):
    """Conv / ConvTranspose stack with a ReLU after every layer, the last included (SAVi's misc.CNN).

    conv_transpose "lax": nn.ConvTranspose, as the original; "phases": PhaseConvTranspose, the same layer
    (same parameters, equal up to float rounding) several times faster on CPUs."""

    features: Sequence[int]
    kernel_size: int = 5
    strides: Sequence[int] = (1, 1, 1, 1)
    transpose: Sequence[bool] = (False, False, False, False)
    conv_transpose: str = "lax"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        if self.conv_transpose not in ("lax", "phases"):
            raise ValueError(f"conv_transpose={self.conv_transpose!r}: expected 'lax' or 'phases'")
        size = (self.kernel_size, self.kernel_size)
        for i, (features, stride, transpose) in enumerate(zip(self.features, self.strides, self.transpose,
                                                               strict=True)):
            name = f"conv_{i}"
            if not transpose:
                x = nn.Conv(features, size, strides=(stride, stride), padding="SAME", dtype=self.dtype, name=name)(x)
            elif self.conv_transpose == "phases":
                x = PhaseConvTranspose(features, self.kernel_size, stride, self.dtype, name=name)(x)
            else:  # transpose_kernel=False: input dilated, padded (3, 2) for 5x5, kernel not flipped
                x = nn.ConvTranspose(features, size, strides=(stride, stride), padding="SAME", dtype=self.dtype,
                                     name=name)(x)
            x = nn.relu(x)
        return x


def attention(num_heads: int, qkv_size: int, out_size: int, dtype: Dtype, name: str) -> nn.MultiHeadDotProductAttention:
    """flax MHA: biases on q/k/v/out, logits scaled by 1/sqrt(head_dim), plain softmax, no dropout."""
    return nn.MultiHeadDotProductAttention(num_heads=num_heads, qkv_features=qkv_size, out_features=out_size,
                                           dtype=dtype, deterministic=True, name=name)


class TransformerBlock(nn.Module):
    """SAVi's TransformerBlock: self-attention and MLP, pre-norm (encoder) or post-norm (SAVi predictor)."""

    num_heads: int
    qkv_size: int
    mlp_size: int
    pre_norm: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        mha = attention(self.num_heads, self.qkv_size, x.shape[-1], self.dtype, "MultiHeadDotProductAttention_0")
        mlp = MLP(self.mlp_size, dtype=self.dtype, name="MLP_0")
        if self.pre_norm:
            y = layer_norm("LayerNorm_0", self.dtype)(x)
            x = x + mha(y, y)
            return x + mlp(layer_norm("LayerNorm_1", self.dtype)(x))
        x = layer_norm("LayerNorm_0", self.dtype)(x + mha(x, x))
        return layer_norm("LayerNorm_1", self.dtype)(x + mlp(x))


class Transformer(nn.Module):
    """A stack of TransformerBlocks named TransformerBlock{i}, no final norm."""

    num_layers: int
    num_heads: int
    qkv_size: int
    mlp_size: int
    pre_norm: bool = True
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        for i in range(self.num_layers):
            x = TransformerBlock(self.num_heads, self.qkv_size, self.mlp_size, self.pre_norm, self.dtype,
                                 name=f"TransformerBlock{i}")(x)
        return x
