"""Converted shared sample -> our eval chains == the original SAVi TensorFlow preprocessing outputs."""

import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REFERENCE_EVAL, REPO

# chain -> the config and overrides that produce it (no code edits: config alone)
CHAINS = {
    "savi_s_eval": ("configs/statm_savi.py:movi_a", []),
    "savi_m_eval": ("configs/statm_savi.py:movi_a", ["--config.data.resolution=128",
                                                          "--config.model.decoder.resolution=16"]),
    "savipp_eval": ("configs/statm_savi_pp.py:movi_e", ["--config.max_instances=10"]),
}
KEYS = ("video", "segmentations", "flow", "depth", "boxes", "padding_mask", "shape")


def compare(ours, ref, chain, name):
    for key in KEYS:
        r, o = ref[f"{chain}/{name}/{key}"], ours[key]
        assert o.shape == r.shape and o.dtype == r.dtype, (chain, name, key, o.shape, o.dtype, r.shape, r.dtype)
        if r.dtype.kind == "f":
            np.testing.assert_allclose(o, r, rtol=0, atol=1e-5, err_msg=f"{chain}/{name}/{key}")
        else:
            np.testing.assert_array_equal(o, r, err_msg=f"{chain}/{name}/{key}")


@pytest.mark.parametrize("chain", sorted(CHAINS))
def test_preview_cli_reproduces_savi_eval_chain(chain, converted_sample, tmp_path):
    config, overrides = CHAINS[chain]
    out = tmp_path / "preview.npz"
    r = subprocess.run([sys.executable, "-m", "data.tools.preview", "--config", config,
                        f"--config.data.data_dir={converted_sample}", *overrides, "--split", "validation",
                        "--num_examples", "2", "--out", str(out), "--png_dir", str(tmp_path / "png")],
                       cwd=REPO, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    ref, got = np.load(REFERENCE_EVAL), np.load(out)
    names = sorted({k.split("/")[0] for k in got.files})
    assert names == ["101011", "101012"]
    for name in names:
        compare({k: got[f"{name}/{k}"] for k in KEYS}, ref, chain, name)
    assert sorted(os.listdir(tmp_path / "png")) == ["101011.png", "101012.png"]


def test_batched_eval_pipeline_reproduces_reference(converted_sample):
    """The same through the batched Grain eval pipeline (padding to the batch, `mask`)."""
    from data.pipeline import datasets
    from data.records import shards

    info = shards.read_dataset_info(converted_sample)
    src = shards.VideoRecordSource(shards.split_files(converted_sample, info, "validation"))
    ref = np.load(REFERENCE_EVAL)
    spec = datasets.PreprocessSpec(resolution=128, max_instances=10, depth_transform="log_plus")
    batches = list(datasets.eval_dataset(src, spec, global_batch_size=3, raw=True))
    assert len(batches) == 1 and batches[0]["mask"].tolist() == [True, True, False]
    for i in range(2):
        ex = {k: v[i] for k, v in batches[0].items()}
        compare(ex, ref, "savipp_eval", str(ex["video_name"]))
