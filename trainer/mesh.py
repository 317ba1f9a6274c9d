"""jax.distributed, the data-parallel mesh, and the global batch built from per-process data."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

DATA_AXIS = "data"


def make_mesh() -> Mesh:
    """One data-parallel axis over every device of every process. Auto axis types: jax.make_mesh defaults
    to Explicit ones, under which plain data-parallel gradients need explicit sharding annotations."""
    return jax.make_mesh((jax.device_count(),), (DATA_AXIS,), axis_types=(AxisType.Auto,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def check_global_batch(batch_size: int, grad_accum_steps: int = 1, name: str = "batch_size") -> None:
    """Refuses, before any compile, a global batch that the devices and processes cannot split evenly."""
    devices, processes = jax.device_count(), jax.process_count()
    micro, rem = divmod(batch_size, max(grad_accum_steps, 1))
    unit = devices * max(grad_accum_steps, 1)
    if rem or micro % devices or batch_size % processes:
        valid = [unit * i for i in range(1, 5)]
        raise ValueError(
            f"{name}={batch_size} cannot be split over {devices} device(s) in {processes} process(es)"
            + (f" with grad_accum_steps={grad_accum_steps}" if grad_accum_steps > 1 else "")
            + f": it must be a multiple of {unit}; valid values include {valid}")


def global_batch(local: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's share of the batch -> global arrays sharded over the data axis."""
    sharding = batch_sharding(mesh)
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in local.items()}
