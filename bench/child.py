"""Run one measurement function in a fresh Python process (no compile cache, allocator or thread state carried
over from what ran before) and return its JSON result."""

from __future__ import annotations

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def call(module: str, fn: str, *args, env: dict | None = None, timeout: float | None = None):
    code = (f"import json, sys; from bench import {module} as m; "
            f"print('RESULT ' + json.dumps(m.{fn}(*json.loads(sys.argv[1]))))")
    r = subprocess.run([sys.executable, "-c", code, json.dumps(args)], capture_output=True, text=True, cwd=REPO,
                       env={**os.environ, **(env or {})}, timeout=timeout)
    lines = [line for line in r.stdout.splitlines() if line.startswith("RESULT ")]
    if r.returncode or not lines:
        raise RuntimeError(f"bench.{module}.{fn}{tuple(args)} failed (exit {r.returncode}):\n{r.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])
