"""Compile and step time of the scanned model against the same step unrolled in a Python loop.

Real STATM-SAVi (small) architecture, 64x64, K=10 (11 slots), batch `--batch` (1 by default: one train step
at batch 8 takes ~100 s on the 2-core CPU box). Programs: train step (forward + backward of the summed
squared flow error) at T=6, and eval forward at T=6 and T=24. Each (loop, program, T) is compiled and run in
a fresh process, so compile caches do not leak between measurements.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time

# Train at T=24 is left out: at ~90 s per step on the 2-core box it would triple the run time.
PROGRAMS = (("train", 6), ("eval", 6), ("eval", 24))
TARGETS = {
    "scan eval T=24 compile <= 1.5x scan train T=6 compile": 1.5,
    "unrolled / scan compile at T=24 (eval) >= 3x": 3.0,
    "scan / unrolled step time <= 1.1x": 1.1,
}


def measure(time_loop: str, program: str, frames: int, batch: int, repeats: int) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from configs.common import model_config
    from model import build

    cfg = model_config("small")
    cfg.time_loop = time_loop
    model = build.build_model(cfg, 11)
    params = build.init_params(model, 1, 2, 64, 10)
    rng = np.random.default_rng(0)
    video = jnp.asarray(rng.random((batch, frames, 64, 64, 3), np.float32))
    boxes = jnp.asarray(rng.random((batch, frames, 10, 4), np.float32))
    target = jnp.asarray(rng.random((batch, frames, 64, 64, 3), np.float32))
    if program == "train":
        def fn(p, v, b):
            return jax.value_and_grad(lambda q: jnp.sum((model.apply({"params": q}, v, b)["flow"] - target) ** 2))(p)
    else:
        def fn(p, v, b):
            return model.apply({"params": p}, v, b)
    start = time.perf_counter()
    compiled = jax.jit(fn).lower(params, video, boxes).compile()
    compile_s = time.perf_counter() - start
    jax.block_until_ready(compiled(params, video, boxes))  # warm-up
    steps = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(compiled(params, video, boxes))
        steps.append(time.perf_counter() - start)
    return {"compile_s": compile_s, "step_s": statistics.median(steps)}


def _child(*args) -> dict:
    code = ("import json, sys; from bench import model_scan as m; "
            "print(json.dumps(m.measure(*json.loads(sys.argv[1]))))")
    r = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True,
                       cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if r.returncode:
        raise RuntimeError(f"measure{args} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def run(batch: int = 1, repeats: int = 2, log=print) -> dict:
    results = {}
    for program, frames in PROGRAMS:
        for loop in ("scan", "python"):
            results[f"{loop} {program} T={frames}"] = r = _child(loop, program, frames, batch, repeats)
            print(f"  measured {loop:6s} {program:5s} T={frames:2d}: compile {r['compile_s']:.1f} s, "
                  f"step {r['step_s']:.2f} s", file=sys.stderr)
    log(f"| STATM-SAVi small, 64x64, batch {batch} | compile s (scan) | compile s (unrolled) | step s (scan) | "
        "step s (unrolled) |")
    log("|---|---|---|---|---|")
    for program, frames in PROGRAMS:
        s, p = results[f"scan {program} T={frames}"], results[f"python {program} T={frames}"]
        log(f"| {program} T={frames} | {s['compile_s']:.1f} | {p['compile_s']:.1f} | {s['step_s']:.2f} | "
            f"{p['step_s']:.2f} |")
    checks = {
        "scan eval T=24 compile <= 1.5x scan train T=6 compile":
            results["scan eval T=24"]["compile_s"] / results["scan train T=6"]["compile_s"],
        "scan compile eval T=24 / eval T=6 (same program, 4x the frames)":
            results["scan eval T=24"]["compile_s"] / results["scan eval T=6"]["compile_s"],
        "unrolled / scan compile at T=24 (eval) >= 3x":
            results["python eval T=24"]["compile_s"] / results["scan eval T=24"]["compile_s"],
        "scan / unrolled step time <= 1.1x": max(
            results[f"scan {k}"]["step_s"] / results[f"python {k}"]["step_s"] for k in ("train T=6", "eval T=24")),
    }
    log("")
    log("| check | measured | target | |")
    log("|---|---|---|---|")
    for name, value in checks.items():
        target = TARGETS.get(name)
        ok = "" if target is None else ("met" if (value >= target if ">=" in name else value <= target) else "MISSED")
        log(f"| {name} | {value:.2f} | {target if target is not None else '-'} | {ok} |")
    results["checks"] = checks
    return results
