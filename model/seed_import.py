"""The original's parameter trees and checkpoints -> ours; `verify` against a reference forward pass.

    python -m model.seed_import verify REFERENCE.npz
    python -m model.seed_import convert --checkpoint CKPT_DIR --original_config statm_savi_conditional_small.py \
        --out DIR [--step N]

The model is named by the original's own config file (`--original_config PATH.py[:ARG]`), by one of ours
(`--config configs/statm_savi.py:movi_a`), or by the original's config as JSON (`--reference_config`, also a
reference .npz). The tree conversion is a pure function of flat `/`-joined paths (`convert_tree`): the recurrent
modules move under `Recurrence/`, the coordinate grids (stop-gradient "params" in the original, constants here)
are checked and dropped, and GroupNorm scales/biases stored as (1, 1, 1, C) by the original's older JAX
environment are flattened to (C,).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.util
import json
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from model import build, clu_checkpoint, slots
from model.layers import coordinate_grid

RECURRENT_PREFIXES = ("SlotAttention_0/", "TimeSpaceTransformerBlock2_0/", "TransformerBlock_0/")


class TreeMismatch(ValueError):
    """The converted tree does not fit the architecture; lists every difference."""

    def __init__(self, message: str, differences: int = 0):
        super().__init__(message)
        self.differences = differences


def flatten(tree) -> dict[str, Any]:
    return {"/".join(str(getattr(k, "key", k)) for k in path): leaf
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def unflatten(flat: dict[str, Any]) -> dict:
    tree: dict = {}
    for path, leaf in flat.items():
        node = tree
        *parents, last = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = leaf
    return tree


def convert_tree(original: dict[str, np.ndarray], expected: dict[str, tuple], config_name: str) -> dict:
    """Original flat params -> our nested params, checked against our flat {path: shape}."""
    out, grid_errors = {}, []
    for path, value in original.items():
        value = np.asarray(value)
        if path.endswith("/pos_embedding"):
            grid = np.asarray(coordinate_grid(value.shape[1], value.shape[2]))
            if value.shape != grid.shape or np.abs(value - grid).max() > 1e-6:
                grid_errors.append(f"{path}: differs from the constant coordinate grid (max "
                                   f"{np.abs(value - grid).max() if value.shape == grid.shape else 'shape'})")
            continue
        if path.startswith(RECURRENT_PREFIXES):
            path = "Recurrence/" + path
        leaf = path.rsplit("/", 1)[-1]
        if leaf in ("scale", "bias") and value.ndim == 4 and value.shape[:3] == (1, 1, 1):
            value = value.reshape(-1)  # GroupNorm (1,1,1,C) from the original's older flax
        out[path] = value
    missing = sorted(set(expected) - set(out))
    unexpected = sorted(set(out) - set(expected))
    misshaped = sorted(f"{p}: {tuple(out[p].shape)} vs {tuple(expected[p])}" for p in set(out) & set(expected)
                       if tuple(out[p].shape) != tuple(expected[p]))
    if missing or unexpected or misshaped or grid_errors:
        parts = [f"parameter tree does not match the architecture of {config_name}"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped),
                             ("bad coordinate grids", grid_errors)):
            if items:
                parts.append(f"{title} ({len(items)}): " + "; ".join(items[:40]) + (" …" if len(items) > 40 else ""))
        raise TreeMismatch("\n  ".join(parts), len(missing) + len(unexpected) + len(misshaped) + len(grid_errors))
    return unflatten({p: jnp.asarray(v, jnp.float32) for p, v in out.items()})


def load_reference(path: str) -> tuple[dict, dict, dict[str, np.ndarray]]:
    """(meta, arrays, original flat params) from a reference npz."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"reference {path} not found")
    d = np.load(path)
    arrays = {k: d[k] for k in d.files}
    meta = json.loads(bytes(arrays["meta/json"]))
    params = {k[len("params/"):]: v for k, v in arrays.items() if k.startswith("params/")}
    if not params:
        raise FileNotFoundError(
            f"{path} stores its parameters as a recipe: complete it first with "
            f"`python3 {os.path.join(os.path.dirname(path), 'regen.py')} {path} OUT.npz`, then verify OUT.npz")
    return meta, arrays, params


def model_for(seed_config: dict, max_instances: int, frames: int, resolution: int, batch: int):
    """(our model, its flat {path: shape}) for the original's config."""
    model = build.build_model(*build.from_original(seed_config))
    return model, expected_tree(model, max_instances, frames, resolution, batch)


