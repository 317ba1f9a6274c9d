"""The original's parameter trees and checkpoints -> ours; `verify` against a reference forward pass.

    python -m model.seed_import verify REFERENCE.npz
    python -m model.seed_import convert --checkpoint CKPT --reference_config REFERENCE.npz --out DIR

The tree conversion is a pure function of flat `/`-joined paths (`convert_tree`): the recurrent modules
move under `Recurrence/`, the coordinate grids (stop-gradient "params" in the original, constants here) are
checked and dropped, and GroupNorm scales/biases stored as (1, 1, 1, C) by the original's older JAX
environment are flattened to (C,).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from model import build, slots
from model.layers import coordinate_grid

RECURRENT_PREFIXES = ("SlotAttention_0/", "TimeSpaceTransformerBlock2_0/", "TransformerBlock_0/")


class TreeMismatch(ValueError):
    """The converted tree does not fit the architecture; lists every difference."""


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
        raise TreeMismatch("\n  ".join(parts))
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


def read_original_checkpoint(path: str) -> dict[str, np.ndarray]:
    """Flat original params from a clu checkpoint's flax state file (`ckpt-N.flax`: msgpack, no TensorFlow
    needed), a msgpack params file, or a reference-style .npz with `params/` keys."""
    from flax import serialization

    if path.endswith(".npz"):
        return load_reference(path)[2]
    if os.path.isdir(path):
        candidates = sorted((f for f in os.listdir(path) if f.endswith(".flax")),
                            key=lambda f: int("".join(c for c in f if c.isdigit()) or 0))
        if not candidates:
            raise FileNotFoundError(f"{path}: no clu `ckpt-N.flax` state file in this directory")
        path = os.path.join(path, candidates[-1])
    with open(path, "rb") as f:
        state = serialization.msgpack_restore(f.read())
    # SAVi/STATM TrainState: {"optimizer": {"target": params, ...}, ...}; also accept {"params": ...} or params.
    for keys in (("optimizer", "target"), ("params",), ("target",), ()):
        node = state
        for k in keys:
            node = node.get(k) if isinstance(node, dict) else None
        if isinstance(node, dict) and any(k.startswith("FrameEncoder") for k in node):
            return {p: np.asarray(v) for p, v in flatten(node).items()}
    raise ValueError(f"{path}: no parameter tree (FrameEncoder_0/…) found under optimizer/target, params or the root")


def convert(checkpoint: str, seed_config: dict, out_dir: str, max_instances: int, log=print) -> str:
    """Writes an Orbax checkpoint of our params (+ the model config as JSON) that the trainer can load."""
    import orbax.checkpoint as ocp

    model_cfg, num_slots, conditioning_key = build.from_original(seed_config)
    expected = expected_tree(build.build_model(model_cfg, num_slots, conditioning_key), max_instances, 2, 64, 1)
    # The expected tree does not depend on resolution or T for these architectures (only the dropped grids do).
    name = seed_config.get("model", {}).get("module", "the original config")
    params = convert_tree(read_original_checkpoint(checkpoint), expected, name)
    out_dir = os.path.abspath(out_dir)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(os.path.join(out_dir, "params"), params)
    with open(os.path.join(out_dir, "model_config.json"), "w") as f:
        json.dump({"model": model_cfg.to_dict(), "num_slots": num_slots, "conditioning_key": conditioning_key},
                  f, indent=1)
    log(f"wrote {build.count_params(params):,} parameters to {out_dir}/params (Orbax) and model_config.json")
    return out_dir


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    v = sub.add_parser("verify", help="forward pass against a reference npz; exit 0 only if it matches")
    v.add_argument("reference")
    v.add_argument("--tolerance", type=float, default=2e-5)
    c = sub.add_parser("convert", help="original checkpoint -> Orbax checkpoint for the trainer")
    c.add_argument("--checkpoint", required=True, help="clu checkpoint dir / ckpt-N.flax / msgpack / npz")
    c.add_argument("--reference_config", required=True,
                   help="an npz whose meta/json holds the original config (seed_config), or that config as .json")
    c.add_argument("--out", required=True)
    a = p.parse_args(argv)
    try:
        if a.command == "verify":
            return 0 if verify(a.reference, a.tolerance) else 1
        if a.reference_config.endswith(".json"):
            with open(a.reference_config) as f:
                seed_config = json.load(f)
        else:
            seed_config = json.loads(bytes(np.load(a.reference_config)["meta/json"]))["seed_config"]
        convert(a.checkpoint, seed_config, a.out, int(seed_config["max_instances"]))
        return 0
    except (FileNotFoundError, ValueError) as e:  # TreeMismatch and UnsupportedOriginal are ValueErrors
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
