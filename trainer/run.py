"""One run: everything a training or evaluation job works with, built once by `setup` and used by both modes.

The order of `setup` is the order of what can go wrong, cheapest first: the config's rules (before any data is
opened or anything compiled), the workdir, the data, then the model and its abstract state.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import socket
from collections.abc import Callable
from typing import Any

import jax
import ml_collections
import optax
from jax.sharding import Mesh, NamedSharding

from configs.validate import validate
from data import batch
from data.pipeline import datasets
from data.records.shards import VideoRecordSource
from model import build
from model.video import STATMSAVi
from trainer import checkpoint, runtime, writers
from trainer import mesh as mesh_lib
from trainer import state as state_lib
from trainer.exits import BadInput
from trainer.lease import Lease, LeaseHeld


class TrainingDiverged(RuntimeError):
    """Non-finite loss or gradient norm; the state at the last checkpoint is untouched."""


class Preempted(RuntimeError):
    """A SIGTERM (or SIGUSR1) reached every process; the agreed step is saved and the run can resume."""

    def __init__(self, step: int):
        super().__init__(f"received a termination signal: saved step {step}; rerun the same command to resume")
        self.step = step


def compilation_cache_dir(config: ml_collections.ConfigDict, workdir: str) -> str | None:
    """Where compiled steps are kept across restarts (None: off). Default WORKDIR/compilation_cache."""
    if not config.compilation_cache:
        return None
    return config.compilation_cache_dir or os.path.join(workdir, "compilation_cache")


def check_workdir(workdir: str) -> str:
    """The absolute workdir (Orbax needs absolute paths), created and probed for writing."""
    workdir = os.path.abspath(workdir)
    try:
        os.makedirs(workdir, exist_ok=True)
        # One probe per process: on a shared filesystem, processes must not delete each other's.
        probe = os.path.join(workdir, f".write_test.{socket.gethostname()}.{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise BadInput(f"workdir {workdir} is not writable ({e.strerror}); pass a writable --workdir") from None
    return workdir


def hold_workdir(config: ml_collections.ConfigDict, workdir: str, is_primary: bool) -> Lease | None:
    """Process 0 takes the workdir's lease (trainer/lease.py), waiting up to lease_wait_seconds; every process
    learns the outcome from it, so that a refused multi-process run ends with exit 1 everywhere."""
    lease = None
    if is_primary:
        try:
            lease = Lease(workdir, config.lease_timeout_seconds).acquire(config.lease_wait_seconds)
            outcome = ""
        except LeaseHeld as e:
            outcome = str(e)
        runtime.share_from_primary("workdir_lease", outcome)
    else:
        outcome = runtime.share_from_primary("workdir_lease", None, config.lease_wait_seconds + 120)
    if outcome:
        raise LeaseHeld(outcome)
    return lease


@dataclasses.dataclass
class Run:
    config: ml_collections.ConfigDict
    workdir: str
    is_primary: bool  # process 0: the only one that writes logs, metrics and pictures
    mesh: Mesh
    spec: datasets.PreprocessSpec
    train_source: VideoRecordSource | None  # None in eval mode
    eval_source: VideoRecordSource
    model: STATMSAVi
    optimizer: optax.GradientTransformation
    schedule: optax.Schedule
    init_params: Callable[[], Any]  # fresh parameters (config.seed), jitted
    abstract_state: state_lib.TrainState  # shapes, dtypes and current shardings: the restore target
    checkpoints: checkpoint.Checkpoints
    writer: writers.MultiWriter  # clu MetricWriter interface
    lease: Lease | None = None  # process 0 of a training run: the workdir's lease, checked before every save

    @property
    def replicated(self) -> NamedSharding:
        return mesh_lib.replicated(self.mesh)

    @property
    def batch_sharding(self) -> NamedSharding:
        return mesh_lib.batch_sharding(self.mesh)

    @property
    def targets(self) -> tuple[str, ...]:
        return self.spec.targets

    @property
    def train_schema(self) -> batch.Schema:
        return self.spec.train_schema

    def close(self) -> None:
        """Finishes pending async saves, flushes the logs and releases the lease, each one even when another
        fails (after an error too); then raises the first failure."""
        failures = []
        for part in (self.checkpoints.close, self.writer.close, self.lease.release if self.lease else None):
            try:
                if part is not None:
                    part()
            except Exception as e:  # a full disk, a lost mount: the first one is what the run reports
                failures.append(e)
        if failures:
            raise failures[0]


def setup(config: ml_collections.ConfigDict, workdir: str, mode: str = "train") -> Run:
    """mode "train" opens both splits and writes metrics; "eval" opens the eval split only and writes none."""
    validate(config, jax.device_count(), jax.process_count())
    workdir = check_workdir(workdir)
    cache = compilation_cache_dir(config, workdir)
    if cache:
        runtime.enable_compilation_cache(cache, config.compilation_cache_min_seconds)
    is_primary = jax.process_index() == 0
    lease = hold_workdir(config, workdir, is_primary) if mode == "train" else None
    try:
        return _build(config, workdir, mode, is_primary, lease)
    except BaseException:
        if lease is not None:
            lease.release()
        raise


def _build(config: ml_collections.ConfigDict, workdir: str, mode: str, is_primary: bool, lease: Lease | None) -> Run:
    mesh = mesh_lib.make_mesh()
    spec = datasets.spec_from_config(config)
    d = config.data
    train_source = datasets.open_split(d.data_dir, d.train_split, spec.max_instances) if mode == "train" else None
    eval_source = datasets.open_split(d.data_dir, d.eval_split, spec.max_instances)
    model = build.build_model(config.model, config.num_slots, config.conditioning_key)
    schedule = state_lib.learning_rate_schedule(config.learning_rate, config.warmup_steps, config.num_train_steps)
    optimizer = state_lib.make_optimizer(schedule, config.max_grad_norm)
    init_params = functools.partial(build.init_params, model, 1, spec.train_frames, spec.resolution,
                                    spec.max_instances, config.seed)
    abstract = state_lib.abstract_train_state(init_params, optimizer, mesh_lib.replicated(mesh))
    return Run(config=config, workdir=workdir, is_primary=is_primary, mesh=mesh, spec=spec,
               train_source=train_source, eval_source=eval_source, model=model, optimizer=optimizer,
               schedule=schedule, init_params=init_params, abstract_state=abstract,
               checkpoints=checkpoint.Checkpoints(workdir, config.checkpoint_every_steps, config.checkpoint_keep,
                                                  config.checkpoint_keep_period, config.barrier_timeout_seconds),
               writer=writers.create_writer(workdir, is_primary and mode == "train"), lease=lease)
