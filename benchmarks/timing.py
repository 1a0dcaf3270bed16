"""What the benchmarks share: the timing loop (warm up, then (median, best) milliseconds per call) and the
table of libraries with the ratio of the first to the second."""
import statistics
import time

import numpy as np


def time_ms(fn, repeat, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3, min(times) * 1e3


def print_table(title, columns, rows, unit_width=9, name_width=34):
    """Print ``title``, then one line per (library name, *figures), then each figure's ratio ours/torch."""
    print(title)
    print(f"{'library':<{name_width}}" + "".join(f"{c:>{unit_width}}" for c in columns))
    for name, *figures in rows:
        print(f"{name:<{name_width}}" + "".join(f"{v:>{unit_width}.2f}" for v in figures))
    if len(rows) == 2:
        ratios = ", ".join(f"{c} {a / b:.2f}x" for c, a, b in zip(columns, rows[0][1:], rows[1][1:]))
        print(f"ratio tinygradnorm/torch: {ratios}")


def aligned(a):
    """A copy of array a on a 64-byte boundary, where torch's tensors and our kernels' outputs start. (A large
    np.empty starts 16 bytes past a page boundary; a compiled loop reading it runs some 10% slower.)"""
    raw = np.empty(a.nbytes + 64, np.uint8)
    offset = -raw.ctypes.data % 64
    out = raw[offset:offset + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out
