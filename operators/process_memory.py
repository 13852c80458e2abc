"""What the TaskManager process's native memory is made of, read from inside it.

In thread mode the operators run in the TaskManager's JVM, beside RocksDB and the JVM's
own native allocations, which all take their memory from one malloc: jemalloc where the
local stack preloads it (stack/flink_cluster.py, ``flink.allocator``), else glibc's.
Its totals split the process's native memory into what is in use and what the allocator
holds without use (fragmentation, arenas, caches), and the interpreter's block count
tells Python objects from the rest. The soak (bench/drills) samples them beside RSS to
tell a leak from a cache still filling.

The interpreter's cyclic garbage collector stops every Python operator in the process
while it runs (it holds the GIL), so its time is counted here too, from ``gc.callbacks``:
the soak's per-minute correlation can then say whether latency spikes move with it.

glibc's ``mallinfo2`` walks every arena under its lock (jemalloc's ``epoch`` refresh
merges its per-thread statistics): microseconds to a millisecond, so the operators read
them every few seconds, not per record (operators/metric_values.Throttle).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys
import time
from collections.abc import Callable


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]


def _glibc() -> Callable[[], tuple[int, int]] | None:
    try:
        function = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallinfo2
    except (OSError, AttributeError):  # not glibc, or glibc < 2.33
        return None
    function.restype = _MallInfo2
    function.argtypes = []

    def read() -> tuple[int, int]:
        info = function()
        return info.uordblks + info.hblkhd, info.fordblks
    return read


def _jemalloc() -> Callable[[], tuple[int, int]] | None:
    try:
        mallctl = ctypes.CDLL(None).mallctl  # only where jemalloc is loaded
    except (OSError, AttributeError):
        return None
    mallctl.restype = ctypes.c_int
    mallctl.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t),
                        ctypes.c_void_p, ctypes.c_size_t]

    def value(name: bytes) -> int:
        out, size = ctypes.c_size_t(0), ctypes.c_size_t(ctypes.sizeof(ctypes.c_size_t))
        if mallctl(name, ctypes.byref(out), ctypes.byref(size), None, 0) != 0:
            raise OSError(f"mallctl {name!r} failed")
        return out.value

    def read() -> tuple[int, int]:
        epoch = ctypes.c_uint64(1)  # refreshes the statistics read below
        mallctl(b"epoch", None, None, ctypes.byref(epoch), ctypes.sizeof(epoch))
        allocated = value(b"stats.allocated")
        return allocated, max(0, value(b"stats.resident") - allocated)
    return read


_READ = _jemalloc() or _glibc()


class _GcClock:
    """Cumulative time the cyclic collector ran, in all generations and in the oldest
    (a full collection, the long pause). Called under the GIL, so no lock."""

    def __init__(self) -> None:
        self.total_ns = 0
        self.full_ns = 0
        self._started = 0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter_ns()
        elif self._started:
            pause = time.perf_counter_ns() - self._started
            self._started = 0
            self.total_ns += pause
            if info.get("generation") == 2:
                self.full_ns += pause


def _gc_clock() -> _GcClock:
    """The process's one clock: a module imported again (a second operator's import
    path) must not count each collection twice."""
    for callback in gc.callbacks:
        if type(callback).__name__ == _GcClock.__name__:
            return callback
    clock = _GcClock()
    gc.callbacks.append(clock)
    return clock


_GC = _gc_clock()


def native_memory_kib() -> dict[str, int]:
    """The allocator's bytes in use by the process (``malloc_in_use_kib``) and held
    resident without use (``malloc_free_kib``), the interpreter's allocated blocks
    (``python_blocks``) and the microseconds its garbage collector has run since the
    process began (``python_gc_us``, of which full collections ``python_gc_full_us``:
    cumulative, so a reader takes their rise). Where neither jemalloc nor glibc >= 2.33
    is found, the allocator's two are left out."""
    figures = {"python_blocks": sys.getallocatedblocks(),
               "python_gc_us": _GC.total_ns // 1000,
               "python_gc_full_us": _GC.full_ns // 1000}
    if _READ is not None:
        in_use, free = _READ()
        figures["malloc_in_use_kib"] = in_use // 1024
        figures["malloc_free_kib"] = free // 1024
    return figures
