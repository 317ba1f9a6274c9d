"""Slot initialisers (first-frame boxes, centre of mass, learned) and the slot-attention corrector."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from model.layers import MLP, Dtype, layer_norm


class CoordinateEncoderStateInit(nn.Module):
    """Conditioning on first-frame object coordinates, with a background slot prepended at index 0.

    `boxes[:, 0]` [ymin, xmin, ymax, xmax] (or, with center_of_mass, the box centres (y, x)) go through
    Dense 256 -> ReLU -> Dense slot_size. Padded objects have the zero box, so their slots start identical
    to the background slot (upstream behaviour).
    """

    slot_size: int = 128
    hidden_size: int = 256
    center_of_mass: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, boxes: jnp.ndarray, batch_size: int) -> jnp.ndarray:
        coords = boxes[:, 0]  # (B, K, 4): only the first frame conditions
        if self.center_of_mass:
            coords = jnp.stack([(coords[..., 0] + coords[..., 2]) / 2, (coords[..., 1] + coords[..., 3]) / 2], -1)
        coords = jnp.concatenate([jnp.zeros_like(coords[:, :1]), coords], axis=1)  # background first
        return MLP(self.hidden_size, self.slot_size, dtype=self.dtype, name="MLP_0")(coords)


def background_copies(boxes: np.ndarray | jnp.ndarray) -> np.ndarray | jnp.ndarray:
    """(..., T, K, 4) boxes -> (..., K + 1) bool: slot 0 and every slot whose object has the zero first-frame box.
    CoordinateEncoderStateInit gives those slots slot 0's input, so they are exact copies of it. NumPy boxes give
    a NumPy array; JAX ones (traced too) a JAX array."""
    xp = np if isinstance(boxes, np.ndarray) else jnp
    padded = xp.all(boxes[..., 0, :, :] == 0, axis=-1)
    return xp.concatenate([xp.ones_like(padded[..., :1]), padded], axis=-1)


class LearnedStateInit(nn.Module):
    """Unconditional: one learned vector per slot, shared across the batch."""

    num_slots: int
    slot_size: int = 128
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, boxes: jnp.ndarray | None, batch_size: int) -> jnp.ndarray:
        slots = self.param("slots", nn.initializers.normal(1.0), (self.num_slots, self.slot_size))
        return jnp.broadcast_to(slots.astype(self.dtype), (batch_size, self.num_slots, self.slot_size))


class GRU(nn.Module):
    """flax GRUCell under the original's wrapper name: h' = (1 - z) * n + z * h, reset applied after `hn`."""

    features: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, carry: jnp.ndarray, inputs: jnp.ndarray) -> jnp.ndarray:
        new_carry, _ = nn.GRUCell(self.features, dtype=self.dtype, name="GRUCell_0")(carry, inputs)
        return new_carry


class SlotAttention(nn.Module):
    """Slots compete for inputs (softmax over slots), weighted mean of values, GRU update. One head."""

    num_iterations: int = 1
    qkv_size: int = 128
    epsilon: float = 1e-8
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, slots: jnp.ndarray, inputs: jnp.ndarray) -> jnp.ndarray:
        """slots (B, S, D), inputs (B, N, Din) -> corrected slots (B, S, D)."""
        dense = lambda name: nn.DenseGeneral((1, self.qkv_size), use_bias=False, dtype=self.dtype,
                                             name=name)
        dense_q = dense("general_dense_q_0")
        layernorm_q = layer_norm("LayerNorm_0", self.dtype)
        gru = GRU(slots.shape[-1], self.dtype, name="GRU_0")
        x = layer_norm("LayerNorm_1", self.dtype)(inputs)
        k = dense("general_dense_k_0")(x)[..., 0, :]  # (B, N, qkv)
        v = dense("general_dense_v_0")(x)[..., 0, :]
        for _ in range(self.num_iterations):
            q = dense_q(layernorm_q(slots))[..., 0, :] / jnp.sqrt(self.qkv_size).astype(self.dtype)
            logits = jnp.einsum("bsd,bnd->bsn", q, k)
            attn = jax.nn.softmax(logits.astype(jnp.float32), axis=-2).astype(self.dtype)  # over slots
            attn = attn / (jnp.sum(attn, axis=-1, keepdims=True) + self.epsilon)  # weighted mean over inputs
            slots = gru(slots, jnp.einsum("bsn,bnd->bsd", attn, v))
        return slots
