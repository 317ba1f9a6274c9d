"""The end-of-run report: the model against the static-box baseline and the untrained model, the margins on
every metric, and the picture to open first."""

from __future__ import annotations

import os

METRICS = ("fg_ari", "ari", "miou")


def floor_verdict(alpha: float, even: float) -> str:
    """Where the background slot and its copies stand on the floor (trainer.metrics.floor_alpha): `alpha` on a
    scale from an even split over the slots (0) to all of it (1); owning means past halfway."""
    held = (alpha - even) / max(1.0 - even, 1e-9)
    if held >= 0.5:
        return "the background slot owns the floor"
    if held <= 0.25:
        return ("nobody owns the floor: every slot paints it alike, and the argmax hands floor pixels to object "
                "slots, which costs ARI and mIoU (FG-ARI leaves the floor out)")
    return "the background slot holds part of the floor"


def floor_line(alpha: float | None, even: float | None) -> str | None:
    if alpha is None or even is None:
        return None
    return (f"  the floor's alpha on the background slot and its copies: {alpha:.3f} (an even split over the slots: "
            f"{even:.3f}): {floor_verdict(alpha, even)}")


def report(result: dict, workdir: str) -> str:
    final, initial = result["final"], result.get("initial")
    rows = [(f"model (step {result['step']})", [final.get(k) for k in METRICS]),
            ("static first-frame boxes", [final.get(f"static_box_{k}") for k in METRICS])]
    if initial:
        rows.append(("untrained model (step 0)", [initial.get(k) for k in METRICS]))
    fmt = lambda v: "   -  " if v is None else f"{100 * v:6.2f}"
    lines = [f"validation ({final.get('num_videos', 0)} videos, all frames)    FG-ARI    ARI   mIoU",
             *(f"  {name:<38s}{' '.join(fmt(v) for v in values)}" for name, values in rows)]
    margins = [None if m is None or b is None else m - b for m, b in zip(rows[0][1], rows[1][1], strict=True)]
    lines.append(f"  {'model - static boxes (points)':<38s}" + " ".join(
        "   -  " if d is None else f"{100 * d:+6.2f}" for d in margins))
    floor = floor_line(final.get("floor_alpha"), final.get("floor_even_split"))
    if floor:
        lines.append(floor)
    workdir = os.path.abspath(workdir)
    picture = os.path.join(workdir, "pictures", f"step{result['step']:07d}_video0.png")
    if os.path.exists(picture):
        lines.append(f"open first: {picture} (one validation video, every frame: the input, the true objects, "
                     "each pixel's slot, the slot masks, the target and its reconstruction)")
    lines.append(f"TensorBoard: tensorboard --logdir {os.path.join(workdir, 'tensorboard')}")
    lines.append(f"pictures (PNG grids and GIFs): {os.path.join(workdir, 'pictures')}; "
                 f"metrics: {os.path.join(workdir, 'metrics.jsonl')}")
    return "\n".join(lines)
