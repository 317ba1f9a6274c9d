"""The end-of-run report: the model against the static-box baseline and the untrained model."""

from __future__ import annotations

import os


def report(result: dict, workdir: str) -> str:
    final, initial = result["final"], result.get("initial")
    rows = [(f"model (step {result['step']})", final.get("fg_ari"), final.get("ari"), final.get("miou")),
            ("static first-frame boxes", final.get("static_box_fg_ari"), final.get("static_box_ari"),
             final.get("static_box_miou"))]
    if initial:
        rows.append(("untrained model (step 0)", initial.get("fg_ari"), initial.get("ari"), initial.get("miou")))
    fmt = lambda v: "   -  " if v is None else f"{100 * v:6.2f}"
    lines = [f"validation ({final.get('num_videos', 0)} videos, all frames)    FG-ARI    ARI   mIoU",
             *(f"  {name:<38s}{fmt(f)} {fmt(a)} {fmt(m)}" for name, f, a, m in rows)]
    margin = final.get("fg_ari", 0) - final.get("static_box_fg_ari", 0)
    lines.append(f"  FG-ARI gain over the static-box baseline: {100 * margin:+.2f} points")
    workdir = os.path.abspath(workdir)
    lines.append(f"TensorBoard: tensorboard --logdir {os.path.join(workdir, 'tensorboard')}")
    lines.append(f"pictures (PNG grids and GIFs): {os.path.join(workdir, 'pictures')}; "
                 f"metrics: {os.path.join(workdir, 'metrics.jsonl')}")
    return "\n".join(lines)
