"""Device memory of the STATM-SAVi++ train step at batch 64, from XLA's memory analysis of the compiled step,
and its FLOPs from XLA's cost analysis: the inputs of the capacity plan.

Each layout compiles in a fresh process with as many (fake CPU) devices as it has, so the program is the
partitioned one each device runs. On the CPU backend the figures are an estimate of a GPU's: the same
program, but another compiler's fusion and scheduling (temporary buffers differ most).
"""

from __future__ import annotations

import itertools

from bench import child, programs
from bench.report import Measure, Section

H800_BYTES = 80e9
GLOBAL_BATCH = 64
# (devices, grad_accum_steps): 8 x 8 per device, 4 x 16, and one device in 8 micro-batches of 8.
LAYOUTS = ((8, 1), (4, 1), (1, 8))


def compiled_memory(devices: int, accum: int, dtype: str, remat: bool, resolution: int) -> dict:
    import jax

    if jax.device_count() != devices:
        raise RuntimeError(f"expected {devices} devices, got {jax.device_count()} (XLA_FLAGS)")
    c = programs.config("pp", resolution, dtype=dtype, remat=remat, conv_transpose="lax")
    c.grad_accum_steps = accum
    m = programs.train_program(c, GLOBAL_BATCH, c.data.train_frames, abstract=True).lower().compile()
    a = m.memory_analysis()
    peak = a.argument_size_in_bytes + a.output_size_in_bytes - a.alias_size_in_bytes + a.temp_size_in_bytes
    return {"argument": a.argument_size_in_bytes, "temp": a.temp_size_in_bytes, "peak": peak}


def step_flops(resolution: int) -> float:
    """FLOPs of one global batch-64 step, counted as the trainer's MFU counts them (trainer/program.py: time
    unrolled, the transposed convolutions' useful multiply-adds)."""
    c = programs.config("pp", resolution)
    return programs.step_flops(c, GLOBAL_BATCH, c.data.train_frames)


def run(quick: bool, log=print, cores: set[int] | None = None) -> tuple[Section, dict]:
    """`cores`: compile on these cores only (--quick runs this section beside the data section's pinned core)."""
    resolution = 128
    combos = ([(8, 1, "float32", True)] if quick else
              [(d, a, dt, r) for (d, a), dt, r in itertools.product(LAYOUTS, ("float32", "bfloat16"), (True, False))])
    rows = ["| devices x videos per device | compute dtype | remat | arguments GB | temporaries GB | peak GB per "
            "device | fits 80 GB |", "|---|---|---|---|---|---|---|"]
    measures, fits = [], []
    for devices, accum, dtype, remat in combos:
        log(f"  memory: {devices} devices, accumulation {accum}, {dtype}, remat {remat}: compiling")
        env = {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
        r = child.call("memory", "compiled_memory", devices, accum, dtype, remat, resolution, env=env,
                       cores=cores)
        layout = f"{devices} x {GLOBAL_BATCH // devices}" + (f" in {accum} micro-batches" if accum > 1 else "")
        fit = r["peak"] <= H800_BYTES
        rows.append(f"| {layout} | {dtype} | {'on' if remat else 'off'} | {r['argument'] / 1e9:.2f} | "
                    f"{r['temp'] / 1e9:.1f} | {r['peak'] / 1e9:.1f} | {'yes' if fit else 'no'} |")
        measures.append(Measure(f"peak memory per device, {layout}, {dtype}, remat {'on' if remat else 'off'}",
                                r["peak"] / 1e9, "GB", None, "CPU compile: an estimate"))
        if fit:
            fits.append((accum > 1, remat, dtype != "bfloat16", devices, layout, dtype, remat))
    best = min(fits) if fits else None
    note = ("No layout fits in 80 GB." if best is None else
            f"Least recompute that fits: **{best[4]}, {best[5]}, remat {'on' if best[6] else 'off'}** "
            "(preferring no micro-batches, then no remat, then bfloat16 over float32).")
    log(f"  FLOPs: lowering the unrolled batch-{GLOBAL_BATCH} step")
    flops = child.call("memory", "step_flops", resolution, env={"JAX_PLATFORMS": "cpu"}, cores=cores)
    measures.append(Measure(f"FLOPs of one batch-{GLOBAL_BATCH} STATM-SAVi++ train step", flops / 1e12, "TFLOP",
                            None, "XLA cost analysis, 128x128, 6 frames"))
    return Section("memory", "Memory of STATM-SAVi++ at batch 64", measures, "\n".join(rows) + "\n\n" + note), \
        {"flops": flops}
