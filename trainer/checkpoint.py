"""One Orbax CheckpointManager in WORKDIR/checkpoints: train state + data-iterator state + run metadata.

Saves are asynchronous; `save` is called every step and the manager decides (every checkpoint_every_steps,
plus the first step of a fresh run). Restores use an abstract target carrying the *current* shardings, so a
checkpoint restores onto any device count.
"""

from __future__ import annotations

import os
from typing import Any

import orbax.checkpoint as ocp


class Checkpoints:
    def __init__(self, workdir: str, every_steps: int, keep: int = 3):
        self.directory = os.path.join(os.path.abspath(workdir), "checkpoints")  # Orbax needs absolute paths
        self.manager = ocp.CheckpointManager(
            self.directory, item_names=("state", "data", "meta"),
            options=ocp.CheckpointManagerOptions(save_interval_steps=every_steps, max_to_keep=keep,
                                                 enable_async_checkpointing=True, cleanup_tmp_directories=True,
                                                 create=True))

    def save(self, step: int, state: Any, data_state: dict, meta: dict, force: bool = False) -> bool:
        if step in self.manager.all_steps():
            return False  # never the same step twice (StepAlreadyExistsError)
        return self.manager.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state), meta=ocp.args.JsonSave(meta)),
            force=force)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def restore(self, step: int, abstract_state: Any) -> tuple[Any, dict, dict]:
        r = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore(),
            meta=ocp.args.JsonRestore()))
        return r["state"], r["data"], r["meta"]

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def restore_params(directory: str, abstract_params: Any) -> Any:
    """Params written by `python -m model.seed_import convert` (DIR/params), onto the current shardings."""
    path = os.path.join(os.path.abspath(directory), "params")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"init_from={directory!r}: no Orbax params at {path} "
                                "(create it with `python -m model.seed_import convert ... --out DIR`)")
    with ocp.StandardCheckpointer() as ckptr:
        return ckptr.restore(path, abstract_params)
