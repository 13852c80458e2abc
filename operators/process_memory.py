"""What the TaskManager process's native memory is made of, read from inside it.

In thread mode the operators run in the TaskManager's JVM, beside RocksDB and the JVM's
own native allocations, which all take their memory from one malloc: jemalloc where the
local stack preloads it (stack/flink_cluster.py, ``flink.allocator``), else glibc's.
Its totals split the process's native memory into what is in use and what the allocator
holds without use (fragmentation, arenas, caches), and the interpreter's block count
tells Python objects from the rest. The soak (bench/drills) samples them beside RSS to
tell a leak from a cache still filling.

glibc's ``mallinfo2`` walks every arena under its lock (jemalloc's ``epoch`` refresh
merges its per-thread statistics): microseconds to a millisecond, so the operators read
them every few seconds, not per record (operators/metric_values.Throttle).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
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


def native_memory_kib() -> dict[str, int]:
    """The allocator's bytes in use by the process (``malloc_in_use_kib``) and held
    resident without use (``malloc_free_kib``), and the interpreter's allocated blocks
    (``python_blocks``). Where neither jemalloc nor glibc >= 2.33 is found, only the
    last."""
    figures = {"python_blocks": sys.getallocatedblocks()}
    if _READ is not None:
        in_use, free = _READ()
        figures["malloc_in_use_kib"] = in_use // 1024
        figures["malloc_free_kib"] = free // 1024
    return figures
