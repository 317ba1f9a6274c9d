"""Per-frame encoders: SAVi's small CNN, and ResNet-34 (GroupNorm, small-input stem) + Transformer for ++.

Both fold time into the batch: every norm normalises per frame, so this is exact. docs/model.md §1.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from model.layers import CNN, Dtype, PositionEmbedding, Transformer


def group_norm(name: str, dtype: Dtype, scale_init=nn.initializers.ones) -> nn.GroupNorm:
    # Named *_bn in the original (BatchNorm-era names), but GroupNorm(32), eps 1e-6, exact variance.
    return nn.GroupNorm(num_groups=32, epsilon=1e-6, use_fast_variance=False, dtype=dtype, scale_init=scale_init,
                        name=name)


class ResNetBlock(nn.Module):
    """Basic block; stride on conv1; SAME padding (for stride 2 on even inputs: (0, 1) rows/cols)."""

    features: int
    stride: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        conv = lambda f, k, s, name: nn.Conv(f, (k, k), (s, s), padding="SAME", use_bias=False,
                                             dtype=self.dtype, name=name)
        y = nn.relu(group_norm("bn1", self.dtype)(conv(self.features, 3, self.stride, "conv1")(x)))
        # The residual branch's last norm starts at scale 0, as the original's: every block starts as the identity
        # (tests/test_init.py checks the whole fresh init against the original's).
        y = group_norm("bn2", self.dtype, nn.initializers.zeros)(conv(self.features, 3, 1, "conv2")(y))
        shortcut = x
        if self.stride != 1 or x.shape[-1] != self.features:
            shortcut = group_norm("proj_bn", self.dtype)(conv(self.features, 1, self.stride, "proj_conv")(x))
        return nn.relu(y + shortcut)


class ResNetStage(nn.Module):
    features: int
    num_blocks: int
    first_stride: int
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        for b in range(self.num_blocks):
            x = ResNetBlock(self.features, self.first_stride if b == 0 else 1, self.dtype, name=f"block{b + 1}")(x)
        return x


class ResNet(nn.Module):
    """ResNet with the small-input stem: 3x3 conv + GroupNorm, no ReLU after it (an upstream quirk kept for
    fidelity), no max-pool."""

    stage_sizes: Sequence[int] = (3, 4, 6, 3)  # ResNet-34
    width: int = 64
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        x = nn.Conv(self.width, (3, 3), padding="SAME", use_bias=False, dtype=self.dtype, name="init_conv")(x)
        x = group_norm("init_bn", self.dtype)(x)
        for s, blocks in enumerate(self.stage_sizes):
            x = ResNetStage(self.width * 2**s, blocks, 2 if s else 1, self.dtype, name=f"stage{s + 1}")(x)
        return x


class FrameEncoder(nn.Module):
    """backbone -> position embedding (+ MLP) -> flatten -> [ReLU(Dense(qkv)) -> Transformer]."""

    backbone: str = "cnn"  # "cnn" | "resnet34"
    cnn_features: Sequence[int] = (32, 32, 32, 32)
    cnn_kernel_size: int = 5
    cnn_strides: Sequence[int] = (1, 1, 1, 1)
    pos_mlp_hidden: int | None = 64
    transformer_layers: int = 0  # 0: no output transform
    transformer_heads: int = 4
    transformer_qkv: int = 64
    transformer_mlp: int = 1024
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, frames: jnp.ndarray) -> jnp.ndarray:
        """(N, H, W, 3) frames in [0, 1], fed as is -> (N, tokens, features)."""
        if self.backbone == "cnn":
            n = len(self.cnn_features)
            x = CNN(self.cnn_features, self.cnn_kernel_size, self.cnn_strides, (False,) * n, dtype=self.dtype,
                    name="CNN_0")(frames)
        elif self.backbone == "resnet34":
            x = ResNet(dtype=self.dtype, name="ResNet_0")(frames)
        else:
            raise ValueError(f"encoder backbone {self.backbone!r}: expected 'cnn' or 'resnet34'")
        x = PositionEmbedding(self.pos_mlp_hidden, self.dtype, name="PositionEmbedding_0")(x)
        x = x.reshape(x.shape[0], -1, x.shape[-1])  # row-major: token = W * row + col
        if self.transformer_layers:
            if x.shape[-1] != self.transformer_qkv:  # the original projects to the Transformer's width first
                x = nn.relu(nn.Dense(self.transformer_qkv, dtype=self.dtype, name="Dense_0")(x))
            x = Transformer(self.transformer_layers, self.transformer_heads, self.transformer_qkv,
                            self.transformer_mlp, pre_norm=True, dtype=self.dtype, name="Transformer_0")(x)
        return x
