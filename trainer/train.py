"""The training loop (big_vision style: one linear function in banner-commented sections)."""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any

import jax

from data import pipeline
from model import build, decoder
from trainer import checkpoint, evaluate, mfu, steps, writers
from trainer import mesh as mesh_lib
from trainer import state as state_lib

log = logging.getLogger(__name__)
TRAIN_KEYS = ("video", "boxes", "flow", "depth")


class TrainingDiverged(RuntimeError):
    """Non-finite loss or gradient norm; the state at the last checkpoint is untouched."""


def check_workdir(workdir: str) -> str:
    workdir = os.path.abspath(workdir)
    try:
        os.makedirs(workdir, exist_ok=True)
        probe = os.path.join(workdir, ".write_test")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise OSError(f"workdir {workdir} is not writable ({e.strerror}); pass a writable --workdir") from None
    return workdir


def model_and_state_shapes(config, spec: pipeline.PreprocessSpec, mesh):
    """(model, optimizer, params init function, abstract train state with replicated shardings)."""
    model = build.build_model(config.model, config.num_slots, config.conditioning_key)
    optimizer = state_lib.make_optimizer(config.learning_rate, config.warmup_steps, config.num_train_steps,
                                         config.max_grad_norm)
    init_fn = lambda: build.init_params(model, 1, spec.train_frames, spec.resolution, spec.max_instances,  # noqa: E731
                                        config.seed)
    return model, optimizer, init_fn, state_lib.abstract_train_state(init_fn, optimizer, mesh_lib.replicated(mesh))


def train_and_evaluate(config, workdir: str) -> dict[str, Any]:
    """Trains config.num_train_steps steps (resuming from WORKDIR/checkpoints), evaluating periodically.
    Returns {"initial": metrics at step 0 or None, "final": the last evaluation}."""
    # ------------------------------------------------------------------------ Setup
    workdir = check_workdir(workdir)
    is_primary = jax.process_index() == 0
    mesh = mesh_lib.make_mesh()
    mesh_lib.check_global_batch(config.batch_size, config.grad_accum_steps)
    mesh_lib.check_global_batch(config.eval_batch_size, name="eval_batch_size")
    writer = writers.create_writer(workdir, is_primary)
    targets = tuple(sorted(config.model.decoder.targets))
    if config.readout_bias_init not in ("zeros", "target_mean"):
        raise ValueError(f"readout_bias_init {config.readout_bias_init!r}: expected 'zeros' or 'target_mean'")

    # ------------------------------------------------------------------------ Input
    spec = pipeline.spec_from_config(config)
    d = config.data
    train_src = pipeline.open_split(d.data_dir, d.train_split, spec.max_instances)
    eval_src = pipeline.open_split(d.data_dir, d.eval_split, spec.max_instances)
    train_ds = pipeline.train_dataset(train_src, spec, config.seed)
    train_it = pipeline.train_iterator(train_ds, config.batch_size, jax.process_index(), jax.process_count(),
                                       d.worker_count, d.read_threads, d.prefetch_buffer_size)
    fingerprint = pipeline.data_fingerprint(train_src, spec, config.seed)

    # ------------------------------------------------------------------------ Model and state
    model, optimizer, init_fn, abstract = model_and_state_shapes(config, spec, mesh)
    schedule = state_lib.learning_rate_schedule(config.learning_rate, config.warmup_steps, config.num_train_steps)
    replicated = mesh_lib.replicated(mesh)
    ckpts = checkpoint.Checkpoints(workdir, config.checkpoint_every_steps)
    latest = ckpts.latest_step()
    if latest is not None:
        state, data_state, meta = ckpts.restore(latest, abstract)
        if meta.get("data_fingerprint", {}).get("sha256") != fingerprint["sha256"]:
            raise ValueError(f"{ckpts.directory} step {latest} was written with other data, seed or preprocessing "
                             f"({meta.get('data_fingerprint')} vs {fingerprint}); use a new --workdir")
        train_it.set_state(data_state)
        log.info("resumed from step %d (data state %s)", latest, data_state)
    else:
        params = jax.jit(init_fn, out_shardings=replicated)()
        if config.init_from:
            params = checkpoint.restore_params(config.init_from, abstract.params)
        elif config.readout_bias_init == "target_mean":
            means = pipeline.target_means(train_ds, targets, config.batch_size)
            log.info("readout biases from the first %d training videos: %s", config.batch_size,
                     {k: v.round(4).tolist() for k, v in means.items()})
            params = jax.jit(lambda p: decoder.with_readout_bias(p, means, config.model.decoder.early_fusion),
                             out_shardings=replicated)(params)
        state = jax.jit(lambda p: state_lib.create_train_state(p, optimizer), out_shardings=replicated)(params)
    if is_primary:
        print(build.parameter_overview(state.params), flush=True)
        writer.write_hparams({"config": config.to_json()})

    # ------------------------------------------------------------------------ Steps
    batch_sharding = mesh_lib.batch_sharding(mesh)
    train_step = steps.jit_train_step(model, optimizer, targets, config.grad_accum_steps, schedule, replicated,
                                      batch_sharding)
    eval_step = steps.jit_eval_step(model, config.num_slots, config.max_instances, config.eval_slice_size,
                                    replicated, batch_sharding)

    run_eval = Evaluator(eval_step, eval_src, spec, config, mesh, writer, workdir, is_primary)
    peak = config.peak_flops or mfu.peak_flops(jax.devices()[0].device_kind, config.model.dtype)
    count_flops = None
    if peak:  # MFU on GPUs in the table (or with config.peak_flops). XLA counts a scan body once, so count the
        # same step with time unrolled and no accumulation micro-batches (the same FLOPs); only lowered, not run.
        unrolled = steps.jit_train_step(model.clone(time_loop="python"), optimizer, targets, 1, schedule, replicated,
                                        batch_sharding)
        count_flops = lambda st, b: (mfu.per_device_step_flops(unrolled, st, b) or 0.0) / peak  # noqa: E731

    # ------------------------------------------------------------------------ Loop
    try:
        return _loop(config, state, train_it, train_step, count_flops, run_eval, ckpts, writer, fingerprint,
                     is_primary, mesh)
    finally:  # also on errors: finish pending async saves, stop data threads, flush logs
        ckpts.close()
        train_it.close()
        writer.flush()


