"""The training loop: one linear function in banner-commented sections (big_vision's train.py), over the run
that trainer/run.py sets up. What happens after each step, and in which order, is in one place: the end of
the loop body."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import grain
import jax
import numpy as np

from data.pipeline import datasets
from model import build, decoder
from trainer import checkpoint, evaluate, mfu, runtime, telemetry, writers
from trainer import mesh as mesh_lib
from trainer import state as state_lib
from trainer.events import EventLog
from trainer.exits import BadInput
from trainer.interval import Interval
from trainer.profiler import StepProfiler
from trainer.run import Preempted, Run, TrainingDiverged, setup
from trainer.watchdog import Watchdog

log = logging.getLogger(__name__)


class StreamChanged(BadInput):
    """The checkpoint's data position belongs to another training stream."""


def due(step: int, every: int, last: int) -> bool:
    return step % every == 0 or step == last


def stream_changed_message(directory: str, step: int, changes: dict) -> str:
    listed = "; ".join(f"{k}: {old!r} -> {new!r}" for k, (old, new) in changes.items())
    return (f"{directory} step {step} was written with another training stream ({listed}). These settings decide "
            "which example comes at which step and how it is preprocessed, so its data position does not apply. "
            "Rerun with the old values to resume; or pass --config.data.reset_position=True to keep the weights "
            "and optimizer state and start the new stream from its beginning; or use a new --workdir")


def restore_or_initialise(run: Run, train_ds: grain.MapDataset, train_it, fingerprint: dict[str, Any],
                          allow_fresh_start: bool = False) -> tuple[state_lib.TrainState, int, bool]:
    """(state, updates skipped so far, whether it was restored). The newest checkpoint that restores, with its
    data position (refused if written with other data, seed or chain); the metrics logged after it are
    dropped, so that each step has one row. Or a fresh state: config.init_from's parameters, or new ones (with
    data-dependent readout biases when config.readout_bias_init says so). Checkpoints that exist but none of
    which restores end the run (CheckpointError), unless `allow_fresh_start` sets them aside."""
    c, ckpts = run.config, run.checkpoints
    try:
        restored = ckpts.restore_newest_good(run.abstract_state, run.is_primary)
    except checkpoint.CheckpointError as e:
        if not allow_fresh_start:
            raise
        print(f"warning: {str(e).split('. Nothing was changed')[0]}. --allow_fresh_start: they are kept in "
              f"{ckpts.set_aside()} and training starts from scratch", flush=True)
        restored = None
    if restored is not None:
        step, state, data_state, meta = restored
        changes = datasets.stream_changes(meta.get("data_fingerprint", {}), fingerprint)
        if changes and not c.data.reset_position:
            raise StreamChanged(stream_changed_message(ckpts.directory, step, changes))
        if changes:
            data_state = train_it.get_state()  # the new stream's beginning
            if run.is_primary:
                print(f"warning: data.reset_position: the training stream changed ({', '.join(changes)}); keeping "
                      f"the weights and optimizer state of step {step}, the data stream starts from its beginning",
                      flush=True)
        train_it.set_state(data_state)
        run.writer.resume_at(step)
        if run.is_primary:
            print(f"resumed from step {step} (data position {data_state})", flush=True)
        return state, int(meta.get("skipped_updates", 0)), True
    if c.init_from:  # restored straight onto the devices: no fresh init is compiled only to be replaced
        params = checkpoint.restore_params(c.init_from, run.abstract_state.params, c)
    else:
        params = run.program.fresh_params()
    if not c.init_from and c.readout_bias_init == "target_mean":
        means = datasets.target_means(train_ds, run.train_schema, run.targets, c.batch_size)
        log.info("readout biases from the first %d training videos: %s", c.batch_size,
                 {k: v.round(4).tolist() for k, v in means.items()})
        params = jax.jit(lambda p: decoder.with_readout_bias(p, means, c.model.decoder.early_fusion),
                         out_shardings=run.program.replicated)(params)
    optimizer = run.program.optimizer
    state = jax.jit(lambda p: state_lib.create_train_state(p, optimizer),
                    out_shardings=run.program.replicated)(params)
    run.writer.resume_at(-1)  # a fresh start: rows left by an earlier attempt that saved nothing are dropped
    return state, 0, False


