"""The video model: encode all frames once, then scan (correct -> remember -> predict) over time, decode.

The recurrence carries (predicted slots, memory buffer (B, L, S, D), t). Row `t % L` of the buffer receives
the corrected slots of frame t; row i then holds frame t - ((t - i) mod L), and is visible to the predictor
when that frame is >= 0 and >= the start of the current evaluation slice. This one rule covers the
original's whole-clip buffer (L >= T), a sliding window (L < T) and its sliced evaluation, where the buffer
restarts every `slice_size` frames and only the predicted slots carry over (docs/model.md §3).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from model.decoder import SpatialBroadcastDecoder
from model.encoder import FrameEncoder
from model.layers import Dtype, TransformerBlock
from model.predictor import TimeSpaceTransformerBlock2
from model.slots import CoordinateEncoderStateInit, LearnedStateInit, SlotAttention


def buffer_mask(t: jnp.ndarray, memory_size: int, slice_size: int) -> jnp.ndarray:
    """(L,) bool: which buffer rows hold frames the predictor may attend to at step t."""
    frame = t - jnp.mod(t - jnp.arange(memory_size), memory_size)
    start = (t // slice_size) * slice_size if slice_size else 0
    return frame >= jnp.maximum(start, 0)


@dataclasses.dataclass(frozen=True)
class RecurrenceConfig:
    """Corrector and predictor hyperparameters, and the memory buffer."""

    num_iterations: int = 1
    corrector_qkv: int = 128
    predictor: str = "statm"  # "statm" (TimeSpaceTransformerBlock2) | "transformer" (SAVi's block)
    predictor_heads: int = 4
    predictor_qkv: int = 128
    predictor_mlp: int = 256
    memory_size: int = 0  # buffer rows L; 0: the whole clip (the original)
    slice_size: int = 0  # 0, or the original's eval_slice_size: restart the buffer every slice_size frames


class Step(nn.Module):
    """One frame: correct the predicted slots with the frame's features, store them, predict the next."""

    cfg: RecurrenceConfig
    memory_size: int  # resolved L (cfg.memory_size, or T)
    slice_size: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, carry, features):
        cfg = self.cfg
        slots, buffer, t = carry
        corrected = SlotAttention(cfg.num_iterations, cfg.corrector_qkv, dtype=self.dtype,
                                  name="SlotAttention_0")(slots, features)
        buffer = jax.lax.dynamic_update_slice_in_dim(buffer, corrected[:, None].astype(buffer.dtype),
                                                     jnp.mod(t, self.memory_size), axis=1)
        if cfg.predictor == "statm":
            predicted = TimeSpaceTransformerBlock2(cfg.predictor_heads, cfg.predictor_qkv, cfg.predictor_mlp,
                                                   self.dtype, name="TimeSpaceTransformerBlock2_0")(
                corrected, buffer, buffer_mask(t, self.memory_size, self.slice_size))
        elif cfg.predictor == "transformer":
            predicted = TransformerBlock(cfg.predictor_heads, cfg.predictor_qkv, cfg.predictor_mlp,
                                         pre_norm=False, dtype=self.dtype, name="TransformerBlock_0")(corrected)
        else:
            raise ValueError(f"predictor {cfg.predictor!r}: expected 'statm' or 'transformer'")
        return (predicted, buffer, t + 1), (corrected, predicted)


@dataclasses.dataclass(frozen=True)
class InitConfig:
    kind: str = "boxes"  # "boxes" | "center_of_mass" | "learned"
    hidden_size: int = 256


class STATMSAVi(nn.Module):
    """STATM-SAVi / STATM-SAVi++ (and SAVi / SAVi++ with predictor="transformer").

    memory_size: buffer rows L; 0 means the whole clip (the original). slice_size: 0 or the original's
    eval_slice_size, which restarts the buffer every slice_size frames. time_loop "python" unrolls the
    same step (for FLOP counting, where XLA sees a scan body once, and benchmarks). remat rematerialises the
    step in the backward pass.
    """

    encoder: FrameEncoder
    decoder: SpatialBroadcastDecoder
    num_slots: int = 11
    slot_size: int = 128
    initializer: InitConfig = InitConfig()
    recurrence: RecurrenceConfig = RecurrenceConfig()
    remat: bool = False
    time_loop: str = "scan"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, video: jnp.ndarray, boxes: jnp.ndarray | None = None, slice_size: int | None = None):
        """video (B, T, H, W, 3) in [0, 1]; boxes (B, T, K, 4), only frame 0 used -> dict of outputs."""
        b, t = video.shape[:2]
        encoder = self.encoder.clone(parent=self, name="FrameEncoder_0")
        features = encoder(video.reshape(b * t, *video.shape[2:]).astype(self.dtype))
        features = features.reshape(b, t, *features.shape[1:])
        slots = self._initial_slots(boxes, b)
        memory = self.recurrence.memory_size or t
        slice_size = self.recurrence.slice_size if slice_size is None else slice_size
        carry = (slots, jnp.zeros((b, memory, self.num_slots, self.slot_size), self.dtype), jnp.array(0, jnp.int32))
        step_cls = nn.remat(Step) if self.remat else Step
        step_args = dict(cfg=self.recurrence, memory_size=memory, slice_size=slice_size, dtype=self.dtype,
                         name="Recurrence")
        if self.time_loop == "scan":
            scan = nn.scan(step_cls, variable_broadcast="params", split_rngs={"params": False}, in_axes=1, out_axes=1)
            _, (states, states_pred) = scan(**step_args)(carry, features)
        elif self.time_loop == "python":
            step = step_cls(**step_args)
            outs = []
            for i in range(t):
                carry, out = step(carry, features[:, i])
                outs.append(out)
            states, states_pred = (jnp.stack(x, axis=1) for x in zip(*outs, strict=True))
        else:
            raise ValueError(f"time_loop {self.time_loop!r}: expected 'scan' or 'python'")
        decoder = self.decoder.clone(parent=self, name="SpatialBroadcastDecoder_0")
        decoded = decoder(states.reshape(b * t, self.num_slots, -1))
        unfold = lambda x: x.reshape(b, t, *x.shape[1:])
        return {"states": states, "states_pred": states_pred,
                **{k: unfold(v) for k, v in decoded.items()}}

    def _initial_slots(self, boxes, batch_size):
        if self.initializer.kind in ("boxes", "center_of_mass"):
            if boxes is None:
                raise ValueError(f"conditioning {self.initializer.kind!r} needs boxes")
            init = CoordinateEncoderStateInit(self.slot_size, self.initializer.hidden_size,
                                              self.initializer.kind == "center_of_mass", self.dtype,
                                              name="CoordinateEncoderStateInit_0")
            return init(boxes, batch_size)
        if self.initializer.kind == "learned":
            return LearnedStateInit(self.num_slots, self.slot_size, self.dtype, name="LearnedStateInit_0")(
                None, batch_size)
        raise ValueError(f"conditioning {self.initializer.kind!r}: expected 'boxes', 'center_of_mass' or 'learned'")
