"""The share of training time spent waiting for data (trainer.main's own `data_wait_share`, from
WORKDIR/metrics.jsonl), in two real runs of the trainer:

- the demo, on synthetic 64x64 videos;
- a ++-shaped input: the STATM-SAVi++ chain (128x128, random resized crop, log depth, K=23) on the converted
  shared MOVi sample, with Grain worker processes, feeding a shrunk model (narrow layers, a small CNN encoder).
  Its step still decodes 24 slots x 6 frames at 128x128 and takes ~2 s at batch 2 on this CPU, against minutes
  for the real ++ step, which would hide any input cost; on a GPU the step is ~100x faster, which is what the
  capacity plan's input cores per host are for.

The first logged window holds the compile and is left out.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile

from bench.child import REPO
from bench.report import Measure, Section

PP_SHAPED = ["--config.model.slot_size=16", "--config.model.init_hidden_size=16",
             "--config.model.encoder.cnn_features=(8,8)", "--config.model.encoder.cnn_kernel_size=3",
             "--config.model.encoder.cnn_strides=(4,2)", "--config.model.encoder.backbone=cnn",
             "--config.model.encoder.transformer_layers=0", "--config.model.encoder.pos_mlp_hidden=8",
             "--config.model.recurrence.corrector_qkv=16", "--config.model.recurrence.predictor_qkv=16",
             "--config.model.recurrence.predictor_mlp=16", "--config.model.decoder.features=(4,4,4,4)",
             "--config.model.decoder.kernel_size=3", "--config.model.remat=False"]


def train(config: str, data_dir: str, workdir: str, steps: int, every: int, overrides: list[str]) -> list[float]:
    cmd = [sys.executable, "-m", "trainer.main", "--config", config, "--workdir", workdir,
           f"--config.data.data_dir={data_dir}", f"--config.num_train_steps={steps}",
           f"--config.log_loss_every_steps={every}", f"--config.eval_every_steps={10 * steps}",
           f"--config.checkpoint_every_steps={10 * steps}", "--config.eval_at_start=False",
           "--config.compilation_cache=False", *overrides]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    if r.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    return [row["train/data_wait_share"] for row in rows if "train/data_wait_share" in row][1:]


def run(quick: bool, movi_sample: str, log=print) -> Section:
    from data.convert_tfds_to_arrayrecord import convert
    from data.synthetic.dataset import generate

    steps = 8 if quick else 100
    every = steps // 4 if quick else steps // 5
    measures = []
    with tempfile.TemporaryDirectory() as tmp:
        demo_data, pp_data = os.path.join(tmp, "demo_data"), os.path.join(tmp, "pp_data")
        log("  data wait: the demo run")
        generate(demo_data, num_train=16, num_validation=4, resolution=64, num_frames=12, log=lambda *a, **k: None)
        shares = train(os.path.join(REPO, "configs", "demo.py"), demo_data, os.path.join(tmp, "demo"), steps,
                       every, [])
        measures.append(Measure("data-wait share of step time, demo run", 100 * statistics.median(shares), "%",
                                "<= 5", f"{steps} steps, per window: {', '.join(f'{100 * s:.1f}' for s in shares)}"))
        workers = os.cpu_count() or 1
        log(f"  data wait: STATM-SAVi++ input chain with {workers} Grain workers")
        convert(movi_sample, "movi_a/128x128:1.0.0", pp_data, num_workers=1, log=lambda *a: None)
        shares = train(os.path.join(REPO, "configs", "statm_savi_pp.py") + ":movi_e", pp_data, os.path.join(tmp, "pp"),
                       steps, every, [*PP_SHAPED, "--config.batch_size=2", "--config.eval_batch_size=2",
                                           f"--config.data.worker_count={workers}"])
        measures.append(Measure("data-wait share of step time, STATM-SAVi++ input chain", 100 * statistics.median(
            shares), "%", "<= 5", f"{workers} Grain workers, batch 2, shrunk model; per window: "
                                  f"{', '.join(f'{100 * s:.1f}' for s in shares)}"))
    return Section("data_wait", "Data wait in training runs", measures)
