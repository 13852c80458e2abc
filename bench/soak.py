"""What a soak watches: TaskManager memory (RSS, and how much of it is the Java heap),
native crashes in the logs, and the arithmetic of its audit. The soak itself is a drill,
``rtd drill soak --minutes 60`` (bench/drills/), which samples memory with
``MemorySampler`` during every drill."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import psutil

from bench.resources import pids_from_file
from rtd_core.config import PROJECT_ROOT

CRASH_MARKS = ("Fatal Python error", "SIGSEGV", "# A fatal error has been detected")


@dataclass(frozen=True)
class Audit:
    """One committed output per expected id: what is missing, repeated or unexpected."""

    expected: int
    received: int
    missing: int
    duplicated: int
    unexpected: int

    @property
    def exactly_once(self) -> bool:
        return self.missing == 0 and self.duplicated == 0 and self.unexpected == 0


def audit(expected_ids: Iterable[str], received_ids: Iterable[str]) -> Audit:
    expected = set(expected_ids)
    counts = Counter(received_ids)
    return Audit(
        expected=len(expected),
        received=sum(counts.values()),
        missing=len(expected - counts.keys()),
        duplicated=sum(n - 1 for n in counts.values() if n > 1),
        unexpected=len(counts.keys() - expected),
    )


def per_window_rate(times_ms: Iterable[int], window_s: int) -> list[tuple[float, float]]:
    """(seconds since the first, outputs/s) per ``window_s`` window."""
    ordered = sorted(times_ms)
    if not ordered:
        return []
    first, buckets = ordered[0], Counter()
    for t in ordered:
        buckets[(t - first) // (window_s * 1000)] += 1
    return [(i * window_s, buckets.get(i, 0) / window_s) for i in range(max(buckets) + 1)]


def java_heap_rss(process: psutil.Process) -> int:
    """Resident bytes of the JVM's heap: its largest anonymous mapping (the Java heap is
    reserved as one, -Xmx big; on the TaskManager 1.4 GiB). The rest of the RSS is
    native: RocksDB, the embedded Python interpreter and its objects, metaspace, code,
    thread stacks, network buffers."""
    anonymous = [m for m in process.memory_maps(grouped=False) if m.path in ("", "[anon]")]
    return max((m.rss for m in anonymous if m.size >= 256 * 2**20), default=0)


class MemorySampler:
    """RSS of the TaskManager JVM(s) every few seconds, from their pid files, and how
    much of it is the Java heap."""

    def __init__(self, pid_dir: Path, interval_s: float = 5.0) -> None:
        self.pid_dir, self.interval_s = pid_dir, interval_s
        # (t, RSS MiB, of which Java heap MiB, pids)
        self.samples: list[tuple[float, float, float, list[int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="soak-memory", daemon=True)

    def _loop(self) -> None:
        started = time.monotonic()
        while not self._stop.wait(self.interval_s):
            pids = [p for f in self.pid_dir.glob("flink-*-taskexecutor.pid")
                    for p in pids_from_file(f)]
            rss = heap = 0
            for pid in pids:
                try:
                    process = psutil.Process(pid)
                    rss += process.memory_info().rss
                    heap += java_heap_rss(process)
                except psutil.Error:
                    pass
            self.samples.append((time.monotonic() - started, rss / 2**20, heap / 2**20,
                                 sorted(pids)))

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def crash_lines(log_dir: Path, since_s: float) -> list[str]:
    """Lines of TaskManager logs and JVM crash files written since the run began that
    say a process died in native code."""
    found = []
    for path in [*log_dir.glob("*taskexecutor*"), *PROJECT_ROOT.glob("hs_err_pid*.log"),
                 *log_dir.glob("hs_err_pid*.log")]:
        try:
            if path.stat().st_mtime < since_s:
                continue
            text = path.read_text(errors="replace")
        except OSError:
            continue
        found += [f"{path.name}: {line.strip()}" for line in text.splitlines()
                  if any(mark in line for mark in CRASH_MARKS)]
    return found
