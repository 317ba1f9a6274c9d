"""python -m bench [--quick] [--json FILE] [--only NAME,...] [--gpu] [--tf_python PY] [--no_tf] [--no_write]

Every measure of the suite, side by side in one process tree, each judged against its target; the tables of
BENCHMARKS.md are rewritten with the figures, the date, the machine and this command (--no_write: print only).
--quick runs every measure at a reduced size. --gpu runs the GPU section and the checkpoint section on the
machine's accelerators (the step time while a save is written is judged only there).
Sections: data, train_vs_original, profile, scan, eval_buffers, data_wait, checkpoint, restart, scaling, memory,
capacity (from the figures of data, checkpoint, restart and memory).
The data section's side-by-side with the original's TensorFlow chain runs TensorFlow from its own environment,
.venv-tf (never the project's); it is built here on first use (`make .venv-tf/.installed`, ~1 min from pip's
cache) unless --tf_python names one or --no_tf skips that measure.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import time

from bench import capacity, checkpoint_io, data_pipeline, data_wait, memory, model_speed, restart, scaling
from bench.child import REPO
from bench.report import Measure, Section, machine, rewrite, table

SHARED = os.environ.get("STATM_SHARED_DIR", os.path.join(REPO, "..", "shared"))
SECTIONS = ("data", "train_vs_original", "profile", "scan", "eval_buffers", "data_wait", "checkpoint", "restart",
            "scaling", "memory", "capacity")


def log(*args) -> None:
    print(*args, file=sys.stderr, flush=True)


def run_sections(names: list[str], a: argparse.Namespace) -> list[Section]:
    found: dict = {}
    done: dict[str, Section] = {}
    beside = None
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if a.quick and {"data", "memory"} <= set(names) and len(cores) >= 2:
        # memory only compiles (nothing in it is timed): --quick runs it on the last core beside the data section,
        # whose measurements pin themselves to the first core.
        beside = concurrent.futures.ThreadPoolExecutor(1).submit(
            run_logged, "memory", lambda: run_section("memory", a, found, {cores[-1]}))
    for name in names:
        if name == "memory" and beside is not None:
            continue
        done[name] = run_logged(name, lambda n=name: run_section(n, a, found))
        if name == "data" and beside is not None:
            done["memory"] = beside.result()
    return [done[n] for n in names]


def run_logged(name: str, fn) -> Section:
    start = time.perf_counter()
    log(f"[{name}]")
    try:
        section = fn()
    except Exception as e:  # one section's failure is reported as such, and the others still run
        log(f"{name} failed: {type(e).__name__}: {e}")
        section = Section(name, name, [Measure(f"{name}: failed", None, "", None,
                                               f"{type(e).__name__}: {str(e).strip().splitlines()[0][:200]}")])
    log(table(section.measures) + f"\n({name}: {time.perf_counter() - start:.0f} s)\n")
    return section


def run_section(name: str, a: argparse.Namespace, found: dict, cores: set[int] | None = None) -> Section:
    """One section; what later sections need from it (the capacity plan's inputs) goes into `found`."""
    if name == "data":
        section, found["data"] = data_pipeline.measure(a.quick, a.movi_sample, a.tf_python, log)
    elif name == "train_vs_original":
        section, found["profile"] = model_speed.run_train_vs_original(a.quick, log)
    elif name == "profile":  # timed in the same rounds as train_vs_original
        section = found.get("profile") or Section("profile", "Where the train step's time goes", [Measure(
            "profile", None, "", None, "needs the section train_vs_original")])
    elif name == "scan":
        section = model_speed.run_scan(a.quick, log)
    elif name == "eval_buffers":
        section = model_speed.run_eval_buffers(a.quick, log)
    elif name == "data_wait":
        section = data_wait.run(a.quick, a.movi_sample, log)
    elif name == "checkpoint":
        section, found["checkpoint"] = checkpoint_io.run(a.quick, log=log)
    elif name == "restart":
        section, found["restart"] = restart.measure(a.quick, log)
    elif name == "scaling":
        section = scaling.run(a.quick, log)
    elif name == "memory":
        section, found["memory"] = memory.run(a.quick, log, cores)
    else:
        section = capacity_section(found)
    return section


def capacity_section(found: dict) -> Section:
    missing = [k for k in ("data", "checkpoint", "restart", "memory") if k not in found]
    if missing:
        return Section("capacity", "Capacity plan", [Measure("capacity plan", None, "", None,
                                                             f"needs the sections {', '.join(missing)}")])
    text = capacity.plan(found["memory"]["flops"], found["data"]["videos_per_core"],
                         found["checkpoint"]["state_bytes"], found["restart"]["restart_warm"])
    return Section("capacity", "Capacity plan: STATM-SAVi++ at batch 64 on H800 nodes",
                   [Measure("capacity plan written", 1.0, "", None)], text)


def tf_environment() -> str | None:
    """.venv-tf's python, built first if it is not (the Makefile's rule); None, said, if it cannot be built."""
    if subprocess.run(["make", "-s", "-q", ".venv-tf/.installed"], cwd=REPO).returncode:
        log("building .venv-tf for the TensorFlow side of the data section (once; not part of any measure)")
        start = time.perf_counter()
        r = subprocess.run(["make", "-s", ".venv-tf/.installed"], cwd=REPO, capture_output=True, text=True)
        if r.returncode:
            log(f".venv-tf could not be built, so the TensorFlow comparison is not measured:\n{r.stderr[-2000:]}")
            return None
        log(f".venv-tf built in {time.perf_counter() - start:.0f} s")
    return os.path.join(REPO, ".venv-tf", "bin", "python")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="every measure at a reduced size (~12 min on 2 cores)")
    p.add_argument("--json", default=None, help="write one object per measure to this file")
    p.add_argument("--only", default=None, help=f"comma-separated sections of {', '.join(SECTIONS)}")
    p.add_argument("--gpu", action="store_true", help="the GPU and checkpoint sections only")
    p.add_argument("--tf_python", default=None, help="python with TensorFlow (default: .venv-tf's, built if absent)")
    p.add_argument("--no_tf", action="store_true", help="skip the TensorFlow comparison (reported as not measured)")
    p.add_argument("--movi_sample", default=os.path.normpath(os.path.join(SHARED, "movi_sample")))
    p.add_argument("--no_write", action="store_true", help="leave BENCHMARKS.md as it is")
    a = p.parse_args()
    names = [n for n in (a.only.split(",") if a.only else SECTIONS) if n]
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        p.error(f"unknown section(s) {', '.join(unknown)}: choose from {', '.join(SECTIONS)}")
    if not a.gpu and {"data", "data_wait"} & set(names) and not os.path.isdir(a.movi_sample):
        p.error(f"MOVi sample not found at {a.movi_sample}: pass --movi_sample DIR or set STATM_SHARED_DIR")
    if not a.gpu and "data" in names and not a.tf_python and not a.no_tf:
        a.tf_python = tf_environment()
    start = time.perf_counter()
    if a.gpu:
        from bench import gpu

        sections = [gpu.run(a.quick, log), checkpoint_io.run(a.quick, log=log)[0]]
    else:
        sections = run_sections(names, a)
    command = "python -m bench " + " ".join(sys.argv[1:])
    host = machine()
    if a.json:
        with open(a.json, "w") as f:
            json.dump([m.as_json(s.name) for s in sections for m in s.measures], f, indent=1)
    if not a.no_write:
        rewrite(os.path.join(REPO, "BENCHMARKS.md"), sections, command.strip(), host)
    missed = [m.name for s in sections for m in s.measures if m.target and not m.met]
    failed = [s.name for s in sections if s.measures and s.measures[0].name.endswith(": failed")]
    print(f"\n{sum(len(s.measures) for s in sections)} measures in {time.perf_counter() - start:.0f} s on {host}; "
          f"targets missed: {len(missed)}" + "".join(f"\n  MISSED: {n}" for n in missed)
          + "".join(f"\n  FAILED (not measured): {n}" for n in failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
