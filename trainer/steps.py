"""The jitted train and eval steps (pure functions of state and batch)."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import optax

from data.batch import Schema
from model import slots
from trainer import metrics
from trainer.state import TrainState


def reconstruction_loss(outputs: dict, batch: dict, targets: tuple[str, ...],
                        schema: Schema) -> tuple[jnp.ndarray, dict]:
    """Per target: the sum of squared errors over (T, H, W, C) of each video, mean over the batch; targets
    summed with weight 1 (the original's `recon` loss; lr and the 0.05 clip are tuned to this scale). Targets
    are decoded as the batch schema states (train flow arrives as uint8 colour codes, data/batch.py)."""
    losses = {}
    for key in targets:
        err = (outputs[key].astype(jnp.float32) - schema.to_float(key, batch[key])) ** 2
        losses[key] = jnp.mean(jnp.sum(err.reshape(err.shape[0], -1), axis=1))
    return sum(losses.values()), losses


def train_step(state: TrainState, batch: dict, *, model, optimizer: optax.GradientTransformation,
               targets: tuple[str, ...], schema: Schema, grad_accum_steps: int = 1,
               schedule=None) -> tuple[TrainState, dict]:
    """One update. With grad_accum_steps > 1 the batch is split into equal micro-batches whose gradients are
    averaged, which equals one step on the whole batch (the loss is a mean over videos). A non-finite loss or
    gradient is never applied: params and optimizer state stay as they were, `finite` is False in the
    metrics, and the loop stops or counts the skip (config.nonfinite_updates). The step count always
    advances, so a saved step number is always the state's own."""

    def loss_fn(params, micro):
        out = model.apply({"params": params}, micro["video"], micro["boxes"])
        total, per_target = reconstruction_loss(out, micro, targets, schema)
        return total, per_target

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    if grad_accum_steps == 1:
        (loss, per_target), grads = grad_fn(state.params, batch)
    else:
        micro = jax.tree_util.tree_map(
            lambda x: x.reshape(grad_accum_steps, x.shape[0] // grad_accum_steps, *x.shape[1:]), batch)

        def accumulate(carry, mb):
            (micro_loss, pt), g = grad_fn(state.params, mb)
            return jax.tree_util.tree_map(jnp.add, carry, (micro_loss, pt, g)), None

        zeros = jax.tree_util.tree_map(jnp.zeros_like, (jnp.zeros(()), {k: jnp.zeros(()) for k in targets},
                                                         state.params))
        (loss, per_target, grads), _ = jax.lax.scan(accumulate, zeros, micro)
        loss, per_target, grads = jax.tree_util.tree_map(lambda x: x / grad_accum_steps, (loss, per_target, grads))
    grad_norm = optax.global_norm(grads)
    # Loss and gradient only: one more reduction here (say over the updates) changes XLA's fusion of the
    # update, and with it the float rounding of every run. An update that overflows with a finite loss and
    # gradient shows as a non-finite loss one step later.
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    def keep(new, old):
        return jax.tree_util.tree_map(lambda a, b: jnp.where(finite, a, b), new, old)

    new_state = TrainState(step=state.step + 1, params=keep(params, state.params),
                           opt_state=keep(opt_state, state.opt_state))
    out = {"loss": loss, "grad_norm": grad_norm, "finite": finite,
           **{f"loss_{k}": v for k, v in per_target.items()}}
    if schedule is not None:
        out["learning_rate"] = schedule(state.step)
    return new_state, out


def eval_step(params: Any, batch: dict, *, model, num_slots: int, max_instances: int,
              slice_size: int = 0, floor: bool = False) -> dict:
    """Forward over all frames in one scan; per-video metrics and the predictions for pictures. With `floor`
    (conditioned slots: slot 0 is the background's), the floor measures of metrics.floor_alpha too."""
    out = model.apply({"params": params}, batch["video"], batch["boxes"], slice_size=slice_size)
    pred, alphas = out["segmentations"][..., 0], out["alphas"][..., 0]
    per_video = metrics.video_metrics(batch["segmentations"], pred, num_slots, max_instances, batch["padding_mask"])
    if floor:
        per_video.update(metrics.floor_alpha(alphas, batch["segmentations"], slots.background_copies(batch["boxes"]),
                                             batch["padding_mask"]))
    return {**per_video, "pred_segmentations": pred, "alphas": alphas,
            **{f"pred_{k}": out[k] for k in ("flow", "depth", "video") if k in out}}


def jit_eval_step(model, num_slots, max_instances, slice_size, params_sharding, batch_sharding, floor=False):
    fn = functools.partial(eval_step, model=model, num_slots=num_slots, max_instances=max_instances,
                           slice_size=slice_size, floor=floor)
    return jax.jit(fn, in_shardings=(params_sharding, batch_sharding))
