"""Per-process input telemetry: each process's own data-wait share and videos/s, and which host is slowest.

Every process steps in lockstep with the others, so the host whose input pipeline is slowest bounds every step;
it shows as the host whose processes wait longest for their batches. Each process appends one line per log
step to WORKDIR/telemetry/process-N.jsonl, its own file (no two processes append to one file on a shared
filesystem): {"t", "step", "process", "host", "data_wait_share", "videos_per_sec"}. `python -m trainer.goodput`
reads them back and names the slowest host; `launch.preflight` judges its input check with the same records
and the same per-host sums (`hosts`).
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import socket
import time

from trainer.lease import append_alone

DIRNAME = "telemetry"


def record(step: int, process: int, data_wait_share: float, videos_per_sec: float,
           host: str | None = None) -> dict:
    """One measurement of one process: the share of the interval it waited for input, and the videos it read
    per second over the interval."""
    return {"t": round(time.time(), 3), "step": int(step), "process": int(process),
            "host": host or socket.gethostname(), "data_wait_share": round(float(data_wait_share), 4),
            "videos_per_sec": round(float(videos_per_sec), 3)}


class TelemetryLog:
    """This process's lines. A write that fails (a full disk) costs that line and one warning, never the run."""

    def __init__(self, workdir: str, process: int):
        self.path = os.path.join(workdir, DIRNAME, f"process-{process}.jsonl")
        self._f = None
        self._warned = False

    def write(self, line: dict) -> None:
        try:
            if self._f is None:
                os.makedirs(os.path.dirname(self.path), exist_ok=True)
                self._f = append_alone(self.path)  # no earlier run's process still appends to it
            self._f.write(json.dumps(line) + "\n")
            self._f.flush()
        except OSError as e:
            if not self._warned:
                print(f"warning: cannot write {self.path} ({e.strerror or e}); input telemetry lines are lost "
                      "until it can", flush=True)
                self._warned = True

    def close(self) -> None:
        if self._f is not None:
            try:
                self._f.close()
            except OSError:
                pass
            self._f = None


def read(workdir: str) -> list[dict]:
    """Every process's lines; a line cut short by a kill is skipped."""
    out = []
    for path in sorted(glob.glob(os.path.join(workdir, DIRNAME, "process-*.jsonl"))):
        with open(path) as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    return out


@dataclasses.dataclass
class Input:
    name: str  # a host, or "host process N"
    processes: int
    videos_per_sec: float  # the sum over its processes (each one's mean over its lines)
    data_wait_share: float  # the mean over its processes


def _slowest_first(groups: dict[str, list[tuple[float, float]]]) -> list[Input]:
    out = [Input(k, len(v), sum(x[0] for x in v), sum(x[1] for x in v) / len(v)) for k, v in groups.items()]
    return sorted(out, key=lambda i: (-i.data_wait_share, i.videos_per_sec))


def _per_process(records: list[dict]) -> dict[tuple[str, int], tuple[float, float]]:
    rows: dict[tuple[str, int], list[dict]] = {}
    for r in records:
        rows.setdefault((r["host"], r["process"]), []).append(r)
    return {k: (sum(r["videos_per_sec"] for r in v) / len(v), sum(r["data_wait_share"] for r in v) / len(v))
            for k, v in rows.items()}


def hosts(records: list[dict]) -> list[Input]:
    """Per host, slowest first: the longest wait for input, then the fewest videos per second."""
    groups: dict[str, list[tuple[float, float]]] = {}
    for (host, _), means in _per_process(records).items():
        groups.setdefault(host, []).append(means)
    return _slowest_first(groups)


def processes(records: list[dict]) -> list[Input]:
    """Per process, slowest first."""
    return _slowest_first({f"{host} process {i}": [m] for (host, i), m in _per_process(records).items()})


def summary(records: list[dict]) -> dict:
    """{"hosts": [...], "processes": [...]}, each slowest first, as plain dicts (the goodput report's JSON)."""
    return {"hosts": [dataclasses.asdict(x) for x in hosts(records)],
            "processes": [dataclasses.asdict(x) for x in processes(records)]}


def format_summary(found: dict) -> list[str]:
    """The goodput report's input section."""
    if not found["processes"]:
        return []
    lines = ["input (data-wait share and videos/s, mean over log steps; slowest first):"]
    for title, rows in (("host", found["hosts"]), ("process", found["processes"])):
        for i, x in enumerate(rows):
            mark = f"  <- slowest {title}" if i == 0 and len(rows) > 1 else ""
            lines.append(f"  {x['name']:<40} data wait {100 * x['data_wait_share']:5.1f}%  "
                         f"{x['videos_per_sec']:10.1f} videos/s{mark}")
    return lines
