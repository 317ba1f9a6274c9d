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

from configs import savi, savi_pp, statm_savi, statm_savi_pp
from model import seed_import
from trainer import program

STATS = os.path.join(SHARED, "reference", "original_init_stats.json")
# Every paper config and the reference model it is checked against. The SAVi baselines share everything but the
# predictor with the STATM model of their size; the reference holds no SAVi predictor, so theirs is left out.
CONFIGS = {"statm_savi": (statm_savi.get_config, "statm_savi_small"),
           "statm_savi_pp": (statm_savi_pp.get_config, "statm_savi_pp"),
           "savi": (savi.get_config, "statm_savi_small"), "savi_pp": (savi_pp.get_config, "statm_savi_pp")}
PREDICTORS = ("Recurrence/TimeSpaceTransformerBlock2_0/", "Recurrence/TransformerBlock_0/")


def fresh(config) -> dict[str, np.ndarray]:
    """A fresh init of the config's model (parameters depend on neither K nor T; the resolution is the config's)."""
    params = program.from_config(config).fresh_params(frames=2)
    return {path: np.asarray(leaf) for path, leaf in seed_import.flatten(params).items()}


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


@pytest.mark.parametrize("name", CONFIGS)
def test_a_fresh_init_is_distributed_as_the_originals(name):
    get_config, reference = CONFIGS[name]
    with open(STATS) as f:
        original = json.load(f)[reference]["leaves"]
    ours = fresh(get_config())
    if name.startswith("savi"):
        original = {p: v for p, v in original.items() if not p.startswith(PREDICTORS)}
        ours = {p: v for p, v in ours.items() if not p.startswith(PREDICTORS)}
    found = mismatches(ours, original)
    assert not found, f"{len(found)} of {len(original)} leaves differ:\n" + "\n".join(found[:20])
    assert len(ours) == len(original)
