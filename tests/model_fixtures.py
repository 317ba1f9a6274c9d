"""A tiny STATM-SAVi for fast model tests (same code paths as the real configs), the shipped configs by name, and
the shared reference's own regen.py."""

import functools
import importlib
import importlib.util
import os

import jax
import jax.numpy as jnp
import numpy as np

from configs.common import model_config
from model import build


def tiny_config(**recurrence):
    m = model_config("small")
    m.slot_size = 32
    m.init_hidden_size = 32
    m.encoder.update(cnn_features=(16, 16), cnn_kernel_size=3, cnn_strides=(2, 1), pos_mlp_hidden=16)
    m.recurrence.update(corrector_qkv=32, predictor_heads=4, predictor_qkv=32, predictor_mlp=64, **recurrence)
    m.decoder.update(features=(16, 16), kernel_size=3, strides=(2, 1), transpose=(True, False))
    return m


def tiny_inputs(batch=2, frames=6, size=16, k=3, seed=0):
    rng = np.random.default_rng(seed)
    video = jnp.asarray(rng.random((batch, frames, size, size, 3), np.float32))
    boxes = np.zeros((batch, frames, k, 4), np.float32)
    boxes[:, :, :2] = [0.1, 0.2, 0.5, 0.6]
    boxes[:, :, 1] += 0.2
    return video, jnp.asarray(boxes)


@functools.cache
def _params(conditioning: str):
    # Initialisation compiles every initializer (QR for the orthogonal GRU kernels...): ~10 s on 2 cores,
    # so it runs once per conditioning; buffer, loop, remat and dtype options do not change the tree.
    model = build.build_model(tiny_config(), num_slots=4, conditioning_key=conditioning)
    video, boxes = tiny_inputs()
    return jax.jit(lambda key: model.init(key, video, boxes)["params"])(jax.random.key(0))


def tiny_model(conditioning="boxes", **overrides):
    cfg = tiny_config(**overrides.pop("recurrence", {}))
    cfg.update(overrides)
    return build.build_model(cfg, num_slots=4, conditioning_key=conditioning), _params(conditioning)


def load_config(name: str):
    """A shipped config by module name, with its argument after a colon as on the command line: "demo",
    "statm_savi_pp:movi_c"."""
    module, _, variant = name.partition(":")
    return importlib.import_module(f"configs.{module}").get_config(*([variant] if variant else []))


def regen(shared: str):
    """The shared reference's regen.py as a module: it completes a reference's parameter recipe."""
    spec = importlib.util.spec_from_file_location("regen", os.path.join(shared, "reference", "regen.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reference_agreement(params, arrays: dict, seed_config: dict) -> tuple[float, int]:
    """Our model with `params` on a reference npz's inputs, at full float32 precision: (the share of decided
    pixels whose segmentation equals the original's, how many pixels were decided)."""
    from model import seed_import

    video, boxes = arrays["inputs/video"], arrays["inputs/boxes"]
    model = build.build_model(*build.from_original(seed_config))
    with jax.default_matmul_precision("highest"):
        got = jax.jit(model.apply)({"params": params}, video, boxes)
    agree, decided, _, _ = seed_import.segmentation_agreement(
        np.asarray(got["alphas"]), arrays["outputs/alphas"], np.asarray(got["segmentations"]),
        arrays["outputs/segmentations"], boxes)
    return agree, decided
