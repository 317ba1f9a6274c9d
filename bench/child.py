"""Run one measurement function in a fresh Python process (no compile cache, allocator or thread state carried
over from what ran before) and return its JSON result."""

from __future__ import annotations

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def call(module: str, fn: str, *args, env: dict | None = None, timeout: float | None = None,
         cores: set[int] | None = None):
    """`cores`: run the process on these CPU cores only (a section that runs beside another keeps off its core)."""
    code = (f"import json, sys; from bench import {module} as m; "
            f"print('RESULT ' + json.dumps(m.{fn}(*json.loads(sys.argv[1]))))")
    pin = (lambda: os.sched_setaffinity(0, cores)) if cores and hasattr(os, "sched_setaffinity") else None
    r = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, **(env or {})}, timeout=timeout, preexec_fn=pin)
    lines = [line for line in r.stdout.splitlines() if line.startswith("RESULT ")]
    if r.returncode or not lines:
        raise RuntimeError(f"bench.{module}.{fn}{tuple(args)} failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])