def check_finite(run: Run, step: int, finite: jax.Array, skipped: int) -> int:
    """Reads one step's `finite` flag (a host sync); returns the count of skipped updates so far. A non-finite
    step was not applied (steps.train_step); with nonfinite_updates="stop" the run ends here, before anything
    after it is saved, so retention never deletes the last good checkpoint."""
    if bool(jax.device_get(finite)):
        return skipped
    if run.config.nonfinite_updates == "skip":
        if run.is_primary:
            print(f"warning: non-finite loss or gradient at step {step}: update skipped "
                  f"({skipped + 1} so far)", flush=True)
        return skipped + 1
    run.checkpoints.wait_until_finished()  # a save in flight is of a good step: let it land first
    latest = run.checkpoints.latest_step()
    kept = (f"The newest checkpoint, step {latest}, is from before it and is kept: rerun the same command with a "
            "lower learning_rate to resume from it, or pass --config.nonfinite_updates=skip" if latest is not None
            else "No checkpoint had been written")
    raise TrainingDiverged(f"non-finite loss or gradient at step {step} (not applied); the run stopped "
                           f"before saving anything after it. {kept}. Reproduce with JAX_DEBUG_NANS=1.")


def save(run: Run, step: int, state, train_it, meta: dict, skipped: int, force: bool = False) -> bool:
    """Fencing first (process 0: the workdir lease must still be this run's), then an async save."""
    if run.lease is not None:
        run.lease.check()
    return run.checkpoints.save(step, state, train_it.get_state(), {
        **meta, "examples_seen": step * run.config.batch_size, "skipped_updates": skipped}, force=force)


def stop_for_preemption(run: Run, events: EventLog, step: int) -> None:
    """The agreed step is saved (or being saved): let it land on every process, then leave with Preempted."""
    run.checkpoints.wait_until_finished()
    events.phase("save", step=step, preemption=True)
    runtime.all_processes_reach("preemption_save_done", run.config.barrier_timeout_seconds)
    raise Preempted(step)


def evaluate_or_stop(run: Run, events: EventLog, eval_step, state, step: int, progress, watchdog: Watchdog,
                     train_it, meta: dict, skipped: int) -> dict[str, Any]:
    """An evaluation during training; a termination signal during it abandons the rest, saves `step` (unless
    saved already) and leaves with Preempted: SLURM's grace period can be shorter than a whole evaluation."""
    with watchdog.paused():
        try:
            result = evaluate.evaluate_and_log(run, eval_step, state.params, step, progress)
        except evaluate.EvaluationCut as cut:
            if run.is_primary:
                print(f"warning: {cut}; its metrics are not logged", flush=True)
            save(run, step, state, train_it, meta, skipped, force=True)
            stop_for_preemption(run, events, step)
    events.phase("eval", step=step)
    return result


def parameter_table(params) -> str:
    """clu's per-parameter table (shape, size, mean, std), as SAVi logs it at the start. The params are
    replicated: each one's first local shard is the whole array."""
    from clu import parameter_overview

    return parameter_overview.get_parameter_overview(
        jax.tree_util.tree_map(lambda x: np.asarray(x.addressable_data(0)), params), include_stats=True)


def log_train_metrics(run: Run, step: int, means: dict[str, float], progress: writers.Progress,
                      flop_share: float | None, skipped: int) -> None:
    """Writes the interval's means (trainer/interval.py) and the progress measures."""
    scalars = dict(means) | progress.measure(step)
    if run.telemetry is not None:  # every process its own: the slowest host's input bounds the step
        run.telemetry.write(telemetry.record(step, jax.process_index(), scalars["data_wait_share"],
                                             scalars["videos_per_sec"] / jax.process_count()))
    if skipped or run.config.nonfinite_updates == "skip":
        scalars["skipped_updates"] = skipped
    if flop_share:  # GPUs in the peak table, or config.peak_flops set
        scalars["mfu"] = flop_share * scalars["steps_per_sec"]
    run.writer.write_scalars(step, {f"train/{k}": v for k, v in scalars.items()})
    if run.is_primary:
        print(writers.progress_line(step, run.config.num_train_steps, scalars), flush=True)