def expected_tree(model, max_instances: int, frames: int, resolution: int, batch: int) -> dict[str, tuple]:
    shapes = jax.eval_shape(lambda: build.init_params(model, batch, frames, resolution, max_instances))
    return {p: tuple(s.shape) for p, s in flatten(shapes).items()}


def segmentation_agreement(ours_alphas, ref_alphas, ours_seg, ref_seg, boxes, margin: float = 1e-3):
    """Share of pixels with the same argmax, among pixels whose top-two alpha margin (reference) exceeds
    `margin`, counting slots conditioned on the zero box (exact copies of the background slot 0) once."""
    keep = ~slots.background_copies(boxes)  # (B, S)
    keep[:, 0] = True
    a = np.where(keep[:, None, :, None, None, None], ref_alphas, -np.inf)
    top2 = -np.sort(-a, axis=2)[:, :, :2]
    decided = (top2[:, :, 0] - top2[:, :, 1]) > margin
    same = ours_seg == ref_seg
    return float(same[decided].mean()), int(decided.sum()), int(same.size), float(same.mean())


def verify(path: str, tolerance: float = 2e-5, log=print) -> bool:
    meta, arrays, original = load_reference(path)
    video, boxes = arrays["inputs/video"], arrays["inputs/boxes"]
    model, expected = model_for(meta["seed_config"], boxes.shape[2], video.shape[1], video.shape[2], video.shape[0])
    params = convert_tree(original, expected, meta.get("seed_config_file", path))
    log(build.parameter_overview(params))
    log(f"{meta.get('seed_config_file')}: {build.count_params(params):,} trainable parameters "
        f"(original {meta.get('param_count', 0):,} including fixed coordinate grids)")
    # Full float32 matmuls for this comparison only (the references were computed so); the process-wide
    # default is left as it is.
    with jax.default_matmul_precision("highest"):
        out = jax.jit(model.apply)({"params": params}, video, boxes)
    ok = True
    pairs = [("states", "states"), ("states_pred", "states_pred"), ("alphas", "alphas")]
    pairs += [(k, k) for k in sorted(meta["seed_config"]["targets"])]
    for ours, ref in pairs:
        err = float(np.abs(np.asarray(out[ours]) - arrays[f"outputs/{ref}"]).max())
        ok &= err <= tolerance
        log(f"max |error| {ref:12s} {err:.2e}  {'ok' if err <= tolerance else f'> {tolerance:.0e} FAIL'}")
    agree, decided, total, overall = segmentation_agreement(np.asarray(out["alphas"]), arrays["outputs/alphas"],
                                                            np.asarray(out["segmentations"]),
                                                            arrays["outputs/segmentations"], boxes)
    ok &= agree == 1.0
    log(f"segmentations: {agree:.2%} agree on {decided:,} of {total:,} pixels with top-two margin > 1e-3 "
        f"({overall:.4%} of all pixels) {'ok' if agree == 1.0 else 'FAIL'}")
    log("PASS" if ok else "FAIL")
    return ok


# ---------------------------------------------------------------------------------------------------------
# Published checkpoints
# ---------------------------------------------------------------------------------------------------------
# Our configs that reproduce the original's (their docstrings say which): the trees a mismatch is compared with.
KNOWN_CONFIGS = ("statm_savi.py:movi_a", "statm_savi_pp.py:movi_a", "statm_savi_pp.py:movi_e", "savi.py:movi_a",
                 "savi_pp.py:movi_e")
CONFIGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")


@dataclasses.dataclass(frozen=True)
class Target:
    """The architecture the weights are converted for, and where that was read."""
    model: Any  # our config.model block
    num_slots: int
    conditioning_key: str
    max_instances: int
    source: str


