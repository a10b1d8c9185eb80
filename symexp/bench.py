"""The timing protocol of scripts/bench_*.py. Machines are shared and noisy, so a figure is the
minimum wall time over repeats, reported with the process's CPU utilisation (CPU time / wall time)
during that repeat."""
from __future__ import annotations

import time


def min_time(fn, repeats: int, sync=lambda: None) -> tuple[float, float]:
    """(min wall seconds of `fn(); sync()` over `repeats`, CPU utilisation of that best repeat)."""
    best = None
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        sync()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        if best is None or wall < best[0]:
            best = (wall, cpu / wall)
    return best
