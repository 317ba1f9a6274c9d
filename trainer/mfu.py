"""Model FLOPs utilisation: the train step's FLOPs (XLA cost analysis) against the devices' peak.

MFU = (FLOPs of one train step / number of devices) x steps per second / peak FLOP/s of one device. The FLOPs
are counted by XLA on the step with its time loop unrolled. It is reported only for devices in the peak table
(GPUs); on CPU there is no meaningful peak and no MFU is logged.
"""

from __future__ import annotations

from typing import Any

# Dense (no sparsity) peak FLOP/s per device from the vendors' data sheets: bf16 tensor cores, and TF32
# tensor cores (what XLA's default matmul precision uses for float32 on these GPUs). Matched in order
# against jax.Device.device_kind, lower-cased; more specific names first.
PEAK_FLOPS: tuple[tuple[str, dict[str, float]], ...] = (
    ("h100 pcie", {"bfloat16": 756e12, "float32": 378e12}),
    ("h800 pcie", {"bfloat16": 756e12, "float32": 378e12}),
    ("h100", {"bfloat16": 989e12, "float32": 494e12}),  # SXM / HBM3
    ("h800", {"bfloat16": 989e12, "float32": 494e12}),  # SXM; H800 differs from H100 in NVLink, not FLOPs
    ("h200", {"bfloat16": 989e12, "float32": 494e12}),  # also matches GH200
    ("a100", {"bfloat16": 312e12, "float32": 156e12}),
    ("a800", {"bfloat16": 312e12, "float32": 156e12}),
)


def peak_flops(device_kind: str, dtype: str) -> float | None:
    """Peak FLOP/s of one device of this kind at this compute dtype; None when the kind is not in the table."""
    kind = device_kind.lower()
    for name, peaks in PEAK_FLOPS:
        if name in kind:
            return peaks.get(dtype)
    return None


def lowered_flops(lowered: Any) -> float | None:
    """FLOPs of a lowered (jax.stages.Lowered) computation from XLA's HLO cost analysis; None if it gives none.
    Before SPMD partitioning this is the whole global computation."""
    try:
        analysis = lowered.cost_analysis()
    except Exception:  # not every backend implements it; MFU is then not reported
        return None
    flops = (analysis or {}).get("flops")
    return float(flops) if flops and flops > 0 else None


def step_flops(program: Any, batch_size: int, frames: int | None = None, state: Any = None) -> float | None:
    """FLOPs of one global train step of `program` (trainer/program.py) at this global batch, lowered on abstract
    inputs (never compiled or run) in its FLOP-counting form: time unrolled, since XLA's cost analysis counts a
    while-loop (scan) body once whatever its trip count. Data-parallel devices share them evenly. `state`: the
    abstract train state when the caller holds it already (tracing it again costs a trace of the model's init)."""
    step = program.train_step(for_flop_count=True)
    state = program.abstract_state() if state is None else state
    return lowered_flops(step.lower(state, program.abstract_batch(batch_size, frames)))
