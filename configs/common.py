"""The blocks every config shares (run keys, SAVi's MOVi data defaults, model, training)."""

import ml_collections


def run_config(max_instances: int, batch_size: int, eval_batch_size: int,
               eval_slice_size: int) -> ml_collections.ConfigDict:
    """The run-level keys every config starts from, under the original's names. num_slots follows
    max_instances (K objects plus the background slot)."""
    config = ml_collections.ConfigDict()
    config.seed = 42
    config.max_instances = max_instances
    config.num_slots = config.get_ref("max_instances") + 1
    config.conditioning_key = "boxes"  # "boxes" | "center_of_mass" | "none" (learned slots)
    config.batch_size = batch_size
    config.eval_batch_size = eval_batch_size
    config.eval_slice_size = eval_slice_size  # 0: one buffer over all evaluation frames
    return config


def data_config(data_dir: str, resolution: int, depth_transform: str = "none",
                train_crop: str = "none") -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict({
        "data_dir": data_dir,  # a converted directory (python -m data.convert_tfds_to_arrayrecord / data.synthetic)
        "train_split": "train",
        "eval_split": "validation",
        "resolution": resolution,  # resize_small size; the random-resized-crop output size when train_crop is set
        "depth_transform": depth_transform,  # "none" | "log_plus"
        "train_crop": train_crop,  # "none" | "random_resized_crop" (SAVi++: min_object_covered=0.75)
        "train_frames": 6,  # strided random window
        "eval_frames": 24,  # all frames
        "fused_train_ops": True,  # train chain in one compiled pass (data/pipeline/fused.py); False: op-by-op NumPy
        "worker_count": 0,  # Grain worker processes per JAX process (0: in-process threads only)
        "read_threads": 8,
        "prefetch_buffer_size": 32,
        # Resume the weights and optimizer of a checkpoint written with another training stream (other data,
        # seed, train_frames, resolution, crop, ...) and start the data stream from its beginning, on purpose.
        # Without it such a resume is refused, naming the changed keys. Ignored when the stream is unchanged.
        "reset_position": False,
    })


def model_config(size: str = "small", predictor: str = "statm") -> ml_collections.ConfigDict:
    """The model block. size "small": the SAVi-S / STATM-SAVi architecture (CNN encoder, late fusion, flow);
    "pp": SAVi++ / STATM-SAVi++ (ResNet-34-GN + Transformer encoder, early fusion, flow + depth).
    predictor "statm": STATM's time-space block with a memory buffer; "transformer": SAVi's block."""
    if size not in ("small", "pp") or predictor not in ("statm", "transformer"):
        raise ValueError(f"model_config(size={size!r}, predictor={predictor!r})")
    pp = size == "pp"
    qkv, mlp = (256, 1024) if pp else (128, 256)
    return ml_collections.ConfigDict({
        "slot_size": 128,
        "init_hidden_size": 256,  # slot initialiser MLP
        "encoder": {
            "backbone": "resnet34" if pp else "cnn",  # "cnn" | "resnet34" (GroupNorm, small-input stem)
            "cnn_features": (32, 32, 32, 32), "cnn_kernel_size": 5, "cnn_strides": (1, 1, 1, 1),
            "pos_mlp_hidden": 64,  # MLP after the position embedding (no residual)
            "transformer_layers": 4 if pp else 0, "transformer_heads": 4, "transformer_qkv": 64,
            "transformer_mlp": 1024,
        },
        "recurrence": {
            "num_iterations": 1,  # slot-attention iterations (2 in the original statm_savi++_conditional.py)
            "corrector_qkv": qkv,
            "predictor": predictor,
            "predictor_heads": 4, "predictor_qkv": qkv, "predictor_mlp": mlp,
            "memory_size": 0,  # buffer rows; 0: the whole clip, as the original
            "slice_size": 0,  # training never slices; evaluation passes config.eval_slice_size
        },
        "decoder": {
            "targets": {"flow": 3, "depth": 1} if pp else {"flow": 3},
            "resolution": 8, "features": (64, 64, 64, 64), "kernel_size": 5,
            "strides": (2, 2, 2, 2) if pp else (2, 2, 2, 1),
            "transpose": (True, True, True, True) if pp else (True, True, True, False),
            "early_fusion": pp,
            # "lax": nn.ConvTranspose, as the original; "phases": the same layer as stride^2 ordinary convolutions
            # (same parameters, equal up to float rounding; model/layers.py: PhaseConvTranspose), which halves
            # the S train step on XLA's CPU backend. "auto": "phases" on CPU, "lax" on GPUs, where it is not yet
            # measured (model/build.py: resolve_conv_transpose; python -m bench --gpu measures it).
            "conv_transpose": "auto",
        },
        "dtype": "float32",  # compute dtype ("bfloat16" on GPUs); parameters stay float32
        "remat": False,  # rematerialise the scanned step (memory at batch 64)
        "time_loop": "scan",  # "python" unrolls the same step: the MFU FLOP count (trainer/mfu.py) and benchmarks
    })


