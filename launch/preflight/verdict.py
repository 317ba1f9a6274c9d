"""The preflight's one table: a row per check, pass or fail, with the figure it measured."""

from __future__ import annotations

import dataclasses
import json
import os


@dataclasses.dataclass(frozen=True)
class Row:
    check: str
    ok: bool
    figure: str  # what was measured, with its unit
    detail: str = ""  # what failed and the fix, or what the figure is compared with

    def line(self) -> str:
        return f"| {self.check} | {'pass' if self.ok else 'FAIL'} | {self.figure} | {self.detail} |"


def table(rows: list[Row]) -> str:
    head = ["| check | verdict | measured | detail |", "|---|---|---|---|"]
    failed = [r for r in rows if not r.ok]
    tail = f"\npreflight: {len(rows) - len(failed)} of {len(rows)} checks passed" + (
        f"; failed: {', '.join(r.check for r in failed)}" if failed else "")
    return "\n".join(head + [r.line() for r in rows]) + tail


def write(path: str, rows: list[Row]) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump([dataclasses.asdict(r) for r in rows], f, indent=1)
    os.replace(path + ".tmp", path)


def read(path: str) -> list[Row]:
    with open(path) as f:
        return [Row(**r) for r in json.load(f)]
