"""STATM's predictor, TimeSpaceTransformerBlock2 (SAVi's predictor is layers.TransformerBlock).

It takes the corrected slots of frame t and the memory buffer, and returns the initial slots for t+1.
The buffer is fixed-size (B, L, S, D) with a validity mask over L (model/video.py); masked entries get
weight exactly 0, so the result equals the original's growing list of frames 0..t (docs/model.md §3).
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from model.layers import MLP, Dtype, attention, layer_norm


class TimeSpaceTransformerBlock2(nn.Module):
    """Spatial attention over the S slots of frame t and temporal attention of each slot over its own
    history, in parallel, each with a residual and post-LayerNorm; their sum goes through a residual MLP
    and a final LayerNorm. No temporal position encoding: the history is a set."""

    num_heads: int = 4
    qkv_size: int = 128
    mlp_size: int = 256
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, slots: jnp.ndarray, buffer: jnp.ndarray, valid: jnp.ndarray) -> jnp.ndarray:
        """slots (B, S, D); buffer (B, L, S, D); valid (L,) bool, which buffer rows hold history -> (B, S, D)."""
        b, s, d = slots.shape
        # Creation order fixes the names: MHA_0/LN_0 are spatial, MHA_1/LN_1 temporal (docs/model.md §5).
        spatial = attention(self.num_heads, self.qkv_size, d, self.dtype, "MultiHeadDotProductAttention_0")
        temporal = attention(self.num_heads, self.qkv_size, d, self.dtype, "MultiHeadDotProductAttention_1")
        x_s = layer_norm("LayerNorm_0", self.dtype)(spatial(slots, slots) + slots)
        query = slots.reshape(b * s, 1, d)
        memory = jnp.transpose(buffer, (0, 2, 1, 3)).reshape(b * s, buffer.shape[1], d)
        # Masked logits become finfo.min before the softmax: weight exactly 0 (the current frame is always valid).
        x_t = temporal(query, memory, memory, mask=valid[None, None, None, :]).reshape(b, s, d)
        x_t = layer_norm("LayerNorm_1", self.dtype)(x_t + slots)
        y = x_s + x_t
        return layer_norm("LayerNorm_2", self.dtype)(MLP(self.mlp_size, dtype=self.dtype, name="MLP_0")(y) + y)
