"""nn.ConvTranspose ("lax") against PhaseConvTranspose ("phases") on this backend, side by side in one process.

Two figures: forward + backward of the demo decoder's two transposed layers alone, and the demo's whole train
step (configs/demo.py, batch 4 x 3 frames x 32x32) with each implementation. Rounds alternate between the
two, so the shared machine's drift hits both alike; the figure is the median round.
"""

from __future__ import annotations

import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from model.layers import PhaseConvTranspose

# The demo decoder's transposed layers over its 4 x 3 x 11 = 132 slot-frames: (input size, in channels).
DEMO_LAYERS = ((8, 64), (16, 16))


def _time(fn, *args, repeats: int = 5) -> float:
    jax.block_until_ready(fn(*args))
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn(*args)
    jax.block_until_ready(out)
    return (time.perf_counter() - start) / repeats


def _layer_fn(module, x):
    params = module.init(jax.random.key(0), x)
    grad = jax.jit(jax.grad(lambda p, x: jnp.sum(module.apply(p, x) ** 2)))
    return grad, params


def _train_step_fn(conv_transpose: str):
    from configs import demo
    from model import build
    from trainer import mesh as mesh_lib
    from trainer import state as state_lib
    from trainer import steps

    config = demo.get_config()
    config.model.decoder.conv_transpose = conv_transpose
    mesh = mesh_lib.make_mesh()
    model = build.build_model(config.model, config.num_slots, config.conditioning_key)
    opt = state_lib.make_optimizer(config.learning_rate, config.warmup_steps, config.num_train_steps,
                                   config.max_grad_norm)
    t, r, k, b = config.data.train_frames, config.data.resolution, config.max_instances, config.batch_size
    state = state_lib.create_train_state(build.init_params(model, 1, t, r, k, 0), opt)
    rng = np.random.default_rng(0)
    boxes = np.tile(np.array([0.2, 0.2, 0.6, 0.6], np.float32), (b, t, k, 1))
    batch = {"video": rng.random((b, t, r, r, 3), dtype=np.float32), "boxes": boxes}
    rep = mesh_lib.replicated(mesh)
    # Not donated: the same state is stepped in every round. The whole new state is returned, so that XLA
    # cannot drop the backward pass and the update.
    step = jax.jit(lambda s, x: steps.train_step(s, x, model=model, optimizer=opt, targets=("video",)),
                   in_shardings=(rep, mesh_lib.batch_sharding(mesh)))
    return step, state, batch


def run(rounds: int = 5, log=print) -> dict:
    results: dict[str, dict[str, float]] = {}
    cases = {}
    for size, cin in DEMO_LAYERS:
        x = jnp.ones((132, size, size, cin))
        cases[f"decoder layer {size}->{2 * size}, {cin}->16 ch (fwd+bwd)"] = {
            "lax": _layer_fn(nn.ConvTranspose(16, (4, 4), (2, 2), padding="SAME"), x) + (x,),
            "phases": _layer_fn(PhaseConvTranspose(16, 4, 2), x) + (x,)}
    cases["demo train step (batch 4 x 3 frames)"] = {impl: _train_step_fn(impl) for impl in ("lax", "phases")}
    for name, impls in cases.items():
        times = {impl: [] for impl in impls}
        for _ in range(rounds):
            for impl, (fn, *args) in impls.items():
                times[impl].append(_time(fn, *args))
        results[name] = {impl: 1e3 * statistics.median(t) for impl, t in times.items()}
    log(f"| {jax.devices()[0].platform}, median of {rounds} alternating rounds | lax ms | phases ms | lax / phases |")
    log("|---|---|---|---|")
    for name, r in results.items():
        log(f"| {name} | {r['lax']:.1f} | {r['phases']:.1f} | {r['lax'] / r['phases']:.2f}x |")
    return results
