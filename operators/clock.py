"""Wall clock in epoch milliseconds, in one place so stage timings are comparable."""

import time


def now_ms() -> int:
    return time.time_ns() // 1_000_000
