"""What a config compiles into: its model, learning-rate schedule and optimizer, each built once, and the one
factory of the jitted train step. The trainer, the benchmarks, the MFU count and the tests all get their step
here, so that what is measured and tested is what trains."""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding

from data import batch as batch_lib
from model import build
from model.video import STATMSAVi
from trainer import mesh as mesh_lib
from trainer import state as state_lib
from trainer import steps


@dataclasses.dataclass(frozen=True)
class TrainProgram:
    config: ml_collections.ConfigDict
    mesh: Mesh
    model: STATMSAVi
    schedule: optax.Schedule  # the one the optimizer applies and the logs report
    optimizer: optax.GradientTransformation

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(sorted(self.config.model.decoder.targets))

    @property
    def schema(self) -> batch_lib.Schema:
        return batch_lib.train_schema(self.targets)

    @property
    def replicated(self) -> NamedSharding:
        return mesh_lib.replicated(self.mesh)

    @property
    def batch_sharding(self) -> NamedSharding:
        return mesh_lib.batch_sharding(self.mesh)

    def init_params(self, frames: int | None = None) -> Any:
        """Fresh parameters (config.seed), traceable: `fresh_params` compiles them, jax.eval_shape traces them.
        `frames` only shapes the dummy input: the parameters do not depend on it."""
        c = self.config
        return build.init_params(self.model, 1, frames or c.data.train_frames, c.data.resolution, c.max_instances,
                                 c.seed)

    def fresh_params(self, frames: int | None = None) -> Any:
        """Fresh parameters, replicated on the mesh: `init_params` jitted and compiled as the trainer does."""
        init = jax.jit(functools.partial(self.init_params, frames), out_shardings=self.replicated).lower()
        return init.compile(compiler_options=build.INIT_COMPILER_OPTIONS)()

    def abstract_state(self) -> state_lib.TrainState:
        """Shapes, dtypes and (replicated) shardings of the train state: the restore target."""
        return state_lib.abstract_train_state(self.init_params, self.optimizer, self.replicated)

    def state_bytes(self) -> int:
        """Bytes of parameters and optimizer state: what one checkpoint writes."""
        return int(sum(np.prod(x.shape) * x.dtype.itemsize for x in jax.tree_util.tree_leaves(self.abstract_state())))

    def abstract_batch(self, batch_size: int, frames: int | None = None) -> dict[str, jax.ShapeDtypeStruct]:
        """A global train batch's shapes, dtypes and sharding (data/batch.py's train schema)."""
        c = self.config
        shapes = self.schema.shapes(batch_size, frames or c.data.train_frames, c.data.resolution, c.max_instances)
        return {f.name: jax.ShapeDtypeStruct(shapes[f.name], f.dtype, sharding=self.batch_sharding)
                for f in self.schema.fields}

    def train_step(self, *, for_flop_count: bool = False):
        """The jitted train step: (state, global batch) -> (state, metrics); the state is donated.

        for_flop_count: the same step to be lowered, never run, for XLA's FLOP count: time unrolled (XLA counts a
        scanned loop's body once, whatever its trip count), transposed convolutions as ordinary ones (the useful
        multiply-adds, not a dilated form's zeros) and no gradient-accumulation scan. Same parameters and
        FLOPs per video as the step that trains (tests/test_mfu.py)."""
        model, accum = self.model, self.config.grad_accum_steps
        if for_flop_count:
            model = model.clone(time_loop="python", decoder=model.decoder.clone(conv_transpose="phases"))
            accum = 1
        fn = functools.partial(steps.train_step, model=model, optimizer=self.optimizer, targets=self.targets,
                               schema=self.schema, grad_accum_steps=accum, schedule=self.schedule)
        return jax.jit(fn, in_shardings=(self.replicated, self.batch_sharding),
                       out_shardings=(self.replicated, None), donate_argnums=(0,))


def from_config(config: ml_collections.ConfigDict, mesh: Mesh | None = None) -> TrainProgram:
    """Model, schedule and optimizer of a config (its values checked by configs/validate.py); the mesh defaults to
    every device on one data-parallel axis."""
    schedule = state_lib.learning_rate_schedule(config.learning_rate, config.warmup_steps, config.num_train_steps)
    return TrainProgram(config=config, mesh=mesh or mesh_lib.make_mesh(),
                        model=build.build_model(config.model, config.num_slots, config.conditioning_key),
                        schedule=schedule, optimizer=state_lib.make_optimizer(schedule, config.max_grad_norm))
