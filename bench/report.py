"""What a measure returns, how it is judged against its target, and how BENCHMARKS.md's tables are rewritten.

A measure is one number with a unit and, where the suite sets one, a target ("<= 0.8", ">= 2.5"). A target
that is missed is reported as missed; a measure that could not run here has value None and met False, with
the reason in its note. BENCHMARKS.md holds one generated block per section between
`<!-- bench:NAME -->` and `<!-- /bench:NAME -->`; the prose around the blocks is written by hand.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import re
import statistics
from collections.abc import Sequence


@dataclasses.dataclass
class Measure:
    name: str
    value: float | None
    unit: str
    target: str | None = None  # "<= 0.8", ">= 3", or None: reported, not judged
    note: str = ""

    @property
    def met(self) -> bool:
        if self.value is None:
            return False
        if self.target is None:
            return True
        op, bound = self.target.split()
        return self.value <= float(bound) if op == "<=" else self.value >= float(bound)

    def as_json(self, section: str) -> dict:
        return {"name": self.name, "section": section, "value": self.value, "unit": self.unit,
                "target": self.target, "met": self.met, "note": self.note}


@dataclasses.dataclass
class Section:
    """One table of BENCHMARKS.md: its measures (judged, in the JSON) and any extra Markdown (detail rows)."""

    name: str
    title: str
    measures: list[Measure]
    markdown: str = ""  # more tables under the measures (memory, capacity plan, rounds)


def spread(values: Sequence[float]) -> str:
    """'median (min-max, n rounds)' for a list of per-round values."""
    return (f"{statistics.median(values):.3g} ({min(values):.3g}-{max(values):.3g}, {len(values)} rounds)"
            if len(values) > 1 else f"{values[0]:.3g}")


def fmt(value: float | None) -> str:
    if value is None:
        return "not measured"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.3g}"


def table(measures: Sequence[Measure]) -> str:
    rows = ["| measure | value | unit | target | |", "|---|---|---|---|---|"]
    for m in measures:
        verdict = ("**not measured**" if m.value is None else "reported" if m.target is None
                   else "met" if m.met else "**MISSED**")
        note = f" ({m.note})" if m.note else ""
        rows.append(f"| {m.name}{note} | {fmt(m.value)} | {m.unit} | {m.target or '-'} | {verdict} |")
    return "\n".join(rows)


def machine() -> str:
    """CPU model and count (or the accelerator), and the JAX version: printed with every table."""
    import jax

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    device = jax.devices()[0]
    accel = "" if device.platform == "cpu" else f", {jax.device_count()} x {device.device_kind}"
    return f"{cpu} x {os.cpu_count()} cores{accel}, JAX {jax.__version__}"


def block(section: Section, command: str, host: str) -> str:
    today = datetime.date.today().isoformat()
    parts = [f"_{today}, {host}: `{command}`_", "", table(section.measures)]
    if section.markdown:
        parts += ["", section.markdown]
    return "\n".join(parts)


def rewrite(path: str, sections: Sequence[Section], command: str, host: str) -> list[str]:
    """Replaces each section's generated block in the file (appending a new section at the end); returns the
    names it wrote. The hand-written text between blocks is kept."""
    text = open(path).read() if os.path.exists(path) else "# Benchmarks\n"
    for s in sections:
        body = f"<!-- bench:{s.name} -->\n{block(s, command, host)}\n<!-- /bench:{s.name} -->"
        pattern = re.compile(rf"<!-- bench:{re.escape(s.name)} -->.*?<!-- /bench:{re.escape(s.name)} -->", re.S)
        if pattern.search(text):
            text = pattern.sub(lambda _, body=body: body, text)
        else:
            text = text.rstrip("\n") + f"\n\n## {s.title}\n\n{body}\n"
    with open(path, "w") as f:
        f.write(text)
    return [s.name for s in sections]
