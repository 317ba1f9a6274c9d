"""Data-dependent readout-bias initialisation (config.readout_bias_init = "target_mean")."""

import jax
import numpy as np
import pytest
from data_fixtures import train_ds
from model_fixtures import tiny_config, tiny_inputs, tiny_model

from data import batch
from data.pipeline import datasets
from model import build
from model.decoder import with_readout_bias


@pytest.mark.parametrize("early_fusion", [False, True])
def test_readout_bias_shifts_the_initial_output_by_exactly_the_means(early_fusion):
    """The alphas sum to one over slots (late fusion) and the head is affine (early fusion), so setting the
    bias moves every output pixel by the bias itself, and nothing else changes."""
    targets = {"depth": 1, "flow": 3} if early_fusion else {"flow": 3}
    cfg = tiny_config()
    cfg.decoder.targets, cfg.decoder.early_fusion = targets, early_fusion
    model = build.build_model(cfg, num_slots=4)
    video, boxes = tiny_inputs()
    params = jax.jit(lambda key: model.init(key, video, boxes)["params"])(jax.random.key(1))
    means = {"flow": np.array([0.9, 0.8, 0.7], np.float32), "depth": np.array([3.5], np.float32)}
    means = {k: means[k] for k in targets}
    new = with_readout_bias(params, means, early_fusion)
    old_out, new_out = (model.apply({"params": p}, video, boxes) for p in (params, new))
    for key, mean in means.items():
        np.testing.assert_allclose(np.asarray(new_out[key] - old_out[key]), np.broadcast_to(mean, old_out[key].shape),
                                   atol=2e-6)
    np.testing.assert_array_equal(np.asarray(new_out["alphas"]), np.asarray(old_out["alphas"]))
    changed = [jax.tree_util.keystr(path) for (path, a), b in zip(
        jax.tree_util.tree_flatten_with_path(params)[0], jax.tree_util.tree_leaves(new), strict=True)
        if not np.array_equal(a, b)]
    assert len(changed) == len(means) and all("Readout_0" in c and "bias" in c for c in changed), changed


def test_readout_bias_of_the_wrong_shape_is_refused():
    model, params = tiny_model()
    with pytest.raises(ValueError, match="target 'flow'"):
        with_readout_bias(params, {"flow": np.zeros(2, np.float32)})


def test_target_means_average_the_first_train_elements_without_advancing(tiny_synthetic):
    ds = train_ds(tiny_synthetic)
    means = datasets.target_means(ds, batch.train_schema(("flow", "video")), ("flow", "video"), 3)
    flows = [batch.codes_to_float(ds[i]["flow"]) for i in range(3)]  # train flow arrives as uint8 codes
    videos = [ds[i]["video"] for i in range(3)]
    for key, arrays in (("flow", flows), ("video", videos)):
        expected = np.mean([a.reshape(-1, 3).astype(np.float64).mean(0) for a in arrays], axis=0)
        np.testing.assert_allclose(means[key], expected, rtol=1e-6)
    assert means["flow"].dtype == np.float32 and means["flow"].shape == (3,)
