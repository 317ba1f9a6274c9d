"""The model's speed, side by side: our train step against the original's form of it, the scan against the
unrolled loop (compile and step), and evaluation with the whole-clip buffer against the sliced one.

"The original" is our model run the original's way: time unrolled in a Python loop and XLA's transposed
convolution (programs.ORIGINAL); tests/test_model.py holds that both compute the same numbers. Step times
alternate between the two programs in one process, round by round, so the shared machine's drift hits both.
Compile times are measured in one fresh process per time loop (run_scan says in which order).
"""

from __future__ import annotations

import functools
import statistics

from bench import child, profile, programs
from bench.programs import alternate
from bench.report import Measure, Section, spread

# (config, resolution, batch, frames) of the side-by-side train steps; ++ runs at half its resolution on CPU
# (one step of the original form at 128x128 takes minutes here).
STEP_SIZES = {False: {"s": (64, 2, 6), "pp": (64, 1, 3)}, True: {"s": (32, 1, 3), "pp": (32, 1, 2)}}
SCAN_SIZE = {False: ("s", 64, 1, 6), True: ("tiny", 16, 2, 2)}  # config, resolution, batch, train frames
EVAL_SIZE = {False: ("s", 64, 2), True: ("tiny", 16, 4)}


def train_vs_original(name: str, resolution: int, batch: int, frames: int, rounds: int,
                      with_lax: bool = True) -> dict:
    """Our default step, the original's form of it, ours with the original's transposed convolution (the
    default before conv_transpose "auto": what the scan alone gives), and our encoder and decoder alone
    (bench/profile.py), all timed in turn."""
    cfgs = {"ours": programs.config(name, resolution),
            "original": programs.config(name, resolution, **programs.ORIGINAL)}
    if with_lax:
        cfgs["ours_lax"] = programs.config(name, resolution, conv_transpose="lax")
    ours = cfgs["ours"]
    # One init for all: the forms share the parameter tree (tests/test_model.py).
    params = functools.cache(lambda: programs.fresh_params(ours, frames))
    builders = {k: (lambda c=c: programs.train_program(c, batch, frames, params=params())) for k, c in cfgs.items()}
    return alternate({**builders, **profile.parts(ours, batch, frames, params)}, rounds)


def compile_and_step(name: str, resolution: int, batch: int, time_loop: str, programs_: list, repeats: int) -> dict:
    """Compile and step time of each (program, frames) in turn, in one process: the first is the process's first
    compile, as in a fresh trainer; those after it find JAX and XLA warmed up (run_scan orders them so that
    this favours no target)."""
    c = programs.config(name, resolution, time_loop=time_loop)
    out = {}
    for program, frames in programs_:
        p = (programs.train_program(c, batch, frames) if program == "train"
             else programs.eval_program(c, batch, frames, slice_size=0))
        compile_s, step_s = p.compile_and_time(repeats)
        out[f"{program} {frames}"] = {"compile_s": compile_s, "step_s": step_s}
    return out


def eval_buffers(name: str, resolution: int, batch: int, frames: int, slice_size: int, rounds: int) -> dict:
    c = programs.config(name, resolution)
    return alternate({"whole": lambda: programs.eval_program(c, batch, frames, 0),
                      "sliced": lambda: programs.eval_program(c, batch, frames, slice_size)}, rounds)


