"""python -m bench --gpu: STATM-SAVi and STATM-SAVi++ train steps at batch 64 per process on the machine's
accelerators: step time, videos/s and MFU, for float32 against bfloat16, remat on against off, the scan against
the unrolled loop, and conv_transpose lax against phases. Every row names the device model.

Variants that run out of device memory are reported as such, not left out. On a CPU it runs the same code at
--quick size, for checking the path, and says that its figures are not a GPU's.
"""

from __future__ import annotations

from bench import programs
from bench.report import Measure, Section
from trainer import mfu

BASE = {"s": {"dtype": "bfloat16", "remat": False, "conv_transpose": "lax", "time_loop": "scan"},
        "pp": {"dtype": "bfloat16", "remat": True, "conv_transpose": "lax", "time_loop": "scan"}}
VARIANTS = (("dtype", "float32"), ("remat", None), ("time_loop", "python"), ("conv_transpose", "phases"))


def variants(name: str) -> list[dict]:
    base = BASE[name]
    out = [dict(base)]
    for key, value in VARIANTS:
        v = dict(base)
        v[key] = (not base[key]) if value is None else value
        out.append(v)
    return out


def time_step(name: str, model: dict, batch: int, frames: int, resolution: int | None, repeats: int) -> dict:
    import jax

    c = programs.config(name, resolution, **model)
    try:
        p = programs.train_program(c, batch, frames)
        flops = programs.step_flops(c, batch, frames)
        _, step = p.compile_and_time(repeats)
    except Exception as e:  # noqa: BLE001 (out of memory and the like: one row that says so)
        return {"error": f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"}
    peak = mfu.peak_flops(jax.devices()[0].device_kind, model["dtype"])
    return {"step_s": step, "videos_per_s": batch / step, "device": jax.devices()[0].device_kind,
            "mfu": flops / jax.device_count() / step / peak if peak and flops else None}


def run(quick: bool, log=print) -> Section:
    import jax

    on_gpu = jax.default_backend() == "gpu"
    size = {"batch": 64 * jax.local_device_count(), "frames": 6, "resolution": None, "repeats": 10}
    if quick or not on_gpu:
        size = {"batch": 1, "frames": 2, "resolution": 32, "repeats": 2}
    measures, rows = [], ["| model | dtype | remat | time loop | conv_transpose | device | step ms | videos/s | MFU |",
                          "|---|---|---|---|---|---|---|---|---|"]
    for name in ("s", "pp"):
        for model in variants(name):
            log(f"  gpu: {name} {model}")
            r = time_step(name, model, **size)
            label = (f"{programs.LABELS[name]}, {model['dtype']}, remat {'on' if model['remat'] else 'off'}, "
                     f"{model['time_loop']}, {model['conv_transpose']}")
            if "error" in r:
                rows.append(f"| {label} | | | | | | {r['error']} | | |")
                measures.append(Measure(f"step time, {label}", None, "ms", None, r["error"]))
                continue
            m = r["mfu"]
            rows.append(f"| {programs.LABELS[name]} | {model['dtype']} | {model['remat']} | {model['time_loop']} | "
                        f"{model['conv_transpose']} | {r['device']} | {1e3 * r['step_s']:.1f} | "
                        f"{r['videos_per_s']:.1f} | {'-' if m is None else f'{m:.1%}'} |")
            measures.append(Measure(f"step time, {label}", 1e3 * r["step_s"], "ms", None, r["device"]))
    note = "" if on_gpu else ("\nNo GPU on this machine: these rows are the CPU at a reduced size (batch 1, 2 frames, "
                              "32x32), a check that the path runs, not GPU figures.")
    return Section("gpu", "GPU", measures, "\n".join(rows) + note)
