"""The data CLIs end to end: one clear message and a non-zero exit on bad input; the smoke run on real data."""

import os
import subprocess
import sys

import numpy as np
from conftest import REPO
from PIL import Image


def run(*args):
    return subprocess.run([sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=600)


def test_unknown_config_key_lists_valid_keys(tiny_synthetic, tmp_path):
    r = run("data.tools.preview", "--config", "configs/demo.py", f"--config.data.data_dir={tiny_synthetic}",
            "--config.data.resolutoin=32", "--out", str(tmp_path / "x.npz"))
    assert r.returncode != 0
    assert "unknown config key(s)" in r.stderr and "did you mean data.resolution" in r.stderr
    assert "valid keys:" in r.stderr and "Traceback" not in r.stderr


def test_missing_config_and_data(tmp_path):
    r = run("data.tools.preview", "--config", "configs/nope.py", "--out", str(tmp_path / "x.npz"))
    assert r.returncode != 0 and "config file 'configs/nope.py' not found" in r.stderr
    r = run("data.tools.smoke", "--config", "configs/demo.py", f"--config.data.data_dir={tmp_path}/missing",
            "--workdir", str(tmp_path / "w"))
    assert r.returncode == 1 and "data directory does not exist" in r.stderr and "Traceback" not in r.stderr


def test_smoke_run_on_synthetic_data(tiny_synthetic, tmp_path):
    # The small real config shrunk to the tiny data: its train batches carry flow, as uint8 colour codes.
    r = run("data.tools.smoke", "--config", "configs/statm_savi.py:movi_a",
            f"--config.data.data_dir={tiny_synthetic}", "--config.data.resolution=32",
            "--config.model.decoder.resolution=4", "--config.data.eval_frames=12", "--config.batch_size=4",
            "--config.eval_batch_size=4", "--workdir", str(tmp_path / "w"), "--num_batches", "3")
    assert r.returncode == 0, r.stderr
    assert "restored iterator continues bit-identically" in r.stdout and "covering all 6 videos once" in r.stdout
    assert {"preview_train_clip.png", "data_state.json"} <= set(os.listdir(tmp_path / "w"))
    # The preview shows what the batch holds: rows video, flow (the train batch has no segmentation or depth).
    clip = np.load(tmp_path / "w" / "preview_train_clip.npz")
    png = np.asarray(Image.open(tmp_path / "w" / "preview_train_clip.png"))
    codes = clip["flow"]
    t, res = codes.shape[:2]
    assert set(clip.files) == {"video", "boxes", "flow"} and codes.dtype == np.uint8 and t == 6
    assert png.shape == (2 * res, t * res, 3)
    assert len(np.unique(codes)) > 20  # real colours, not a saturated 0/255 image
    for i in range(t):
        np.testing.assert_array_equal(png[res : 2 * res, i * res : (i + 1) * res], codes[i], err_msg=f"frame {i}")


def test_synthetic_cli_skips_existing(tmp_path):
    args = ("data.synthetic", "--out_dir", str(tmp_path / "s"), "--num_train", "2", "--num_validation", "1",
            "--resolution", "16", "--num_frames", "4", "--supersample", "1", "--num_workers", "1", "--skip_existing")
    assert run(*args).returncode == 0
    r = run(*args)
    assert r.returncode == 0 and "already present" in r.stdout