def run_train_vs_original(quick: bool, log=print) -> tuple[Section, Section]:
    """The side-by-side section and, from the same rounds, the profile section."""
    measures, rows = [], ["| config (resolution, batch x frames) | ours s/step | original s/step | ours / original, "
                          "per round | ours with `lax` s/step (before `auto`) | ours / ours with `lax` |",
                          "|---|---|---|---|---|---|"]
    found = {}
    for name, (res, batch, frames) in STEP_SIZES[quick].items():
        log(f"  train step {name} {res}x{res}, batch {batch} x {frames} frames: ours, the original, ours with lax")
        t = child.call("model_speed", "train_vs_original", name, res, batch, frames, 3, not quick)
        found[name] = (res, batch, frames, t)
        ratios = [o / r for o, r in zip(t["ours"], t["original"], strict=True)]
        measures.append(Measure(f"{programs.LABELS[name]} train step, ours / original", statistics.median(ratios),
                                "x", "<= 0.8", f"{res}x{res}, batch {batch} x {frames} frames"))
        lax = t.get("ours_lax")  # not in --quick
        fix = f"{statistics.median(o / r for o, r in zip(t['ours'], lax, strict=True)):.2f}" if lax else "-"
        rows.append(f"| {programs.LABELS[name]} ({res}x{res}, {batch} x {frames}) | {spread(t['ours'])} | "
                    f"{spread(t['original'])} | {', '.join(f'{r:.2f}' for r in ratios)} | "
                    f"{spread(lax) if lax else '-'} | {fix} |")
    return (Section("train_vs_original", "Train step against the original", measures, "\n".join(rows)),
            profile.section(found))


def run_scan(quick: bool, log=print) -> Section:
    name, res, batch, train_frames = SCAN_SIZE[quick]
    repeats = 10 if quick else 2
    r = {}
    # One fresh process per loop. Eval T=24 compiles first in both: the unrolled-against-scan compile ratio
    # compares two cold processes, and the scan's T=24 against T=6 ratio charges the cold start to T=24.
    for loop, progs in (("scan", [("eval", 24), ("eval", 6), ("train", train_frames)]),
                        ("python", [("eval", 24), ("train", train_frames)])):
        log(f"  {loop}: {', '.join(f'{p} T={f}' for p, f in progs)}: compile and step, in one fresh process")
        got = child.call("model_speed", "compile_and_step", name, res, batch, loop, progs, repeats)
        r.update({(loop, p, f): got[f"{p} {f}"] for p, f in progs})
    rows = ["| program | compile s, scan | compile s, unrolled | step s, scan | step s, unrolled |",
            "|---|---|---|---|---|"]
    for program, frames in (("train", train_frames), ("eval", 24)):
        s, u = r["scan", program, frames], r["python", program, frames]
        rows.append(f"| {program} T={frames} | {s['compile_s']:.1f} | {u['compile_s']:.1f} | {s['step_s']:.3g} | "
                    f"{u['step_s']:.3g} |")
    rows.append(f"| eval T=6 | {r['scan', 'eval', 6]['compile_s']:.1f} | | {r['scan', 'eval', 6]['step_s']:.3g} | |")
    size = f"{programs.LABELS[name]}, {res}x{res}, batch {batch}"
    measures = [
        Measure("scan compile, eval T=24 / eval T=6", r["scan", "eval", 24]["compile_s"] /
                r["scan", "eval", 6]["compile_s"], "x", "<= 1.5", size),
        Measure("compile at T=24 (eval), unrolled / scan", r["python", "eval", 24]["compile_s"] /
                r["scan", "eval", 24]["compile_s"], "x", ">= 3", size),
        Measure(f"step time, scan / unrolled (the worse of train T={train_frames} and eval T=24)",
                max(r["scan", k, f]["step_s"] / r["python", k, f]["step_s"]
                    for k, f in (("train", train_frames), ("eval", 24))),
                "x", "<= 1.1", size),
    ]
    return Section("scan", "Scan against the unrolled loop", measures, "\n".join(rows))


def run_eval_buffers(quick: bool, log=print) -> Section:
    name, res, batch = EVAL_SIZE[quick]
    slice_size = 6
    log(f"  eval at 24 frames, whole-clip buffer and slices of {slice_size}, alternating")
    t = child.call("model_speed", "eval_buffers", name, res, batch, 24, slice_size, 5 if quick else 3)
    size = f"{programs.LABELS[name]}, {res}x{res}, batch {batch}, 24 frames"
    whole, sliced = (batch / statistics.median(t[k]) for k in ("whole", "sliced"))
    measures = [Measure("evaluation, whole-clip buffer", whole, "videos/s", None, size),
                Measure(f"evaluation, buffer sliced every {slice_size} frames", sliced, "videos/s", None, size)]
    return Section("eval_buffers", "Evaluation: whole-clip against sliced buffer", measures)
