"""glibc malloc settings for a process that builds multi-MB frames per video.

Each train clip allocates ~5 MB of fresh arrays and frees them after batching. With glibc's defaults the
freed top of the heap is trimmed back to the OS and every new clip page-faults its memory in again:
~2.5 ms of a ~6 ms clip on a 2-core machine (BENCHMARKS.md). Raising the trim and mmap thresholds keeps
that memory mapped for reuse; the cost is that the process keeps its peak heap (bounded by prefetch).
Same effect as MALLOC_TRIM_THRESHOLD_ / MALLOC_MMAP_THRESHOLD_ in the environment; no-op off glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


@functools.cache
def keep_freed_memory(trim_threshold: int = 1 << 30, mmap_threshold: int = 32 << 20) -> bool:
    """Applies the thresholds once per process; returns whether glibc accepted them."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold)) and bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold))
