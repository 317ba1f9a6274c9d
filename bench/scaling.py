"""Data-parallel runs of the trainer on 1, 2, 4 and 8 fake CPU devices, and 2 processes x 2 devices through
launch.local: the per-step losses must agree (same global batch), and the step time of each is reported against
one device's. On one CPU the devices share the same cores, so the ratios show the sharding's overhead, not a
speed-up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from bench.child import REPO
from bench.report import Measure, Section

LAYOUTS = ((1, 1), (1, 2), (1, 4), (1, 8), (2, 2))  # (processes, devices per process)
QUICK_LAYOUTS = ((1, 1), (2, 2))  # each run costs ~45 s here, mostly compiles


def train(data_dir: str, workdir: str, processes: int, devices: int, steps: int) -> tuple[list[float], float]:
    args = ["--config", os.path.join(REPO, "configs", "tiny.py"), "--workdir", workdir,
            f"--config.data.data_dir={data_dir}", f"--config.num_train_steps={steps}", "--config.batch_size=8",
            "--config.eval_batch_size=8", "--config.compilation_cache=False",
            f"--config.checkpoint_every_steps={steps}"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    if processes == 1:
        cmd = [sys.executable, "-m", "trainer.main", *args]
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    else:
        cmd = [sys.executable, "-m", "launch.local", "--num_processes", str(processes), "--devices_per_process",
               str(devices), "--", *args]
    r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {r.returncode}):\n{(r.stdout + r.stderr)[-3000:]}")
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    losses = [row["train/loss"] for row in rows if "train/loss" in row]
    rates = [row["train/steps_per_sec"] for row in rows if "train/steps_per_sec" in row][2:]  # after compiles
    return losses, len(rates) / sum(1 / r for r in rates)


def run(quick: bool, log=print) -> Section:
    from data.synthetic.dataset import generate

    steps = 6 if quick else 20
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "data")
        generate(data, num_train=24, num_validation=8, resolution=32, num_frames=12, supersample=1,
                 log=lambda *a, **k: None)
        for processes, devices in LAYOUTS if not quick else QUICK_LAYOUTS:
            log(f"  scaling: {processes} process(es) x {devices} device(s), {steps} steps of configs/tiny.py")
            out[processes, devices] = train(data, os.path.join(tmp, f"{processes}x{devices}"), processes, devices,
                                            steps)
    ref_losses, ref_rate = out[1, 1]
    measures = []
    for (processes, devices), (losses, rate) in out.items():
        label = f"{processes} process(es) x {devices} device(s)"
        worst = max(abs(a - b) / abs(b) for a, b in zip(losses, ref_losses, strict=True))
        measures.append(Measure(f"largest relative loss difference from 1 device, {label}", worst, "", "<= 1e-5",
                                f"{len(losses)} steps"))
        measures.append(Measure(f"step time against 1 device, {label}", ref_rate / rate, "x", None,
                                "devices share the same CPU cores"))
    return Section("scaling", "Data-parallel runs on CPU", measures)