def load_config_file(spec: str):
    """`PATH.py[:ARG]` -> get_config(ARG) (or get_config()), as ml_collections' config_flags loads a config."""
    path, _, arg = spec.partition(":")
    if not path.endswith(".py") or not os.path.isfile(path):
        raise FileNotFoundError(f"{spec}: expected a Python config file PATH.py[:ARG] with get_config()")
    spec_ = importlib.util.spec_from_file_location(f"_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec_)
    try:
        spec_.loader.exec_module(module)
        return module.get_config(arg) if arg else module.get_config()
    except Exception as e:
        raise ValueError(f"{spec}: loading the config failed ({type(e).__name__}: {e})") from None


def target_of_original(seed_config: dict, source: str) -> Target:
    model, num_slots, key = build.from_original(seed_config)
    return Target(model, num_slots, key, int(seed_config["max_instances"]), source)


def target_of_ours(spec: str) -> Target:
    c = load_config_file(spec)
    return Target(c.model, int(c.num_slots), c.conditioning_key, int(c.max_instances), spec)


def target_from_args(a: argparse.Namespace) -> Target:
    if a.original_config:
        cfg = load_config_file(a.original_config)
        return target_of_original(json.loads(json.dumps(cfg.to_dict(), default=list)), a.original_config)
    if a.config:
        return target_of_ours(a.config)
    if a.reference_config.endswith(".json"):
        with open(a.reference_config) as f:
            return target_of_original(json.load(f), a.reference_config)
    meta = json.loads(bytes(np.load(a.reference_config)["meta/json"]))
    return target_of_original(meta["seed_config"], meta.get("seed_config_file", a.reference_config))


def _expected(target: Target) -> dict[str, tuple]:
    # The expected tree does not depend on resolution or T for these architectures (only the dropped grids do).
    model = build.build_model(target.model, target.num_slots, target.conditioning_key)
    return expected_tree(model, target.max_instances, 2, 64, 1)


def closest_known(original: dict[str, np.ndarray]) -> str:
    """Which of KNOWN_CONFIGS the weights are nearest to, with its differences."""
    scored = []
    for name in KNOWN_CONFIGS:
        try:
            convert_tree(original, _expected(target_of_ours(os.path.join(CONFIGS_DIR, name))), f"configs/{name}")
            return f"they match configs/{name}: pass --config configs/{name}"
        except TreeMismatch as e:
            scored.append((e.differences, name, str(e)))
    differences, name, text = min(scored)
    return (f"the closest known config is configs/{name}, with {differences} difference{'s' * (differences != 1)}: "
            + text.split("\n", 1)[-1].strip())


def convert(checkpoint: str, target: Target, out_dir: str, step: int | None = None, log=print) -> str:
    """Writes an Orbax checkpoint of our params, and model_config.json (the architecture, and the weights'
    origin) that the trainer checks before it loads them."""
    import orbax.checkpoint as ocp

    if checkpoint.endswith(".npz"):
        file, stored_step, flat = os.path.abspath(checkpoint), None, load_reference(checkpoint)[2]
    else:
        original = clu_checkpoint.load(checkpoint, step)
        file, stored_step, flat = original.file, original.step, flatten(original.params)
    log(f"reading {file} " + ("(no step stored)" if stored_step is None else f"(the original's step {stored_step})"))
    try:
        params = convert_tree(flat, _expected(target), target.source)
    except TreeMismatch as e:
        raise TreeMismatch(f"{file}: {e}\n  {closest_known(flat)}") from None
    out_dir = os.path.abspath(out_dir)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(os.path.join(out_dir, "params"), params)
    origin = {"checkpoint": os.path.abspath(file), "step": stored_step, "config": target.source,
              "converted": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")}
    with open(os.path.join(out_dir, "model_config.json"), "w") as f:
        json.dump({"model": target.model.to_dict(), "num_slots": target.num_slots,
                   "conditioning_key": target.conditioning_key, "origin": origin}, f, indent=1)
    log(f"wrote {build.count_params(params):,} parameters to {out_dir}/params (Orbax) and model_config.json")
    return out_dir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="forward pass against a reference npz; exit 0 only if it matches")
    v.add_argument("reference")
    v.add_argument("--tolerance", type=float, default=2e-5)
    c = sub.add_parser("convert", help="the original's checkpoint -> an Orbax checkpoint for the trainer")
    c.add_argument("--checkpoint", required=True,
                   help="the original's checkpoints-0/ directory, its workdir, one ckpt-N.flax, or a reference .npz")
    c.add_argument("--step", type=int, help="the checkpoint whose stored training step is N (default: the newest)")
    which = c.add_mutually_exclusive_group(required=True)
    which.add_argument("--original_config", help="the original's config file PATH.py[:ARG] the weights were "
                       "trained with, e.g. statm/configs/movi/statm_savi_conditional_small.py")
    which.add_argument("--config", help="our config of the same model, e.g. configs/statm_savi_pp.py:movi_e")
    which.add_argument("--reference_config", help="the original's config as JSON, or a reference .npz")
    c.add_argument("--out", required=True)
    a = p.parse_args(argv)
    try:
        if a.command == "verify":
            return 0 if verify(a.reference, a.tolerance) else 1
        convert(a.checkpoint, target_from_args(a), a.out, a.step)
        return 0
    except (FileNotFoundError, ValueError) as e:  # TreeMismatch, NotACheckpoint, UnsupportedOriginal: ValueErrors
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
