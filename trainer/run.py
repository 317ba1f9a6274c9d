"""One run: everything a training or evaluation job works with, built once by `setup` and used by both modes.

The order of `setup` is the order of what can go wrong, cheapest first: the config's rules (before any data is
opened or anything compiled), the workdir, the data, then the model and its abstract state.
"""

from __future__ import annotations

import dataclasses
import os
import socket

import jax
import ml_collections
from jax.sharding import Mesh

from configs.validate import validate
from data import batch
from data.pipeline import datasets
from data.records.shards import VideoRecordSource
from trainer import checkpoint, runtime, writers
from trainer import mesh as mesh_lib
from trainer import program as program_lib
from trainer import state as state_lib
from trainer.exits import BadInput
from trainer.lease import Lease, LeaseHeld
from trainer.telemetry import TelemetryLog


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


def hold_workdir(config: ml_collections.ConfigDict, workdir: str, is_primary: bool) -> tuple[Lease | None, str]:
    """Process 0 takes the workdir's lease (trainer/lease.py), waiting up to lease_wait_seconds; every process
    learns the outcome from it, so that a refused multi-process run ends with exit 1 everywhere, and the tag
    that names this run's checkpoint tmp directories (checkpoint.holder_temporary_path)."""
    lease = None
    if is_primary:
        try:
            lease = Lease(workdir, config.lease_timeout_seconds).acquire(config.lease_wait_seconds)
            outcome = {"tag": lease.token[:12]}
        except LeaseHeld as e:
            outcome = {"refused": str(e)}
        runtime.share_from_primary("workdir_lease", outcome)
    else:
        outcome = runtime.share_from_primary("workdir_lease", None, config.lease_wait_seconds + 120)
    if "refused" in outcome:
        raise LeaseHeld(outcome["refused"])
    return lease, outcome["tag"]


@dataclasses.dataclass
class Run:
    config: ml_collections.ConfigDict
    workdir: str
    is_primary: bool  # process 0: the only one that writes logs, metrics and pictures
    mesh: Mesh
    spec: datasets.PreprocessSpec
    train_source: VideoRecordSource | None  # None in eval mode
    eval_source: VideoRecordSource
    program: program_lib.TrainProgram  # model, schedule, optimizer and the train step's factory
    abstract_state: state_lib.TrainState  # shapes, dtypes and current shardings: the restore target
    checkpoints: checkpoint.Checkpoints
    writer: writers.MultiWriter  # TensorBoard and metrics.jsonl on process 0 (writers.Writer)
    lease: Lease | None = None  # process 0 of a training run: the workdir's lease, checked before every save
    telemetry: TelemetryLog | None = None  # a training run, every process: its own input figures

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
        for part in (self.checkpoints.close, self.writer.close, self.telemetry.close if self.telemetry else None,
                     self.lease.release if self.lease else None):
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
    lease, tag = hold_workdir(config, workdir, is_primary) if mode == "train" else (None, "")
    try:
        return _build(config, workdir, mode, is_primary, lease, tag)
    except BaseException:
        if lease is not None:
            lease.release()
        raise


def _build(config: ml_collections.ConfigDict, workdir: str, mode: str, is_primary: bool, lease: Lease | None,
           tag: str) -> Run:
    mesh = mesh_lib.make_mesh()
    spec = datasets.spec_from_config(config)
    program = program_lib.from_config(config, mesh)
    d = config.data
    train_source = datasets.open_split(d.data_dir, d.train_split, spec.max_instances) if mode == "train" else None
    eval_source = datasets.open_split(d.data_dir, d.eval_split, spec.max_instances)
    return Run(config=config, workdir=workdir, is_primary=is_primary, mesh=mesh, spec=spec,
               train_source=train_source, eval_source=eval_source, program=program,
               abstract_state=program.abstract_state(),
               checkpoints=checkpoint.Checkpoints(workdir, config.checkpoint_every_steps, config.checkpoint_keep,
                                                  config.checkpoint_keep_period, config.barrier_timeout_seconds,
                                                  fence=lease.check if lease is not None else None, tag=tag),
               writer=writers.create_writer(workdir, is_primary and mode == "train"), lease=lease,
               telemetry=TelemetryLog(workdir, jax.process_index()) if mode == "train" else None)
