"""Where the train step's time goes: the per-frame encoder and the broadcast decoder, each timed alone
(forward and backward, on the shapes the step gives them), against the whole train step; the rest is the
recurrence (slot attention and the predictor), the loss and the optimizer update. They are timed in the same
rounds as the side-by-side train steps (bench/model_speed.py).
"""

from __future__ import annotations

import statistics

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from bench import programs
from bench.report import Measure, Section
from model import build


def _part(module, params, x) -> programs.Program:
    """fwd + bwd of one submodule: the gradient of the sum of its outputs with respect to params and input."""
    def loss(p, x):
        out = module.apply({"params": p}, x)
        return sum(jnp.sum(v.astype(jnp.float32)) for v in jax.tree_util.tree_leaves(out))
    return programs.Program(jax.jit(jax.grad(loss, argnums=(0, 1))), (params, x))


def parts(c: ml_collections.ConfigDict, batch: int, frames: int, params) -> dict:
    """Builders of the encoder's and the decoder's fwd + bwd programs (with the model's `params`, a function
    that returns them), for programs.alternate."""
    model = build.build_model(c.model, c.num_slots, c.conditioning_key)
    rng = np.random.default_rng(0)

    def encoder():
        video = rng.random((batch * frames, c.data.resolution, c.data.resolution, 3), np.float32)
        return _part(model.encoder.clone(parent=None), params()["FrameEncoder_0"], jnp.asarray(video))

    def decoder():
        slots = rng.standard_normal((batch * frames, c.num_slots, c.model.slot_size)).astype(np.float32)
        return _part(model.decoder.clone(parent=None), params()["SpatialBroadcastDecoder_0"], jnp.asarray(slots))

    return {"encoder": encoder, "decoder": decoder}


def section(found: dict) -> Section:
    """found: config name -> (resolution, batch, frames, per-round seconds of "ours", "encoder", "decoder")."""
    measures, rows = [], ["| config (resolution, batch x frames) | step s | encoder fwd+bwd s | decoder fwd+bwd s | "
                          "rest s |", "|---|---|---|---|---|"]
    for name, (res, batch, frames, rounds) in found.items():
        t = {k: statistics.median(rounds[k]) for k in ("ours", "encoder", "decoder")}
        label = f"{programs.LABELS[name]} ({res}x{res}, {batch} x {frames})"
        rows.append(f"| {label} | {t['ours']:.2f} | {t['encoder']:.2f} | {t['decoder']:.2f} | "
                    f"{t['ours'] - t['encoder'] - t['decoder']:.2f} |")
        measures.append(Measure(f"{label}: decoder share of the train step", 100 * t["decoder"] / t["ours"], "%"))
        measures.append(Measure(f"{label}: encoder share of the train step", 100 * t["encoder"] / t["ours"], "%"))
    return Section("profile", "Where the train step's time goes", measures, "\n".join(rows))