def add_training(config: ml_collections.ConfigDict, num_train_steps: int = 100_000) -> ml_collections.ConfigDict:
    """The original's optimisation settings, under its key names."""
    config.num_train_steps = num_train_steps
    config.learning_rate = 2e-4
    config.warmup_steps = 2_500
    config.max_grad_norm = 0.05
    config.grad_accum_steps = 1  # micro-batches per step: the same result with less memory per device
    config.log_loss_every_steps = 50
    config.eval_every_steps = 1_000
    config.checkpoint_every_steps = 5_000
    config.checkpoint_keep = 3  # the newest steps kept ...
    config.checkpoint_keep_period = 0  # ... plus, for good, every step divisible by this (0: none)
    # JAX's persistent compilation cache: a restart loads the compiled steps instead of compiling them.
    config.compilation_cache = True
    config.compilation_cache_dir = ""  # "": WORKDIR/compilation_cache; on a cluster, a shared directory
    config.compilation_cache_min_seconds = 1.0  # programs that compile faster than this are not cached
    # Hang protection (multi-process runs): a process that sends no heartbeat for this long is declared dead
    # and the others end; barriers (preemption save, Orbax's commits) give up after barrier_timeout_seconds;
    # the step watchdog ends every process with exit 76 when no step completes in step_timeout_seconds
    # (0: off). The watchdog starts after the first step and pauses for evaluations, so compiles don't trip it.
    config.heartbeat_timeout_seconds = 60
    config.barrier_timeout_seconds = 300
    config.step_timeout_seconds = 600
    # One run per workdir (trainer/lease.py): process 0 holds WORKDIR/lease.json, renewed every
    # lease_timeout_seconds / 6. A lease not renewed for its holder's lease_timeout_seconds is stale and is taken
    # over (a holder on this host that no longer exists, at once). A second run waits up to lease_wait_seconds
    # for the holder to go away (a requeue that overlaps the old job's teardown), then exits 1.
    config.lease_timeout_seconds = 120
    config.lease_wait_seconds = 300
    # Attempts in a row that end with a filesystem error without saving past the step they resumed from, before
    # the run gives up (exit 78) instead of asking for another restart (exit 74).
    config.max_attempts_without_progress = 3
    # A non-finite loss or gradient: "stop" ends the run before anything after it is saved (exit 3);
    # "skip" leaves the state as it was, counts and logs the skip, and goes on.
    config.nonfinite_updates = "stop"
    config.eval_at_start = False  # evaluate the untrained model first (the demo's step-0 row)
    config.peak_flops = 0.0  # peak FLOP/s of one device for MFU; 0: from trainer/mfu.py's GPU table
    # The profiler (trainer/profiler.py): the updates that make steps profile_start_step (0: off) to
    # profile_start_step + profile_num_steps - 1 are traced into WORKDIR/profile, on process 0 ("primary") or on
    # every process ("all"). Start after the first step: its compile would fill the trace.
    config.profile_start_step = 0
    config.profile_num_steps = 3
    config.profile_processes = "primary"
    config.init_from = ""  # Orbax params from `python -m model.seed_import convert` to start from
    # "zeros" (the original) | "target_mean": each target head's bias starts at the target's per-channel mean
    # over the first training batch (data-dependent init; see model.decoder.with_readout_bias). Only for a
    # fresh start: init_from and a resumed checkpoint bring their own biases.
    config.readout_bias_init = "zeros"
    return config
