"""The capacity plan of a multi-node H800 STATM-SAVi++ batch-64 run, from measured inputs: the step's FLOPs
(bench/memory.py), the input chain's videos/s per core (bench/data_pipeline.py), the checkpoint's bytes
(bench/checkpoint_io.py) and a restart's time (bench/restart.py). The MFUs, the filesystem bandwidth and the
preemption rates are assumptions, stated in the table."""

from __future__ import annotations

from trainer import mfu

BATCH = 64
GPUS_PER_NODE = 8
MFUS = (0.30, 0.45, 0.60)
NODES = (1, 2)
FS_GB_PER_S = (1.0, 5.0)  # shared filesystem write bandwidth per job (assumed)
PREEMPTIONS_PER_DAY = (1, 6, 24)
CHECKPOINT_EVERY_STEPS = 5_000  # configs/common.py


def plan(flops: float, videos_per_core: float, state_bytes: int, restart_s: float) -> str:
    peak = mfu.peak_flops("NVIDIA H800", "bfloat16")
    rows = [f"Inputs: {flops / 1e12:.1f} TFLOP per step (XLA cost analysis), input chain {videos_per_core:.0f} "
            f"videos/s per core (measured), checkpoint {state_bytes / 1e9:.2f} GB, restart to first step "
            f"{restart_s:.0f} s (measured on this CPU; a GPU restart with a warm cache is assumed alike), H800 "
            f"bf16 dense peak {peak / 1e12:.0f} TFLOP/s.", "",
            "| nodes x 8 H800 | MFU | step time ms | videos/s per host to feed | input cores per host |",
            "|---|---|---|---|---|"]
    steps = {}
    for nodes in NODES:
        for u in MFUS:
            step_s = flops / (nodes * GPUS_PER_NODE * peak * u)
            steps[nodes, u] = step_s
            per_host = BATCH / step_s / nodes
            rows.append(f"| {nodes} | {u:.0%} | {1e3 * step_s:.1f} | {per_host:,.0f} | "
                        f"{per_host / videos_per_core:.1f} |")
    rows += ["", "| checkpoint write | seconds per save | share of 5,000 steps at 1 node, 45 % MFU |",
             "|---|---|---|"]
    interval = CHECKPOINT_EVERY_STEPS * steps[1, 0.45]
    for bw in FS_GB_PER_S:
        write = state_bytes / 1e9 / bw
        rows.append(f"| at {bw:.0f} GB/s (assumed) | {write:.2f} | {write / interval:.2%} (written in the "
                    "background; the loop blocks only for the device-to-host copy) |")
    rows += ["", "| preemptions per day | goodput, SIGTERM honoured (lose the restart) | goodput, hard kill (also "
             "redo half an interval) |", "|---|---|---|"]
    for rate in PREEMPTIONS_PER_DAY:
        graceful = 1 - rate * restart_s / 86400
        hard = 1 - rate * (restart_s + interval / 2) / 86400
        rows.append(f"| {rate} | {graceful:.2%} | {hard:.2%} |")
    rows.append(f"\nOne checkpoint interval is {interval / 60:.1f} min at 1 node, 45 % MFU.")
    return "\n".join(rows)
