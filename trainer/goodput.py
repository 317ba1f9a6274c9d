"""python -m trainer.goodput WORKDIR [--json]: where a run's wall time went, across all its restarts.

Reads WORKDIR/events.jsonl (trainer/events.py), and every process's input telemetry (trainer/telemetry.py) to
name the slowest host. Each attempt's phases tile its time from process start to its
last event; what lies between one attempt's last event and the next one's start (the scheduler's restart, and
whatever a `kill -9` cut short) is "down". Training time is productive when its steps reached a checkpoint that
a later attempt resumed from (or the run's end); the steps past the step the next attempt restored were redone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from trainer import exits, telemetry
from trainer.events import FILENAME

# The report's parts, in print order: (key, label).
PARTS = (("productive", "productive training steps"),
         ("startup", "start-up and compile (to the first step)"),
         ("restore", "checkpoint restore"),
         ("save", "checkpoint saves (blocking part)"),
         ("eval", "evaluation"),
         ("redone", "steps redone after an interruption"),
         ("shutdown", "shutdown (waiting for saves, closing)"),
         ("down", "between attempts (restart, time cut off by a kill)"))


@dataclasses.dataclass
class Attempt:
    start: float
    events: list[dict]
    resumed_from: int  # the step it restored (0: a fresh start; -1: it never got that far)
    exit_code: int | None  # None: killed (no exit event)
    id: str = ""

    @property
    def end(self) -> float:
        return self.events[-1]["t"] if self.events else self.start

    def first_step_after(self) -> float | None:
        for e in self.events:
            if e["event"] == "first_step":
                return e["t"] - self.start
        return None


def read_events(workdir: str) -> list[dict]:
    path = os.path.join(workdir, FILENAME)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no event log at {path}: pass the --workdir of a training run")
    rows = []
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by a kill
    return rows


def split_attempts(rows: list[dict]) -> list[Attempt]:
    """Attempts in start order; each row joins the attempt of its id."""
    attempts: dict[str, Attempt] = {}
    for row in rows:
        if row["event"] == "start":
            attempts[row["attempt"]] = Attempt(row["t"], [], -1, None, row["attempt"])
            continue
        a = attempts.get(row["attempt"])
        if a is None:
            continue  # its start line was lost
        a.events.append(row)
        if row["event"] in ("restore", "initialise"):
            a.resumed_from = int(row["step"])
        elif row["event"] == "exit":
            a.exit_code = int(row["code"])
    return sorted(attempts.values(), key=lambda a: a.start)


def stalled_attempts(rows: list[dict], current: str, resumed_from: int | None) -> int:
    """Attempts in a row before `current` (newest first) that ended with a filesystem error without getting past
    `resumed_from`: they resumed from that step too, or failed before restoring anything."""
    count, same = 0, {-1, resumed_from}  # -1: it failed before restoring anything
    for a in reversed([a for a in split_attempts(rows) if a.id != current]):
        if a.exit_code != exits.FILESYSTEM or a.resumed_from not in same:
            break
        count += 1
    return count


def train_seconds(attempt: Attempt, upto: int | None) -> tuple[float, float]:
    """(seconds of steps <= upto, seconds of steps after it) in the attempt's step phases; a phase that spans
    `upto` is split by its share of steps."""
    kept = lost = 0.0
    prev = attempt.resumed_from
    for e in attempt.events:
        if e["event"] not in ("first_step", "train"):
            continue
        lo, hi, sec = prev, int(e["step"]), float(e["seconds"])
        prev = hi
        if e["event"] == "first_step":  # start-up's part; only the step range advances
            continue
        if upto is None or hi <= upto:
            kept += sec
        elif lo >= upto:
            lost += sec
        else:
            kept += sec * (upto - lo) / (hi - lo)
            lost += sec * (hi - upto) / (hi - lo)
    return kept, lost


def account(attempts: list[Attempt]) -> dict:
    parts = {k: 0.0 for k, _ in PARTS}
    for i, a in enumerate(attempts):
        nxt = attempts[i + 1] if i + 1 < len(attempts) else None
        upto = nxt.resumed_from if nxt is not None and nxt.resumed_from >= 0 else None  # None: all kept
        kept, lost = train_seconds(a, upto)
        parts["productive"] += kept
        parts["redone"] += lost
        for e in a.events:
            kind = e["event"]
            if kind in ("startup", "first_step", "initialise"):
                parts["startup"] += e["seconds"]
            elif kind in ("restore", "save", "eval", "shutdown"):
                parts[kind] += e["seconds"]
        if nxt is not None:
            parts["down"] += nxt.start - a.end
    wall = attempts[-1].end - attempts[0].start if attempts else 0.0
    return {"wall": wall, "parts": parts, "accounted": sum(parts.values()),
            "goodput": parts["productive"] / wall if wall > 0 else 0.0,
            "gave_up": sum(a.exit_code == exits.GAVE_UP for a in attempts),
            "attempts": [{"resumed_from": a.resumed_from, "exit_code": a.exit_code,
                          "to_first_step": a.first_step_after(), "seconds": a.end - a.start} for a in attempts]}


def report(workdir: str) -> dict:
    attempts = split_attempts(read_events(workdir))
    if not attempts:
        raise ValueError(f"{os.path.join(workdir, FILENAME)} holds no attempt")
    return {**account(attempts), "input": telemetry.summary(telemetry.read(workdir))}


def format_report(r: dict) -> str:
    wall = max(r["wall"], 1e-9)
    lines = [f"total wall time {r['wall']:.1f} s over {len(r['attempts'])} attempt(s); "
             f"goodput {100 * r['goodput']:.1f}%"]
    for key, label in PARTS:
        lines.append(f"  {label:<52} {r['parts'][key]:10.1f} s  {100 * r['parts'][key] / wall:5.1f}%")
    lines.append(f"  {'sum of the parts':<52} {r['accounted']:10.1f} s  {100 * r['accounted'] / wall:5.1f}%")
    if r.get("gave_up"):
        lines.append(f"the run gave up {r['gave_up']} time(s): attempts kept failing on the filesystem without "
                     "progress")
    lines.append("attempts (resumed from step; exit code, - for killed; seconds to the first step; length):")
    for i, a in enumerate(r["attempts"]):
        first = "-" if a["to_first_step"] is None else f"{a['to_first_step']:.1f} s"
        code = "-" if a["exit_code"] is None else f"{a['exit_code']} ({exits.name(a['exit_code'])})"
        lines.append(f"  {i + 1:3d}. from step {a['resumed_from']:>6}; exit {code}; first step after {first}; "
                     f"{a['seconds']:.1f} s")
    return "\n".join(lines + telemetry.format_summary(r.get("input", {"processes": []})))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("workdir")
    p.add_argument("--json", action="store_true", help="print the numbers as JSON")
    a = p.parse_args(argv)
    try:
        r = report(os.path.abspath(a.workdir))
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(r, indent=1) if a.json else format_report(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
