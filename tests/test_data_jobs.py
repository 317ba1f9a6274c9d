"""The data jobs around the converter: data/download_movi.sh under a fake gsutil (its naming rule from `gsutil
help cp`, "How Names Are Constructed"; no GCS here), and launch/slurm/convert.sbatch's refusal of a task outside
its array's range. The array itself runs under a real Slurm in tests/test_real_slurm.py."""

import os
import shutil
import subprocess
import sys

from conftest import REPO
from fake_slurm import executable

# gsutil cp -r SRC DEST: into an existing directory DEST, SRC's last name becomes a subdirectory; into a missing
# DEST, DEST itself becomes the copy (its parents created). gs://BUCKET/PATH is read from $FAKE_GCS/BUCKET/PATH.
GSUTIL = """#!/bin/bash
echo "gsutil $*" >> "$FAKE_GCS_LOG"
while [[ $1 == -* ]]; do shift; done
[ "$1" = cp ] || exit 2; shift
[ "$1" = -r ] || exit 2; shift
src=$FAKE_GCS/${1#gs://} dest=${2%/}
if [ -d "$dest" ]; then cp -r "$src" "$dest/"; else mkdir -p "$(dirname "$dest")" && cp -r "$src" "$dest"; fi
"""


def test_download_lays_out_name_config_version_for_the_converter(movi_sample_dir, tmp_path):
    bucket = tmp_path / "gcs" / "kubric-public" / "tfds"
    bucket.mkdir(parents=True)
    shutil.copytree(os.path.join(movi_sample_dir, "movi_a"), bucket / "movi_a")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    executable(bindir / "gsutil", GSUTIL)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "FAKE_GCS": str(tmp_path / "gcs"),
           "FAKE_GCS_LOG": str(tmp_path / "gcs.log")}
    script = os.path.join(REPO, "data", "download_movi.sh")
    r = subprocess.run(["bash", script, "movi_a", "128x128", str(tmp_path / "tfds")], env=env, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "tfds" / "movi_a" / "128x128" / "1.0.0" / "dataset_info.json").exists()
    convert = [line.strip() for line in r.stdout.splitlines() if "convert_tfds_to_arrayrecord" in line][0]
    assert f"--tfds_dir {tmp_path / 'tfds'} --dataset movi_a/128x128:1.0.0" in convert
    r = subprocess.run(["bash", script, "movi_f"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "unknown variant movi_f" in r.stderr


def test_convert_sbatch_refuses_a_task_outside_the_contiguous_range(tmp_path):
    """The array's variables as sbatch(1) documents them, set by hand: the script's own check, no scheduler."""
    env = {**os.environ, "REPO": REPO, "PYTHON": sys.executable, "TFDS_DIR": str(tmp_path), "DATASET": "movi_a",
           "OUT_DIR": str(tmp_path / "out"), "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "1",
           "SLURM_ARRAY_TASK_ID": "9"}
    r = subprocess.run(["bash", os.path.join(REPO, "launch", "slurm", "convert.sbatch")], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "outside the contiguous range" in r.stderr