class Evaluator:
    """One evaluation pass at a given step: logs scalars and pictures, pauses the progress clock."""

    def __init__(self, eval_step, eval_src, spec, config, mesh, writer, workdir: str, is_primary: bool):
        self.eval_step, self.eval_src, self.spec, self.config = eval_step, eval_src, spec, config
        self.mesh, self.writer, self.workdir, self.is_primary = mesh, writer, workdir, is_primary

    def __call__(self, params, step: int, progress: writers.Progress | None = None) -> dict[str, float]:
        start = time.perf_counter()
        c = self.config
        result = evaluate.evaluate(params, self.eval_step, self.eval_src, self.spec, batch_size=c.eval_batch_size,
                                   mesh=self.mesh, num_slots=c.num_slots, max_instances=c.max_instances,
                                   writer=self.writer, picture_dir=os.path.join(self.workdir, "pictures"), step=step,
                                   is_primary=self.is_primary)
        self.writer.write_scalars(step, {f"eval/{k}": v for k, v in result.items()})
        if self.is_primary:
            print(f"eval step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in result.items()), flush=True)
        if progress is not None:
            progress.pause(time.perf_counter() - start)
        return result


def _loop(config, state, train_it, train_step, count_flops, run_eval, ckpts, writer, fingerprint, is_primary,
          mesh):
    step = int(state.step)
    progress = writers.Progress(config.num_train_steps, step, config.batch_size)
    initial = run_eval(state.params, 0, progress) if step == 0 and config.eval_at_start else None
    final = None
    meta = {"data_fingerprint": fingerprint, "config": json.loads(config.to_json())}
    flop_share = None  # FLOPs per step / peak FLOP/s of the devices: MFU = flop_share x steps/s
    while step < config.num_train_steps:
        wait = time.perf_counter()
        local = next(train_it)
        progress.data_wait(time.perf_counter() - wait)
        batch = mesh_lib.global_batch({k: v for k, v in local.items() if k in TRAIN_KEYS}, mesh)
        if count_flops is not None and flop_share is None:  # once, before the step donates the state
            flop_share = count_flops(state, batch)
        state, metrics = train_step(state, batch)
        step += 1
        if step % config.log_loss_every_steps == 0 or step == config.num_train_steps:
            metrics = jax.device_get(metrics)
            if not bool(metrics["finite"]):
                raise TrainingDiverged(f"non-finite loss ({metrics['loss']}) or gradient norm "
                                       f"({metrics['grad_norm']}) at step {step}; the update was skipped and nothing "
                                       "was saved. Lower learning_rate or check the data; reproduce with "
                                       "JAX_DEBUG_NANS=1.")
            scalars = {k: float(v) for k, v in metrics.items() if k != "finite"} | progress.measure(step)
            if flop_share:  # GPUs in the peak table, or config.peak_flops set
                scalars["mfu"] = flop_share * scalars["steps_per_sec"]
            writer.write_scalars(step, {f"train/{k}": v for k, v in scalars.items()})
            if is_primary:
                print(writers.progress_line(step, config.num_train_steps, scalars), flush=True)
        start = time.perf_counter()
        ckpts.save(step, state, train_it.get_state(), {**meta, "examples_seen": step * config.batch_size})
        progress.pause(time.perf_counter() - start)
        if step % config.eval_every_steps == 0 or step == config.num_train_steps:
            final = run_eval(state.params, step, progress)
    # ------------------------------------------------------------------------ End
    ckpts.save(step, state, train_it.get_state(), {**meta, "examples_seen": step * config.batch_size}, force=True)
    if final is None:
        final = run_eval(state.params, step, progress)
    return {"initial": initial, "final": final, "step": step}


def evaluate_checkpoint(config, workdir: str, step: int | None = None) -> dict[str, float]:
    """--mode eval: the latest checkpoint (or `step`) on the full validation split."""
    workdir = check_workdir(workdir)
    mesh = mesh_lib.make_mesh()
    spec = pipeline.spec_from_config(config)
    eval_src = pipeline.open_split(config.data.data_dir, config.data.eval_split, spec.max_instances)
    model, _, _, abstract = model_and_state_shapes(config, spec, mesh)
    replicated = mesh_lib.replicated(mesh)
    ckpts = checkpoint.Checkpoints(workdir, config.checkpoint_every_steps)
    step = ckpts.latest_step() if step is None else step
    if step is None or step not in ckpts.manager.all_steps():
        raise FileNotFoundError(f"no checkpoint {'' if step is None else step} in {ckpts.directory} "
                                f"(available: {ckpts.manager.all_steps()})")
    state, _, _ = ckpts.restore(step, abstract)
    eval_step = steps.jit_eval_step(model, config.num_slots, config.max_instances, config.eval_slice_size,
                                    replicated, mesh_lib.batch_sharding(mesh))
    result = evaluate.evaluate(state.params, eval_step, eval_src, spec, batch_size=config.eval_batch_size, mesh=mesh,
                               num_slots=config.num_slots, max_instances=config.max_instances,
                               picture_dir=os.path.join(workdir, "pictures_eval"), step=step,
                               is_primary=jax.process_index() == 0)
    ckpts.close()
    return {"step": step, **result}

