"""Config -> model, for our ml_collections configs and for the original's module JSON (`seed_config`)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from model.decoder import SpatialBroadcastDecoder
from model.encoder import FrameEncoder
from model.video import InitConfig, RecurrenceConfig, STATMSAVi

CONDITIONING = {"boxes": "boxes", "center_of_mass": "center_of_mass", "none": "learned"}
DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def _tuples(d: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(tuple(x) if isinstance(x, list | tuple) else x for x in v) if isinstance(v, list | tuple)
            else v for k, v in d.items()}


def build_model(model: ml_collections.ConfigDict, num_slots: int, conditioning_key: str = "boxes") -> STATMSAVi:
    """`config.model` (see configs/common.py: model_config), `config.num_slots`, `config.conditioning_key`."""
    if conditioning_key not in CONDITIONING:
        raise ValueError(f"conditioning_key={conditioning_key!r}: expected one of {sorted(CONDITIONING)}")
    if model.dtype not in DTYPES:
        raise ValueError(f"model.dtype={model.dtype!r}: expected one of {sorted(DTYPES)}")
    dtype = DTYPES[model.dtype]
    m = model.to_dict()
    decoder = _tuples(m["decoder"])
    decoder["targets"] = tuple(sorted((str(k), int(v)) for k, v in m["decoder"]["targets"].items()))
    return STATMSAVi(
        encoder=FrameEncoder(**_tuples(m["encoder"]), dtype=dtype, parent=None),
        decoder=SpatialBroadcastDecoder(**decoder, dtype=dtype, parent=None),
        num_slots=num_slots, slot_size=m["slot_size"],
        initializer=InitConfig(CONDITIONING[conditioning_key], m["init_hidden_size"]),
        recurrence=RecurrenceConfig(**m["recurrence"]),
        remat=m["remat"], time_loop=m.get("time_loop", "scan"), dtype=dtype)


def default_model_config() -> ml_collections.ConfigDict:
    """STATM-SAVi (small) as in statm_savi_conditional_small.py; other configs override parts."""
    return ml_collections.ConfigDict({
        "slot_size": 128,
        "init_hidden_size": 256,
        "encoder": dict(backbone="cnn", cnn_features=[32, 32, 32, 32], cnn_kernel_size=5, cnn_strides=[1, 1, 1, 1],
                        pos_mlp_hidden=64, transformer_layers=0, transformer_heads=4, transformer_qkv=64,
                        transformer_mlp=1024),
        "recurrence": dataclasses.asdict(RecurrenceConfig()),
        "decoder": dict(targets={"flow": 3}, resolution=8, features=[64, 64, 64, 64], kernel_size=5,
                        strides=[2, 2, 2, 1], transpose=[True, True, True, False], early_fusion=False),
        "dtype": "float32",  # compute dtype; parameters stay float32
        "remat": False,  # rematerialise the scanned step (memory at batch 64)
        "time_loop": "scan",  # "python" unrolls the same step (benchmarks only)
    })


def pp_model_config() -> ml_collections.ConfigDict:
    """STATM-SAVi++: ResNet-34-GN + Transformer encoder, qkv 256 / mlp 1024, early fusion, flow + depth."""
    m = default_model_config()
    m.encoder.update(backbone="resnet34", transformer_layers=4)
    m.recurrence.update(corrector_qkv=256, predictor_qkv=256, predictor_mlp=1024)
    m.decoder.update(targets={"flow": 3, "depth": 1}, strides=[2, 2, 2, 2], transpose=[True] * 4, early_fusion=True)
    return m


class UnsupportedOriginal(ValueError):
    pass


def from_original(seed_config: dict[str, Any]) -> tuple[ml_collections.ConfigDict, int, str]:
    """The original's config JSON (its `model` module tree) -> (config.model, num_slots, conditioning_key)."""
    model = seed_config["model"]
    name = lambda d: d["module"].rsplit(".", 1)[-1]  # noqa: E731
    m = default_model_config()
    if name(model) not in ("STATMSAVi", "SAVi") or model.get("decode_predicted") or not model.get(
            "decode_corrected", True):
        raise UnsupportedOriginal(f"model {name(model)} with decode_predicted={model.get('decode_predicted')}")
    enc = model["encoder"]
    backbone = enc["backbone"]
    if name(backbone) == "CNN":
        m.encoder.update(backbone="cnn", cnn_features=list(backbone["features"]),
                         cnn_kernel_size=backbone["kernel_size"][0][0], cnn_strides=[s[0] for s in backbone["strides"]])
    elif name(backbone) == "ResNet34" and backbone.get("norm_type") == "group" and backbone.get("small_inputs"):
        m.encoder.backbone = "resnet34"
    else:
        raise UnsupportedOriginal(f"encoder backbone {backbone}")
    out_t = enc.get("pos_emb", {}).get("output_transform")
    m.encoder.pos_mlp_hidden = out_t["hidden_size"] if out_t else None
    transformer = enc.get("output_transform")
    if transformer:
        m.encoder.update(transformer_layers=transformer["num_layers"], transformer_heads=transformer["num_heads"],
                         transformer_qkv=transformer["qkv_size"], transformer_mlp=transformer["mlp_size"])
    init = model["initializer"]
    if name(init) == "CoordinateEncoderStateInit":
        conditioning = "center_of_mass" if init.get("center_of_mass") else "boxes"
        m.init_hidden_size = init["embedding_transform"]["hidden_size"]
        m.slot_size = init["embedding_transform"]["output_size"]
    else:
        raise UnsupportedOriginal(f"initializer {name(init)}")
    corr, pred = model["corrector"], model["predictor"]
    predictor = {"TimeSpaceTransformerBlock2": "statm", "TransformerBlock": "transformer"}.get(name(pred))
    if predictor is None or pred.get("pre_norm"):
        raise UnsupportedOriginal(f"predictor {pred}")
    m.recurrence.update(num_iterations=corr.get("num_iterations", 1), corrector_qkv=corr.get("qkv_size") or m.slot_size,
                        predictor=predictor, predictor_heads=pred["num_heads"], predictor_qkv=pred["qkv_size"],
                        predictor_mlp=pred["mlp_size"], slice_size=0)
    dec = model["decoder"]
    db = dec["backbone"]
    m.decoder.update(resolution=dec["resolution"][0], features=list(db["features"]),
                     kernel_size=db["kernel_size"][0][0], strides=[s[0] for s in db["strides"]],
                     transpose=list(db["layer_transpose"]),
                     early_fusion=bool(dec.get("early_fusion", False)),
                     targets={k: int(v) for k, v in seed_config["targets"].items()})
    return m, int(seed_config["num_slots"]), conditioning


def init_params(model: STATMSAVi, batch: int, frames: int, resolution: int, max_instances: int,
                seed: int = 0) -> dict:
    video = jnp.zeros((batch, frames, resolution, resolution, 3), jnp.float32)
    boxes = jnp.zeros((batch, frames, max_instances, 4), jnp.float32)
    # Jitted: an eager init dispatches op by op and takes ~100x longer on CPU.
    return jax.jit(lambda key: model.init(key, video, boxes)["params"])(jax.random.key(seed))


def count_params(params) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))


def parameter_overview(params, depth: int = 2) -> str:
    """Counts per submodule (to `depth` levels) and the total, as a small table."""
    rows: dict[str, int] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = [getattr(p, "key", str(p)) for p in path]
        rows["/".join(keys[:depth])] = rows.get("/".join(keys[:depth]), 0) + int(np.prod(leaf.shape))
    width = max(len(k) for k in rows)
    lines = [f"{'module'.ljust(width)}  {'params':>12}"]
    lines += [f"{k.ljust(width)}  {v:>12,}" for k, v in sorted(rows.items())]
    return "\n".join(lines + [f"{'total'.ljust(width)}  {count_params(params):>12,}"])
