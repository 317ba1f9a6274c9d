"""launch.preflight: the verdict table on a healthy local cluster (2 processes x 2 fake CPU devices, the real
trainer's SIGTERM rehearsal included), each check seen failing on a fault that a misconfigured host would show,
and the judgements on their own. preflight.sbatch runs under a real Slurm in tests/test_real_slurm.py."""

import os
import subprocess
import sys

import pytest
from conftest import COMPILATION_CACHE, REPO

from launch.preflight import measures
from launch.preflight.verdict import read

CONFIG = os.path.join(REPO, "configs", "tiny.py")


def preflight(data_dir, workdir, *options, env=None):
    cmd = [sys.executable, "-m", "launch.preflight", "--launcher", "local", "--num_processes", "2",
           "--devices_per_process", "2", "--input_seconds", "2", *options, "--", "--config", CONFIG,
           "--workdir", str(workdir), f"--config.data.data_dir={data_dir}",
           f"--config.compilation_cache_dir={COMPILATION_CACHE}"]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, **(env or {})})
    (verdict,) = (workdir / "preflight").glob("*/verdict.json")
    return r, {row.check: row for row in read(str(verdict))}


@pytest.mark.slow
def test_preflight_passes_on_a_healthy_cluster_and_rehearses_a_preemption(tiny_synthetic, tmp_path):
    r, rows = preflight(tiny_synthetic, tmp_path / "run", "--assumed_step_seconds", "10")
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-3000:]
    assert all(row.ok for row in rows.values()) and len(rows) == 11, rows
    assert rows["every process started"].figure == "2 of 2 processes"
    assert rows["all-reduce across all devices"].detail == "sum as expected"
    assert "exited 75" in rows["SIGTERM reaches every process and it saves"].figure
    saved = rows["SIGTERM reaches every process and it saves"].detail.split()[1]
    assert rows["resumes from the saved step"].figure.startswith(f"restored step {saved},")
    assert "preflight: 11 of 11 checks passed" in r.stdout


@pytest.mark.slow
def test_each_check_fails_on_the_fault_it_is_for(tiny_synthetic, tmp_path):
    r, rows = preflight(tiny_synthetic, tmp_path / "run", "--skip_rehearsal", "--assumed_step_seconds", "1e-9",
                        "--checks_module", "tests.preflight_faults", env={"PREFLIGHT_FAULTS": "no_data,unshared,clock",
                                                  "PREFLIGHT_PRIVATE_DIR": str(tmp_path)})
    assert r.returncode == 1, r.stdout[-3000:]
    failed = {name for name, row in rows.items() if not row.ok}
    assert failed == {"data readable on every host", "input keeps up on every host",
                      "run and cache directories shared", "clock skew between hosts"}, rows
    assert "process 1 on" in rows["data readable on every host"].detail
    assert "/nonexistent/movi" in rows["data readable on every host"].detail
    assert "process 0 does not see the files of process(es) [1]" in rows["run and cache directories shared"].detail
    assert float(rows["clock skew between hosts"].figure.split()[0]) > 4000  # ms
    # The devices check, against an expectation the layout does not meet; the input rate, against a need it
    # cannot meet.
    r, rows = preflight(tiny_synthetic, tmp_path / "run2", "--skip_rehearsal", "--assumed_step_seconds", "1e-9",
                        "--expect_devices_per_process", "3")
    failed = {name for name, row in rows.items() if not row.ok}
    assert failed == {"each process sees its devices", "input keeps up on every host"}, rows
    assert "process(es) [0, 1] see [2, 2] device(s), expected 3" in rows["each process sees its devices"].detail
    assert "below need" in rows["input keeps up on every host"].detail


@pytest.mark.slow
def test_the_rehearsal_fails_when_no_checkpoint_comes_in_time(tiny_synthetic, tmp_path):
    r, rows = preflight(tiny_synthetic, tmp_path / "run", "--rehearsal_timeout_seconds", "1")
    assert r.returncode == 1
    row = rows["SIGTERM reaches every process and it saves"]
    assert not row.ok and row.figure == "no checkpoint" and "within 1 s" in row.detail


def test_judgements():
    assert not measures.all_reduce_row({"got": [9.0], "expected": 10.0, "devices": 4, "seconds": 1.0,
                                        "bus_gb_per_s": 1.0}).ok
    assert measures.all_reduce_row({"got": [10.0], "expected": 10.0, "devices": 4, "seconds": 1.0,
                                    "bus_gb_per_s": 1.0}).ok
    assert not measures.processes_row(15, 16).ok and measures.processes_row(16, 16).ok
    assert measures.bus_bandwidth(1000, 1.0, 8) == 1000 * 2 * 7 / 8  # nccl-tests' all-reduce bus bandwidth
    four = [{"host": "a", "count": n, "platform": "gpu", "kind": "H800", "visible": "all", "runtime": ""}
            for n in (8, 8, 1, 8)]
    row = measures.devices_row(four, 8)  # a process that JAX gave one GPU of its node
    assert not row.ok and "process(es) [2] see [1] device(s), expected 8" in row.detail
    assert not measures.clock_row(2.5, 1.0, 2).ok and measures.clock_row(0.01, 1.0, 2).ok
    rows = measures.input_rows([{"host": "a", "error": None, "videos": 100, "seconds": 1.0},
                                {"host": "b", "error": None, "videos": 10, "seconds": 1.0}], 64, 2, 1.0, "/d")
    assert rows[1].detail.startswith("b below need")  # 32 videos per step per host, 1 s per step
