"""Every rule a config must satisfy, checked before anything is built or compiled.

`validate(config, num_devices, num_processes)` raises one ConfigError that lists each problem with the keys it
involves and the fix. The trainer (trainer/run.py: setup) and the data tools call it first; the modules below
them trust the values they are given.
"""

from __future__ import annotations

import math
import os

import ml_collections

from data.batch import TARGET_CHANNELS

# Keys whose value is one of a fixed set of strings.
CHOICES: dict[str, tuple[str, ...]] = {
    "conditioning_key": ("boxes", "center_of_mass", "none"),
    "readout_bias_init": ("zeros", "target_mean"),
    "data.train_crop": ("none", "random_resized_crop"),
    "data.depth_transform": ("none", "log_plus"),
    "model.dtype": ("float32", "bfloat16"),
    "model.time_loop": ("scan", "python"),
    "model.encoder.backbone": ("cnn", "resnet34"),
    "model.recurrence.predictor": ("statm", "transformer"),
    "model.decoder.conv_transpose": ("auto", "lax", "phases"),
    "nonfinite_updates": ("stop", "skip"),
    "profile_processes": ("primary", "all"),
}
POSITIVE = ("batch_size", "eval_batch_size", "num_train_steps", "grad_accum_steps", "log_loss_every_steps",
            "eval_every_steps", "checkpoint_every_steps", "checkpoint_keep", "max_instances", "num_slots",
            "learning_rate", "max_grad_norm", "data.resolution", "data.train_frames", "data.eval_frames",
            "model.slot_size", "model.decoder.resolution", "model.recurrence.num_iterations",
            "heartbeat_timeout_seconds", "barrier_timeout_seconds", "lease_timeout_seconds",
            "max_attempts_without_progress", "profile_num_steps")
NON_NEGATIVE = ("warmup_steps", "eval_slice_size", "peak_flops", "checkpoint_keep_period",
                "compilation_cache_min_seconds", "step_timeout_seconds", "data.worker_count",
                "model.recurrence.memory_size", "lease_wait_seconds", "profile_start_step")
# Conditioning on first-frame objects makes one slot per object plus the background slot.
CONDITIONED = ("boxes", "center_of_mass")


# Keys that hold a path: `~` and $VARS in them are expanded (bash leaves `--config.data.data_dir=~/x` alone: tilde
# expansion applies only at the start of a word or after the `=` of a variable assignment, bash(1), Tilde
# Expansion).
PATH_KEYS = ("data.data_dir", "init_from", "compilation_cache_dir")


def expand_path(path: str) -> str:
    return os.path.expanduser(os.path.expandvars(path)) if path else path


