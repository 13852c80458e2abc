"""The native-memory figures the feature operator publishes, and the allocator the
local stack's Flink processes start with."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from operators.process_memory import native_memory_kib
from rtd_core.config import load_config
from stack.flink_cluster import JEMALLOC, allocator_env


def test_glibc_figures_follow_what_the_process_allocates() -> None:
    before = native_memory_kib()
    assert {"python_blocks", "malloc_in_use_kib", "malloc_free_kib"} <= before.keys()
    held = [bytearray(1 << 20) for _ in range(64)]  # 64 MiB through malloc
    during = native_memory_kib()
    assert during["malloc_in_use_kib"] - before["malloc_in_use_kib"] >= 60 * 1024
    del held
    assert native_memory_kib()["malloc_in_use_kib"] < during["malloc_in_use_kib"]


def test_garbage_collection_time_is_counted_once_per_collection() -> None:
    import gc
    import importlib

    import operators.process_memory as module

    before = native_memory_kib()
    cycles = []
    for _ in range(200_000):  # enough cyclic garbage for a full collection to take time
        a: list = []
        a.append(a)
        cycles.append(a)
    del cycles
    gc.collect(2)
    after = native_memory_kib()
    assert after["python_gc_full_us"] > before["python_gc_full_us"]
    assert after["python_gc_us"] - before["python_gc_us"] >= (
        after["python_gc_full_us"] - before["python_gc_full_us"])
    importlib.reload(module)  # a second import must not add a second clock
    assert sum(type(c).__name__ == "_GcClock" for c in gc.callbacks) == 1


@pytest.mark.skipif(not JEMALLOC.exists(), reason="Debian's libjemalloc2 is not installed")
def test_jemalloc_figures_are_read_from_jemalloc_when_it_is_preloaded() -> None:
    script = ("from operators.process_memory import native_memory_kib, _READ\n"
              "held = [bytearray(1 << 20) for _ in range(64)]\n"
              "print(_READ.__qualname__.split('.')[0], native_memory_kib()['malloc_in_use_kib'])")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, env={**os.environ, "LD_PRELOAD": str(JEMALLOC)})
    reader, in_use = out.stdout.split()
    assert reader == "_jemalloc"
    assert int(in_use) >= 64 * 1024


def test_allocator_env(tmp_path) -> None:
    default = load_config(None)
    assert allocator_env(default) == {}  # glibc, as it comes
    capped = default.model_copy(update={"flink": default.flink.model_copy(
        update={"glibc_arena_max": 2})})
    assert allocator_env(capped) == {"MALLOC_ARENA_MAX": "2"}
    drill = load_config("bench/drill-stack.json")
    assert drill.flink.allocator == "jemalloc"
    expected = {"LD_PRELOAD": str(JEMALLOC)} if JEMALLOC.exists() else {}
    assert allocator_env(drill) == expected
