"""What a checkpoint save of the STATM-SAVi++ train state costs the training loop: the blocking part of the
trainer's asynchronous save (trainer/checkpoint.py) against the same save done synchronously, and the step time
of a running train step while a save is in flight against without one.

The state is the real config's shapes and dtypes (params and Adam's moments) filled with random values; its
bytes, not its values, set the cost. Every save goes to a fresh directory under --work (default: the system's
temporary directory), so the figures include the filesystem there.
"""

from __future__ import annotations

import statistics
import tempfile
import time

from bench import child, programs
from bench.report import Measure, Section


def _state(name: str):
    import jax
    import numpy as np

    abstract = programs.train_program(programs.config(name), 1, 2, abstract=True).args[0]
    rng = np.random.default_rng(0)
    return jax.tree_util.tree_map(lambda s: jax.device_put(rng.standard_normal(s.shape).astype(s.dtype)
                                                           if s.shape else np.zeros((), s.dtype)), abstract)


def save_costs(work: str, rounds: int, steps_per_round: int) -> dict:
    import jax

    from trainer.checkpoint import Checkpoints

    state = _state("pp")
    step = programs.train_program(programs.config("tiny"), 4, 6)
    step.fn = step.lower().compile()
    step.run()
    out: dict[str, list[float]] = {"async_blocking_s": [], "sync_s": [], "step_s": [], "step_in_flight_s": []}
    for _ in range(rounds):
        with tempfile.TemporaryDirectory(dir=work) as d:
            ckpt = Checkpoints(d, every_steps=1)
            start = time.perf_counter()
            ckpt.save(1, state, {}, {}, force=True)
            ckpt.wait_until_finished()
            out["sync_s"].append(time.perf_counter() - start)
            for _ in range(steps_per_round):  # steps with nothing in flight
                start = time.perf_counter()
                step.run()
                out["step_s"].append(time.perf_counter() - start)
            start = time.perf_counter()
            ckpt.save(2, state, {}, {}, force=True)
            out["async_blocking_s"].append(time.perf_counter() - start)
            for _ in range(steps_per_round):  # the same steps while the save is written
                begin = time.perf_counter()
                step.run()
                out["step_in_flight_s"].append(time.perf_counter() - begin)
            ckpt.wait_until_finished()
            ckpt.close()
    out["state_bytes"] = programs.state_bytes(programs.config("pp"))
    out["backend"] = jax.default_backend()
    return out


def run(quick: bool, work: str | None = None, log=print) -> tuple[Section, dict]:
    log("  checkpoint: the STATM-SAVi++ train state saved synchronously and asynchronously, with steps running")
    r = child.call("checkpoint_io", "save_costs", work or tempfile.gettempdir(), 2 if quick else 5, 10)
    sync, blocking = statistics.median(r["sync_s"]), statistics.median(r["async_blocking_s"])
    step, in_flight = statistics.median(r["step_s"]), statistics.median(r["step_in_flight_s"])
    gb = r["state_bytes"] / 1e9
    measures = [
        Measure("loop time blocked by an async save / a synchronous save", blocking / sync, "x", "<= 0.05",
                f"{gb:.2f} GB state: {blocking:.2f} s against {sync:.2f} s"),
        # On a CPU the step and the writer share the same cores, so the ratio measures the box, not the overlap:
        # it is reported there and judged only where the step runs on a GPU (python -m bench --gpu).
        Measure("step time while a save is in flight / without", in_flight / step, "x",
                "<= 1.1" if r["backend"] == "gpu" else None,
                f"tiny train step on {r['backend']}, {1e3 * in_flight:.1f} against {1e3 * step:.1f} ms"
                + ("" if r["backend"] == "gpu" else "; judged on a GPU only (python -m bench --gpu)")),
        Measure("synchronous save of the STATM-SAVi++ train state", gb / sync, "GB/s", None, "this machine's disk"),
    ]
    return Section("checkpoint", "Checkpoint saves", measures), {"state_bytes": r["state_bytes"],
                                                                 "write_gb_per_s": gb / sync}