def expand_paths(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Expands `~` and environment variables in every PATH_KEYS value, in place; returns `config`."""
    for key in PATH_KEYS:
        *parents, last = key.split(".")
        node = config
        for part in parents:
            node = node[part]
        if last in node:
            node[last] = expand_path(node[last])
    return config


class ConfigError(ValueError):
    def __init__(self, problems: list[str]):
        super().__init__("bad config:\n  - " + "\n  - ".join(problems))
        self.problems = problems


def get(config: ml_collections.ConfigDict, key: str):
    for part in key.split("."):
        config = config[part]
    return config


def decoder_output_size(resolution: int, strides, transpose) -> int:
    """The broadcast decoder's output side: a transposed layer multiplies it by its stride, an ordinary
    stride-s layer (SAME padding) divides it, rounding up."""
    size = resolution
    for stride, up in zip(strides, transpose, strict=True):
        size = size * stride if up else math.ceil(size / stride)
    return size


def _choices(config) -> list[str]:
    return [f"{key}={get(config, key)!r}: expected one of {list(options)}" for key, options in CHOICES.items()
            if get(config, key) not in options]


def _signs(config) -> list[str]:
    out = [f"{key}={get(config, key)}: must be > 0" for key in POSITIVE if not get(config, key) > 0]
    return out + [f"{key}={get(config, key)}: must be >= 0" for key in NON_NEGATIVE if not get(config, key) >= 0]


def _slots(config) -> list[str]:
    k, s, cond = config.max_instances, config.num_slots, config.conditioning_key
    if cond in CONDITIONED and k > 0 and s != k + 1:
        return [f"num_slots={s} with conditioning_key={cond!r} and max_instances={k}: conditioning gives one slot "
                f"per object plus the background slot, so num_slots must be max_instances + 1 = {k + 1}. Set "
                f"--config.num_slots={k + 1}, or --config.max_instances={s - 1} to condition on {s - 1} objects, or "
                "--config.conditioning_key=none for learned slots"]
    return []


def _layers(config) -> list[str]:
    enc, dec = config.model.encoder, config.model.decoder
    out = []
    if not len(enc.cnn_features) == len(enc.cnn_strides):
        out.append(f"model.encoder.cnn_features {tuple(enc.cnn_features)} and cnn_strides {tuple(enc.cnn_strides)}: "
                   "one stride per layer")
    if not len(dec.features) == len(dec.strides) == len(dec.transpose):
        out.append(f"model.decoder.features {tuple(dec.features)}, strides {tuple(dec.strides)} and transpose "
                   f"{tuple(dec.transpose)}: one stride and one transpose flag per layer")
    return out


def _decoder_resolution(config) -> list[str]:
    dec, res = config.model.decoder, config.data.resolution
    if not len(dec.strides) == len(dec.transpose) or dec.resolution <= 0:
        return []  # reported by _layers / _signs
    size = decoder_output_size(dec.resolution, dec.strides, dec.transpose)
    if size == res:
        return []
    growth = size / dec.resolution
    hint = (f" (--config.model.decoder.resolution={res / growth:g})" if res % growth == 0 and growth >= 1 else "")
    return [f"data.resolution={res} but the decoder paints {size}x{size} frames: model.decoder.resolution="
            f"{dec.resolution} through strides {tuple(dec.strides)} (transpose {tuple(dec.transpose)}). Set "
            f"--config.data.resolution={size}, or a decoder that reaches {res}{hint}"]


def _targets(config) -> list[str]:
    out = []
    for key, channels in config.model.decoder.targets.items():
        if key not in TARGET_CHANNELS:
            out.append(f"model.decoder.targets has {key!r}, which the data does not provide: the targets are "
                       f"{dict(TARGET_CHANNELS)} (name: channels)")
        elif channels != TARGET_CHANNELS[key]:
            out.append(f"model.decoder.targets[{key!r}]={channels}: the data provides {key} with "
                       f"{TARGET_CHANNELS[key]} channel(s)")
    if not config.model.decoder.targets:
        out.append("model.decoder.targets is empty: the loss needs at least one of " + str(list(TARGET_CHANNELS)))
    return out


def _batches(config, num_devices: int, num_processes: int) -> list[str]:
    size, steps = config.batch_size, config.grad_accum_steps
    if size <= 0 or steps <= 0:
        return []  # reported by _signs
    unit = num_devices * steps
    if size % unit or size % num_processes:
        return [f"batch_size={size} cannot be split over {num_devices} device(s) in {num_processes} process(es)"
                + (f" with grad_accum_steps={steps}" if steps > 1 else "")
                + f": it must be a multiple of {unit}; valid values include {[unit * i for i in range(1, 5)]}"]
    return []


def eval_batch_size(config: ml_collections.ConfigDict, num_devices: int, num_processes: int = 1) -> int:
    """The evaluation batch actually used: eval_batch_size rounded up to a multiple of the device (and process)
    count, so that one config evaluates on 1 to 8 nodes. Rounding up never gives a device more videos than it
    had on fewer devices; the last batch is padded and its padding masked out of every metric."""
    unit = math.lcm(num_devices, num_processes)
    return -(-config.eval_batch_size // unit) * unit


def problems(config: ml_collections.ConfigDict, num_devices: int | None = 1, num_processes: int = 1) -> list[str]:
    """Every rule broken by `config`, as messages that name the keys and the fix (empty when it is valid).
    num_devices None: the rules that need no devices (trainer.main checks them before jax.distributed starts)."""
    found = _choices(config) + _signs(config) + _layers(config)
    found += _slots(config) + _decoder_resolution(config) + _targets(config)
    return found + (_batches(config, num_devices, num_processes) if num_devices is not None else [])


def validate(config: ml_collections.ConfigDict, num_devices: int | None = 1, num_processes: int = 1) -> None:
    found = problems(config, num_devices, num_processes)
    if found:
        raise ConfigError(found)
