"""The programs the benchmarks time: the trainer's own train and eval steps on synthetic batches of the schema's
shapes, for the real configs or the same architectures shrunk (fewer frames, smaller batch, lower resolution).

Nothing here reads data: a batch is random values of the shapes and dtypes that data/batch.py states, so the
compiled program is exactly the one the trainer runs for that config.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from configs import statm_savi, statm_savi_pp, tiny
from data import batch as batch_lib
from model import build
from trainer import mesh as mesh_lib
from trainer import mfu, program
from trainer import state as state_lib

CONFIGS = {"s": lambda: statm_savi.get_config("movi_a"), "pp": lambda: statm_savi_pp.get_config("movi_e"),
           "tiny": tiny.get_config}
LABELS = {"s": "STATM-SAVi (S)", "pp": "STATM-SAVi++", "tiny": "tiny (tests' config)"}
# The original as our model runs it: the same step unrolled over time in Python, with XLA's transposed
# convolution (the original's `nn.ConvTranspose`). Numerically the same model (tests/test_model.py).
ORIGINAL = {"time_loop": "python", "conv_transpose": "lax"}


def config(name: str, resolution: int | None = None, **model: Any) -> ml_collections.ConfigDict:
    """A real config ("s" or "pp"), optionally at a lower resolution (the decoder's first grid shrinks with it,
    so the output still matches) and with model keys overridden."""
    c = CONFIGS[name]()
    if resolution and resolution != c.data.resolution:
        scale = c.data.resolution // resolution
        if c.data.resolution % resolution or c.model.decoder.resolution % scale:
            raise ValueError(f"{name}: resolution {resolution} does not divide {c.data.resolution}")
        c.data.resolution = resolution
        c.model.decoder.resolution //= scale
    for key, value in model.items():  # conv_transpose lives in the decoder block, the rest at the top
        (c.model.decoder if key == "conv_transpose" else c.model)[key] = value
    return c


@dataclasses.dataclass
class Program:
    """A jitted step with its arguments: `run()` executes it once and waits for the result."""

    fn: Any
    args: tuple
    donate: bool = False

    def lower(self):
        return self.fn.lower(*self.args)

    def compile_and_time(self, repeats: int) -> tuple[float, float]:
        """Compiles (timed), runs once to warm up, then returns (compile seconds, median step seconds)."""
        start = time.perf_counter()
        self.fn = self.lower().compile()
        compile_s = time.perf_counter() - start
        self.run()
        steps = []
        for _ in range(repeats):
            start = time.perf_counter()
            self.run()
            steps.append(time.perf_counter() - start)
        return compile_s, statistics.median(steps)

    def run(self) -> None:
        out = self.fn(*self.args)
        if self.donate:  # the train step donates its state: carry the new one to the next call
            self.args = (out[0], *self.args[1:])
        jax.block_until_ready(out)


def _targets(c: ml_collections.ConfigDict) -> tuple[str, ...]:
    return tuple(sorted(c.model.decoder.targets))


def train_batch(c: ml_collections.ConfigDict, batch_size: int, frames: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random values of the train schema's shapes and dtypes."""
    schema = batch_lib.train_schema(_targets(c))
    rng = np.random.default_rng(seed)
    shapes = schema.shapes(batch_size, frames, c.data.resolution, c.max_instances)
    out = {}
    for f in schema.fields:
        if f.dtype == "uint8":
            out[f.name] = rng.integers(0, 256, shapes[f.name], dtype=np.uint8)
        else:
            out[f.name] = rng.random(shapes[f.name], dtype=np.float32)
    return out


def fresh_params(c: ml_collections.ConfigDict, frames: int) -> dict:
    """A config's initial parameters, as the trainer makes them (config.seed)."""
    return program.from_config(c).fresh_params(frames)


def train_program(c: ml_collections.ConfigDict, batch_size: int, frames: int, abstract: bool = False,
                  mesh=None, params: Any = None) -> Program:
    """The trainer's jitted train step (trainer/program.py) with a fresh state and a random batch.
    abstract=True: shapes only (for lowering and memory analysis, nothing is computed). params: start from
    these (programs of one architecture share one init) instead of initialising."""
    p = program.from_config(c, mesh)
    if abstract:
        return Program(p.train_step(), (p.abstract_state(), p.abstract_batch(batch_size, frames)), donate=True)
    # A shared init is copied: the step donates its state, and would delete the others' arrays.
    own = p.fresh_params(frames) if params is None else jax.tree_util.tree_map(jnp.array, params)
    state = jax.device_put(state_lib.create_train_state(own, p.optimizer), p.replicated)
    batch = mesh_lib.global_batch(train_batch(c, batch_size, frames), p.mesh)
    return Program(p.train_step(), (state, batch), donate=True)


def step_flops(c: ml_collections.ConfigDict, batch_size: int, frames: int) -> float | None:
    """FLOPs of one global train step, counted as the trainer's MFU counts them (trainer/mfu.py)."""
    return mfu.step_flops(program.from_config(c), batch_size, frames)


def eval_program(c: ml_collections.ConfigDict, batch_size: int, frames: int, slice_size: int) -> Program:
    """The model's evaluation forward over all `frames` (metrics left out: they are the same for both buffers)."""
    model = build.build_model(c.model, c.num_slots, c.conditioning_key)
    params = fresh_params(c, frames)
    rng = np.random.default_rng(0)
    video = jnp.asarray(rng.random((batch_size, frames, c.data.resolution, c.data.resolution, 3), np.float32))
    boxes = jnp.asarray(rng.random((batch_size, frames, c.max_instances, 4), np.float32))
    fn = jax.jit(lambda p, v, b: model.apply({"params": p}, v, b, slice_size=slice_size)["segmentations"])
    return Program(fn, (params, video, boxes))


def state_bytes(c: ml_collections.ConfigDict) -> int:
    """Bytes of the train state (params and Adam's moments) of a config: what one checkpoint holds."""
    return program.from_config(c).state_bytes()


def alternate(builders: dict, rounds: int) -> dict[str, list[float]]:
    """Compile every program, run each once, then time them in turn for `rounds` rounds."""
    progs = {}
    for name, make in builders.items():
        p = make()
        p.fn = p.lower().compile()
        p.run()
        progs[name] = p
    times: dict[str, list[float]] = {k: [] for k in progs}
    for _ in range(rounds):
        for name, p in progs.items():
            start = time.perf_counter()
            p.run()
            times[name].append(time.perf_counter() - start)
    return times
