"""Train state, optimizer and learning-rate schedule (the original's, in optax)."""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
    step: jnp.ndarray  # int32 scalar: updates applied so far
    params: Any
    opt_state: Any


def learning_rate_schedule(learning_rate: float, warmup_steps: int, num_train_steps: int) -> optax.Schedule:
    """Linear warmup from 0, then cosine decay to 0 at num_train_steps (warmup included). optax evaluates it
    at the update count starting from 0, as the original at step - 1 with steps from 1: the first update has
    learning rate 0."""
    return optax.warmup_cosine_decay_schedule(0.0, learning_rate, warmup_steps, max(num_train_steps, warmup_steps + 1),
                                              0.0)


def make_optimizer(schedule: optax.Schedule, max_grad_norm: float) -> optax.GradientTransformation:
    """Clip the global gradient norm (of the gradients already averaged over the global batch), then Adam
    (b1 0.9, b2 0.999, eps 1e-8 outside the sqrt, no weight decay), as flax.optim.Adam in the original. The
    schedule is the caller's, built once, so that the logged and the applied learning rates are one function."""
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.adam(schedule, b1=0.9, b2=0.999, eps=1e-8))


def create_train_state(params: Any, optimizer: optax.GradientTransformation) -> TrainState:
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))


def abstract_train_state(init_fn, optimizer: optax.GradientTransformation, sharding) -> TrainState:
    """Shapes, dtypes and shardings of the state without computing it (restore target; any device count)."""
    shapes = jax.eval_shape(lambda: create_train_state(init_fn(), optimizer))
    return jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), shapes)
