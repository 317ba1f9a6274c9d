"""python -m bench.restart [--config configs/demo.py] [--data_dir DIR] [--work DIR]

A restart's time to its first step, with JAX's persistent compilation cache cold and warm, side by side:
1. a fresh run (cold cache) is sent a SIGTERM after its first step and exits resumably (75);
2. the same command restarts with the cache it filled (warm), and is stopped the same way;
3. the same command restarts once more, with an empty cache (cold).
Each attempt's seconds from process start to its first step come from WORKDIR/events.jsonl.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import tempfile

from bench import chaos
from bench.report import Measure, Section
from trainer import goodput

REPO = chaos.REPO


def attempt(config: str, data: str, workdir: str, cache: str, log: str) -> chaos.Attempt:
    # Enough steps that the run is still training when the SIGTERM after its first step arrives.
    cmd = chaos.command(data, workdir, [f"--config.compilation_cache_dir={cache}", "--config.eval_at_start=False",
                                        "--config.num_train_steps=100000"], config)
    a = chaos.run_attempt(cmd, chaos.environment(), workdir, "sigterm", random.Random(0), log)
    if a.returncode != chaos.EXIT_RESUMABLE:
        raise RuntimeError(f"expected exit {chaos.EXIT_RESUMABLE}, got {a.returncode}:\n{a.stderr[-3000:]}")
    return a


def run(config: str, data: str, work: str) -> dict:
    workdir, cache = os.path.join(work, "run"), os.path.join(work, "cache")
    shutil.rmtree(workdir, ignore_errors=True)
    shutil.rmtree(cache, ignore_errors=True)
    attempt(config, data, workdir, cache, os.path.join(work, "1-fresh"))
    attempt(config, data, workdir, cache, os.path.join(work, "2-warm"))
    attempt(config, data, workdir, os.path.join(work, "empty-cache"), os.path.join(work, "3-cold"))
    shutil.rmtree(os.path.join(work, "empty-cache"), ignore_errors=True)
    firsts = [a["to_first_step"] for a in goodput.report(workdir)["attempts"]]
    result = {"config": os.path.relpath(config, REPO), "fresh_cold": firsts[0], "restart_warm": firsts[1],
              "restart_cold": firsts[2]}
    print(f"  | restart to first step, {result['config']} | cold cache {firsts[2]:.1f} s | warm cache "
          f"{firsts[1]:.1f} s | {firsts[2] / firsts[1]:.2f}x | (fresh start, cold: {firsts[0]:.1f} s) |")
    return result


def measure(quick: bool, log=print) -> tuple[Section, dict]:
    """The suite's measure: configs/tiny.py (quick) or the demo config, on a small synthetic dataset."""
    from data.synthetic.dataset import generate

    config = os.path.join(REPO, "configs", "tiny.py" if quick else "demo.py")
    log(f"  restart: {os.path.basename(config)} started, restarted with a warm cache, restarted with a cold one")
    with tempfile.TemporaryDirectory() as work:
        data = os.path.join(work, "data")
        generate(data, num_train=16, num_validation=4, resolution=32 if quick else 64, num_frames=12, supersample=1,
                 log=lambda *_, **__: None)
        r = run(config, data, work)
    return Section("restart", "Restart to the first step", [
        Measure("restart to first step, warm compilation cache / cold", r["restart_warm"] / r["restart_cold"], "x",
                "<= 0.25", f"{r['config']}: {r['restart_warm']:.1f} s against {r['restart_cold']:.1f} s")]), r


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=os.path.join(REPO, "configs", "demo.py"))
    p.add_argument("--data_dir", default=None, help="default: a small synthetic dataset at 64x64 made here")
    p.add_argument("--work", default=None)
    a = p.parse_args()
    work = os.path.abspath(a.work or tempfile.mkdtemp(prefix="restart-"))
    os.makedirs(work, exist_ok=True)
    data = a.data_dir
    if data is None:
        from data.synthetic.dataset import generate

        data = os.path.join(work, "data")
        if not os.path.isdir(data):
            generate(data, num_train=16, num_validation=8, resolution=64, log=lambda *_, **__: None)
    run(os.path.abspath(a.config), data, work)


if __name__ == "__main__":
    main()
