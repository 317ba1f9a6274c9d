"""glibc malloc settings for a process that builds multi-MB frames per video.

Each train clip allocates a few MB of fresh arrays and frees them after batching. With glibc's defaults the
freed top of the heap is trimmed back to the OS and every new clip page-faults its memory in again. Raising
the trim and mmap thresholds keeps that memory mapped for reuse; the cost is that the process keeps its peak
heap (bounded by prefetch). bench/data_pipeline.py measures the chain with these settings, as the trainer runs
it (BENCHMARKS.md, "Input pipeline"); the suite keeps no run without them.

Called once when a train iterator is set up (datasets.train_iterator), never per element. Grain's workers are
spawned processes: glibc reads MALLOC_TRIM_THRESHOLD_ / MALLOC_MMAP_THRESHOLD_ when a process starts, so the
same settings are exported to the environment that they inherit. A value the user already set is kept.
No-op off glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


@functools.cache
def keep_freed_memory(trim_threshold: int = 1 << 30, mmap_threshold: int = 32 << 20) -> bool:
    """Applies the thresholds to this process and to the processes it starts; returns whether glibc accepted
    them here."""
    os.environ.setdefault("MALLOC_TRIM_THRESHOLD_", str(trim_threshold))
    os.environ.setdefault("MALLOC_MMAP_THRESHOLD_", str(mmap_threshold))
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold)) and bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold))
