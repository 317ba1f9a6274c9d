"""One train step of ours equals the original's (../shared/reference/statm_savi_small_seed_train_step.npz: the
original's loss and the gradient of every parameter, for given parameters and inputs, at the highest matmul
precision). The tolerances are the reference README's: the loss to float rounding, every gradient leaf to a
small share of its norm (leaves whose true gradient is zero hold float noise)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
from conftest import SHARED
from model_fixtures import regen

from configs.common import model_config
from data.batch import train_schema
from model import build, seed_import
from trainer.steps import reconstruction_loss

REFERENCE = os.path.join(SHARED, "reference", "statm_savi_small_seed_train_step.npz")
LOSS_RTOL = 2e-6  # the reference README measured 6.6e-7 against the original itself
GRAD_SHARE = 5e-4  # of each leaf's norm; the README measured a worst entry of 1.3e-4
GRAD_NOISE = 1e-6  # absolute, for leaves whose true gradient is zero


def reference_params(d) -> dict[str, np.ndarray]:
    """The recipe's parameters, completed by the reference's own regen.py, under the original's paths."""
    meta = json.loads(d["meta/json"].tobytes())
    params = regen(SHARED).draw_params(json.loads(d["meta/param_shapes_json"].tobytes()), meta["param_seed"])
    params.update({k[len("fixed/"):]: d[k] for k in d.files if k.startswith("fixed/")})
    return params


def ours(params_original: dict, d) -> tuple[float, dict, dict]:
    model = build.build_model(model_config("small", "statm"), num_slots=11)
    expected = seed_import.expected_tree(model, 10, 3, 64, 2)
    params = seed_import.convert_tree(params_original, expected, "statm_savi_conditional_small.py")
    batch = {"video": jnp.asarray(d["inputs/video"]), "boxes": jnp.asarray(d["inputs/boxes"]),
             "flow": jnp.asarray(d["inputs/flow_codes"])}  # as our train schema carries flow
    schema = train_schema(("flow",))

    def loss_fn(p):
        return reconstruction_loss(model.apply({"params": p}, batch["video"], batch["boxes"]), batch, ("flow",),
                                   schema)

    with jax.default_matmul_precision("highest"):
        (loss, parts), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(params)
    return float(loss), parts, seed_import.flatten(grads)


def test_loss_and_every_gradient_equal_the_originals():
    d = np.load(REFERENCE)
    loss, parts, grads = ours(reference_params(d), d)
    ref_loss = float(d["outputs/loss"])
    assert abs(loss - ref_loss) <= LOSS_RTOL * abs(ref_loss), (loss, ref_loss)
    assert abs(float(parts["flow"]) - float(d["outputs/loss_recon_flow"])) <= LOSS_RTOL * abs(ref_loss)
    original = {k[len("grads/"):]: d[k] for k in d.files if k.startswith("grads/")
                and not k.endswith("/pos_embedding")}  # coordinate grids: constants in ours, no gradient
    renamed = {("Recurrence/" + p if p.startswith(seed_import.RECURRENT_PREFIXES) else p): v
               for p, v in original.items()}
    assert set(renamed) == set(grads), sorted(set(renamed) ^ set(grads))[:10]
    worst, bad = 0.0, []
    for path, ref in renamed.items():
        ref = np.asarray(ref, np.float64).reshape(grads[path].shape)
        err = np.abs(np.asarray(grads[path], np.float64) - ref).max()
        share = err / (np.linalg.norm(ref) + 1e-30)
        worst = max(worst, share if np.linalg.norm(ref) > GRAD_NOISE else 0.0)
        if err > GRAD_SHARE * np.linalg.norm(ref) + GRAD_NOISE:
            bad.append(f"{path}: max error {err:.3g}, leaf norm {np.linalg.norm(ref):.3g}")
    assert not bad, f"{len(bad)} of {len(renamed)} gradient leaves differ:\n" + "\n".join(bad[:20])
    print(f"loss relative error {abs(loss - ref_loss) / abs(ref_loss):.2g}; worst gradient entry {worst:.2g} of "
          "its leaf's norm")
