"""Config -> model, for our ml_collections configs and for the original's module JSON (`seed_config`)."""

from __future__ import annotations

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


def resolve_conv_transpose(choice: str, backend: str | None = None) -> str:
    """The decoder's transposed-convolution form: "auto" is "phases" on the CPU backend, where XLA's dilated
    form runs 2-3.5x slower (BENCHMARKS.md, "Train step against the original"), and "lax" (the original's
    nn.ConvTranspose) on GPUs and TPUs, where the choice has not been measured. Both forms hold the same
    parameters and compute the same sums, so a checkpoint moves between backends unchanged."""
    if choice != "auto":
        return choice
    return "phases" if (backend or jax.default_backend()) == "cpu" else "lax"


def build_model(model: ml_collections.ConfigDict, num_slots: int, conditioning_key: str = "boxes") -> STATMSAVi:
    """`config.model` (keys: configs/common.py model_config), `config.num_slots`, `config.conditioning_key`;
    their values are checked by configs/validate.py."""
    dtype = DTYPES[model.dtype]
    m = model.to_dict()
    decoder = _tuples(m["decoder"])
    decoder["targets"] = tuple(sorted((str(k), int(v)) for k, v in m["decoder"]["targets"].items()))
    decoder["conv_transpose"] = resolve_conv_transpose(decoder["conv_transpose"])
    return STATMSAVi(
        encoder=FrameEncoder(**_tuples(m["encoder"]), dtype=dtype, parent=None),
        decoder=SpatialBroadcastDecoder(**decoder, dtype=dtype, parent=None),
        num_slots=num_slots, slot_size=m["slot_size"],
        initializer=InitConfig(CONDITIONING[conditioning_key], m["init_hidden_size"]),
        recurrence=RecurrenceConfig(**m["recurrence"]),
        remat=m["remat"], time_loop=m.get("time_loop", "scan"), dtype=dtype)


class UnsupportedOriginal(ValueError):
    pass


def from_original(seed_config: dict[str, Any]) -> tuple[ml_collections.ConfigDict, int, str]:
    """The original's config JSON (its `model` module tree) -> (config.model, num_slots, conditioning_key).

    Every field of our model block is set here (see configs/common.py: model_config for their meaning);
    an option of the original that this port does not implement raises UnsupportedOriginal.
    """
    model = seed_config["model"]
    name = lambda d: d["module"].rsplit(".", 1)[-1]
    if name(model) not in ("STATMSAVi", "SAVi") or model.get("decode_predicted") or not model.get(
            "decode_corrected", True):
        raise UnsupportedOriginal(f"model {name(model)} with decode_predicted={model.get('decode_predicted')}")
    enc, init, corr, pred, dec = (model[k] for k in ("encoder", "initializer", "corrector", "predictor", "decoder"))
    backbone = enc["backbone"]
    encoder = dict(backbone="cnn", cnn_features=[32, 32, 32, 32], cnn_kernel_size=5, cnn_strides=[1, 1, 1, 1],
                   pos_mlp_hidden=None, transformer_layers=0, transformer_heads=4, transformer_qkv=64,
                   transformer_mlp=1024)
    if name(backbone) == "CNN":
        encoder.update(cnn_features=list(backbone["features"]), cnn_kernel_size=backbone["kernel_size"][0][0],
                       cnn_strides=[s[0] for s in backbone["strides"]])
    elif name(backbone) == "ResNet34" and backbone.get("norm_type") == "group" and backbone.get("small_inputs"):
        encoder["backbone"] = "resnet34"
    else:
        raise UnsupportedOriginal(f"encoder backbone {backbone}")
    pos_transform = enc.get("pos_emb", {}).get("output_transform")
    encoder["pos_mlp_hidden"] = pos_transform["hidden_size"] if pos_transform else None
    if enc.get("output_transform"):
        t = enc["output_transform"]
        encoder.update(transformer_layers=t["num_layers"], transformer_heads=t["num_heads"],
                       transformer_qkv=t["qkv_size"], transformer_mlp=t["mlp_size"])
    if name(init) != "CoordinateEncoderStateInit":
        raise UnsupportedOriginal(f"initializer {name(init)}")
    conditioning = "center_of_mass" if init.get("center_of_mass") else "boxes"
    slot_size = init["embedding_transform"]["output_size"]
    predictor = {"TimeSpaceTransformerBlock2": "statm", "TransformerBlock": "transformer"}.get(name(pred))
    if predictor is None or pred.get("pre_norm"):
        raise UnsupportedOriginal(f"predictor {pred}")
    db = dec["backbone"]
    cfg = ml_collections.ConfigDict({
        "slot_size": slot_size,
        "init_hidden_size": init["embedding_transform"]["hidden_size"],
        "encoder": encoder,
        "recurrence": dict(num_iterations=corr.get("num_iterations", 1),
                           corrector_qkv=corr.get("qkv_size") or slot_size, predictor=predictor,
                           predictor_heads=pred["num_heads"], predictor_qkv=pred["qkv_size"],
                           predictor_mlp=pred["mlp_size"], memory_size=0, slice_size=0),
        "decoder": dict(targets={k: int(v) for k, v in seed_config["targets"].items()},
                        resolution=dec["resolution"][0], features=list(db["features"]),
                        kernel_size=db["kernel_size"][0][0], strides=[s[0] for s in db["strides"]],
                        transpose=list(db["layer_transpose"]), early_fusion=bool(dec.get("early_fusion", False)),
                        conv_transpose="lax"),
        "dtype": "float32", "remat": False, "time_loop": "scan",
    })
    return cfg, int(seed_config["num_slots"]), conditioning


# The init program is ~100 inlined threefry draws, run once: compiled without LLVM's optimisations it starts
# several times faster, with values equal up to 1 ulp (BENCHMARKS.md, "What the suite found"); every process
# and restart compiles it so, hence the same values everywhere.
INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


def init_params(model: STATMSAVi, batch: int, frames: int, resolution: int, max_instances: int,
                seed: int = 0) -> dict:
    """Fresh parameters from `seed`: a plain function for the caller to jit once (eagerly it dispatches op by op,
    far slower), compiled with INIT_COMPILER_OPTIONS, or to trace under jax.eval_shape."""
    video = jnp.zeros((batch, frames, resolution, resolution, 3), jnp.float32)
    boxes = jnp.zeros((batch, frames, max_instances, 4), jnp.float32)
    return model.init(jax.random.key(seed), video, boxes)["params"]


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
