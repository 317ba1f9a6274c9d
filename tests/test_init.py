"""A fresh init is the original's, leaf by leaf (../shared/reference/original_init_stats.json, made by running the
original's init): the same shapes, constant leaves exactly equal (zeros and ones where the original puts them, the
zero-initialised last GroupNorm of each ResNet block included), random leaves with the same mean and std up to
sampling noise."""

import json
import math
import os

import numpy as np
import pytest
from conftest import SHARED

from configs.common import model_config
from model import build

STATS = os.path.join(SHARED, "reference", "original_init_stats.json")
# The reference's models and ours: (size, resolution the decoder paints). Parameters depend on neither K nor T.
MODELS = {"statm_savi_small": ("small", 64), "statm_savi_pp": ("pp", 128)}


def flatten(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        out.update(flatten(value, path + "/") if isinstance(value, dict) else {path: np.asarray(value)})
    return out


def fresh(size: str, resolution: int, seed: int = 0) -> dict[str, np.ndarray]:
    model = build.build_model(model_config(size, "statm"), num_slots=11)
    return flatten(build.init_params(model, 1, 2, resolution, 10, seed))


def mismatches(ours: dict[str, np.ndarray], original: dict[str, dict]) -> list[str]:
    out = [f"{p}: missing in ours" for p in original if p not in ours]
    out += [f"{p}: not in the original's init" for p in ours if p not in original]
    for path, ref in original.items():
        if path not in ours:
            continue
        x = ours[path].astype(np.float64)
        if list(x.shape) != ref["shape"]:
            out.append(f"{path}: shape {list(x.shape)}, the original's {ref['shape']}")
        elif ref["constant"] is not None:
            if not np.all(x == ref["constant"]):
                out.append(f"{path}: the original's is the constant {ref['constant']}; ours has mean {x.mean():.4g}, "
                           f"std {x.std():.4g}")
        else:
            n = x.size
            # Sampling noise of a mean and of a standard deviation over n draws, five standard errors.
            mean_tol = 5 * ref["std"] / math.sqrt(n) + 1e-7
            std_tol = 5 * ref["std"] / math.sqrt(2 * max(n - 1, 1)) + 1e-7
            if abs(x.mean() - ref["mean"]) > mean_tol or abs(x.std() - ref["std"]) > std_tol:
                out.append(f"{path}: mean {x.mean():.5g} std {x.std():.5g}, the original's {ref['mean']:.5g} "
                           f"{ref['std']:.5g} (n={n})")
    return out


@pytest.mark.parametrize("name", MODELS)
def test_a_fresh_init_is_distributed_as_the_originals(name):
    with open(STATS) as f:
        original = json.load(f)[name]["leaves"]
    found = mismatches(fresh(*MODELS[name]), original)
    assert not found, f"{len(found)} of {len(original)} leaves differ:\n" + "\n".join(found[:20])