def train_and_evaluate(config, workdir: str, events: EventLog | None = None,
                       allow_fresh_start: bool = False) -> dict[str, Any]:
    """Trains config.num_train_steps steps (resuming from WORKDIR/checkpoints), evaluating periodically.
    Returns {"initial": metrics at step 0 or None, "final": the last evaluation, "step": the last step}.
    Raises Preempted after saving the step that all processes agreed on when a SIGTERM came."""
    events = events or EventLog()
    # ------------------------------------------------------------------------ Setup
    # Config rules (before any compile), workdir, data sources, model, optimizer, checkpoints, writer.
    run = setup(config, workdir)
    events.attach(run.workdir, run.is_primary)
    events.own()
    c = run.config

    # ------------------------------------------------------------------------ Input
    train_ds = datasets.train_dataset(run.train_source, run.spec, c.seed)
    train_it = datasets.train_iterator(train_ds, c.batch_size, jax.process_index(), jax.process_count(),
                                       c.data.worker_count, c.data.read_threads, c.data.prefetch_buffer_size)
    fingerprint = datasets.data_fingerprint(run.train_source, run.spec, c.seed)  # what the data state is valid for
    # A step that does not come back within config.step_timeout_seconds ends the run (exit 76): armed by the
    # first step (compiles excluded), paused around evaluations.
    watchdog = Watchdog(c.step_timeout_seconds, jax.process_index())
    profiler = StepProfiler(run.workdir, c.profile_start_step, c.profile_num_steps, c.profile_processes,
                            jax.process_index())
    try:
        events.phase("startup")
        # -------------------------------------------------------------------- State
        state, skipped, restored = restore_or_initialise(run, train_ds, train_it, fingerprint, allow_fresh_start)
        step = int(state.step)
        events.phase("restore" if restored else "initialise", step=step)
        if run.is_primary:
            print(build.parameter_overview(state.params), flush=True)
            print(parameter_table(state.params), flush=True)
            run.writer.write_hparams({"config": c.to_json()})

        # -------------------------------------------------------------------- Steps
        train_step = run.program.train_step()
        eval_step = evaluate.make_eval_step(run)
        # MFU on GPUs in the peak table (or with config.peak_flops): FLOPs per step and device / peak, times
        # steps/s. The FLOPs are counted by lowering the step on abstract inputs, here, before the loop.
        peak = c.peak_flops or mfu.peak_flops(jax.devices()[0].device_kind, c.model.dtype)
        flop_share = None
        if peak:
            flops = mfu.step_flops(run.program, c.batch_size, state=run.abstract_state) or 0.0
            flop_share = flops / jax.device_count() / peak

        # -------------------------------------------------------------------- Loop
        meta = {"data_fingerprint": fingerprint, "config": json.loads(c.to_json())}
        first = step
        pending = None  # (step, finite flag) not read yet: read one step late, so the host does not wait on it
        progress = writers.Progress(c.num_train_steps, step, c.batch_size)
        interval = Interval()  # the logged training metrics: means over each logging interval
        initial = None
        if step == 0 and c.eval_at_start:
            initial = evaluate_or_stop(run, events, eval_step, state, 0, progress, watchdog, train_it, meta, skipped)
        final = None
        while step < c.num_train_steps:
            with profiler.step(step + 1):  # a no-op outside config.profile_start_step's window
                wait = time.perf_counter()
                local = next(train_it)
                progress.data_wait(time.perf_counter() - wait)
                batch = mesh_lib.global_batch(local, run.mesh)
                state, metrics = train_step(state, batch)
            step += 1
            profiler.after(step, (state, metrics))
            if step == first + 1:
                events.phase("first_step", step=step)  # the first batch and the compile (or a cache load)
            if pending is not None:
                skipped = check_finite(run, *pending, skipped)
            pending = (step, metrics["finite"])
            # After each step, in this order: log, checkpoint (also at a preemption sync point), evaluate.
            # A step that is logged, saved or evaluated has its finite flag read first.
            log_due, eval_due = due(step, c.log_loss_every_steps, c.num_train_steps), due(step, c.eval_every_steps,
                                                                                        c.num_train_steps)
            save_due = run.checkpoints.should_save(step)  # polled every step: the preemption sync needs it
            if log_due or eval_due or save_due:
                skipped, pending = check_finite(run, *pending, skipped), None
            interval.add(metrics)
            if log_due:
                log_train_metrics(run, step, interval.means(metrics), progress, flop_share, skipped)
            if save_due or eval_due or events.since_last() > 30:
                events.phase("train", step=step)
            if save_due:
                start = time.perf_counter()  # async: this is the blocking part (a device-to-host copy)
                save(run, step, state, train_it, meta, skipped)
                if run.checkpoints.reached_preemption(step):
                    stop_for_preemption(run, events, step)
                progress.pause(time.perf_counter() - start)
                events.phase("save", step=step)
            if eval_due:
                final = evaluate_or_stop(run, events, eval_step, state, step, progress, watchdog, train_it, meta,
                                         skipped)
            watchdog.beat(step)

        # -------------------------------------------------------------------- End
        # The run reports success only if its final checkpoint reads back (metadata, array index, data position).
        save(run, step, state, train_it, meta, skipped, force=True)
        run.checkpoints.wait_until_finished()
        run.checkpoints.verify(step, run.abstract_state, train_it.get_state())
        events.phase("save", step=step)
        if final is None:
            final = evaluate_or_stop(run, events, eval_step, state, step, progress, watchdog, train_it, meta, skipped)
        return {"initial": initial, "final": final, "step": step}
    finally:  # also on errors: finish pending async saves, stop data threads, flush logs
        watchdog.stop()
        profiler.stop()
        run.close()
        train_it.close()
