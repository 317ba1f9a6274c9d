"""The data jobs around the converter: data/download_movi.sh under a fake gsutil (its naming rule from `gsutil
help cp`, "How Names Are Constructed"), and launch/slurm/convert.sbatch as a SLURM array on the shared MOVi sample
(the array's variables as sbatch(1) documents them; no real SLURM or GCS here)."""

import os
import shutil
import subprocess
import sys

from conftest import REPO
from fake_slurm import executable

from data.records import shards

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


def test_convert_sbatch_array_converts_every_shard_once(movi_sample_dir, tmp_path):
    out = tmp_path / "movi_a_128"
    env = {**os.environ, "REPO": REPO, "PYTHON": sys.executable, "TFDS_DIR": movi_sample_dir,
           "DATASET": "movi_a/128x128:1.0.0", "OUT_DIR": str(out), "SLURM_ARRAY_JOB_ID": "77",
           "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_CPUS_PER_TASK": "1"}
    script = os.path.join(REPO, "launch", "slurm", "convert.sbatch")
    logs = []
    for task in (1, 2, 3):  # --array=1-3: the sample's 2 shards over 3 tasks, one with nothing to do
        r = subprocess.run(["bash", script], env={**env, "SLURM_ARRAY_TASK_ID": str(task)}, capture_output=True,
                           text=True, timeout=300, cwd="/")
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        logs.append(r.stdout + r.stderr)
    assert "slice 0 of 3" in logs[0] and "slice 2 of 3" in logs[2]
    info = shards.read_dataset_info(str(out))
    assert sorted(info["splits"]) == ["train", "validation"]
    for split in info["splits"].values():  # dataset_info.json is written once every shard of every split is done
        assert split["num_records"] > 0 and all(shards.shard_done(str(out / f)) for f in split["files"])
    r = subprocess.run(["bash", script], env={**env, "SLURM_ARRAY_TASK_ID": "9"}, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1 and "outside the contiguous range" in r.stderr
