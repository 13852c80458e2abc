"""CPU and memory per process group, sampled once a second with psutil.

CPU is in percent of one core (200 = both cores of this machine busy), as psutil and
top report it; memory is resident set size. The machine is shared: ``machine`` is the
whole machine's CPU, so a reader can see how much of it was someone else's.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self

import psutil

LOAD_GROUP = "load-average-1m"  # its "cpu" figure is the 1-minute load average
# group name -> the processes in it right now
Groups = Callable[[], dict[str, list[int]]]


def pids_from_file(path: Path) -> list[int]:
    """The live pids a pid file names (Flink's daemon scripts append one line per start)."""
    try:
        words = path.read_text().split()
    except OSError:
        return []
    return [int(w) for w in words if w.isdigit() and psutil.pid_exists(int(w))]


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def stack_groups(stack_run_dir: Path, job_started_s: float | None) -> dict[str, list[int]]:
    """The local stack's processes; Flink's Python workers split into this run's job
    (started after it was submitted) and other jobs' (the TaskManager is shared)."""
    groups: dict[str, list[int]] = {}
    for name, pattern in (("kafka", "kafka.pid"), ("model-server", "model-server.pid"),
                          ("flink-jobmanager", "flink-*-standalonesession.pid"),
                          ("flink-taskmanager", "flink-*-taskexecutor.pid")):
        pids = [p for f in stack_run_dir.glob(pattern) for p in pids_from_file(f)]
        groups[name] = pids
    workers_ours: list[int] = []
    workers_other: list[int] = []
    for tm in groups.get("flink-taskmanager", []):
        for child in descendants(tm):
            try:
                created = child.create_time()
            except psutil.Error:
                continue
            if job_started_s is not None and created >= job_started_s - 1:
                workers_ours.append(child.pid)
            else:
                workers_other.append(child.pid)
    if job_started_s is not None:
        groups["flink-python-workers"] = workers_ours
    groups["other-jobs-python-workers"] = workers_other
    return groups


# What a TaskManager's threads do, by the name the JVM (or RocksDB) gives them: its
# background compactions and flushes ("rocksdb:low", "rocksdb:high") share the machine's
# two cores with the task threads that run the job's Python (named after their
# operators), so a process's CPU alone cannot tell them apart.
THREAD_CLASSES = (("rocksdb", ("rocksdb:",)),
                  ("jvm gc and compiler", ("GC Thread", "G1 ", "C1 Compiler", "C2 Compiler",
                                           "VM Thread", "VM Periodic")),
                  ("kafka clients", ("kafka-producer", "kafka-coordinator", "Source Data Fet")))
# Flink names a task thread after its chain's first operator, cut to 15 characters.
TASK_THREAD = "task"


def thread_class(name: str) -> str:
    """The class of a thread of a TaskManager, by its name (/proc/<pid>/task/<tid>/comm)."""
    for label, prefixes in THREAD_CLASSES:
        if name.startswith(prefixes):
            return label
    if name.startswith(("Features, scori", "Source: ")) or " -> " in name:
        return f"{TASK_THREAD} {name}"
    return "other"


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """CPU seconds (user + system) so far of each thread class of a process."""
    ticks = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            name = Path(f"/proc/{pid}/task/{tid}/comm").read_text().strip()
            fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # the thread ended meanwhile
        label = thread_class(name)
        out[label] = out.get(label, 0.0) + (int(fields[11]) + int(fields[12])) / ticks
    return out


class ResourceSampler:
    def __init__(self, groups: Groups, interval_s: float = 1.0,
                 threads_of: Callable[[], list[int]] | None = None) -> None:
        """``threads_of``: processes whose threads are also sampled by class
        (``thread_class``), as groups named ``threads: <class>``."""
        self.groups = groups
        self.interval_s = interval_s
        self.threads_of = threads_of
        self._thread_seconds: dict[tuple[int, str], float] = {}
        self._thread_at = time.monotonic()
        # (epoch ms, group, cpu % of one core, rss bytes)
        self.samples: list[tuple[int, str, float, int]] = []
        self._procs: dict[int, psutil.Process] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="resource-sampler", daemon=True)
        psutil.cpu_percent(None)

    def _proc(self, pid: int) -> psutil.Process | None:
        proc = self._procs.get(pid)
        if proc is None:
            try:
                proc = self._procs[pid] = psutil.Process(pid)
                proc.cpu_percent(None)  # the first call only starts the measurement
            except psutil.Error:
                return None
        return proc

    def sample(self) -> None:
        now = time.time_ns() // 1_000_000
        known = 0.0
        for group, pids in self.groups().items():
            cpu, rss = 0.0, 0
            for pid in pids:
                proc = self._proc(pid)
                if proc is None:
                    continue
                try:
                    cpu += proc.cpu_percent(None)
                    rss += proc.memory_info().rss
                except psutil.Error:
                    self._procs.pop(pid, None)
            known += cpu
            self.samples.append((now, group, cpu, rss))
        machine = psutil.cpu_percent(None) * psutil.cpu_count()
        self.samples.append((now, "machine", machine, psutil.virtual_memory().used))
        # Whatever ran besides the stack, the system under test and the benchmark itself:
        # other people's work on a shared machine.
        self.samples.append((now, "others", max(machine - known, 0.0), 0))
        # Runnable processes, averaged over a minute: above 2 the two cores are oversold.
        self.samples.append((now, LOAD_GROUP, os.getloadavg()[0], 0))
        if self.threads_of is not None:
            self._sample_threads(now)

    def _sample_threads(self, now: int) -> None:
        """Per thread class: % of a core since the previous sample (a thread that ended
        in between takes its last seconds with it: a slight undercount)."""
        at = time.monotonic()
        span = max(at - self._thread_at, 1e-3)
        seconds: dict[tuple[int, str], float] = {}
        for pid in self.threads_of():
            for label, used in thread_cpu_seconds(pid).items():
                seconds[(pid, label)] = used
        per: dict[str, float] = {}
        for key, used in seconds.items():
            before = self._thread_seconds.get(key)
            if before is not None:
                per[key[1]] = per.get(key[1], 0.0) + max(used - before, 0.0) / span * 100
        for label, cpu in sorted(per.items()):
            self.samples.append((now, f"threads: {label}", cpu, 0))
        self._thread_seconds, self._thread_at = seconds, at

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def summarize_resources(samples: list[tuple[int, str, float, int]], start_ms: int,
                        end_ms: int) -> dict[str, dict[str, Any]]:
    """Per group within [start_ms, end_ms): mean CPU (% of a core) and peak RSS (MiB)."""
    per: dict[str, tuple[list[float], list[int]]] = {}
    for at, group, cpu, rss in samples:
        if start_ms <= at < end_ms:
            cpus, rsss = per.setdefault(group, ([], []))
            cpus.append(cpu)
            rsss.append(rss)
    return {
        group: {"cpu_pct_mean": round(statistics.fmean(cpus), 1),
                "rss_mib_max": round(max(rsss) / 2**20, 1)}
        for group, (cpus, rsss) in per.items() if cpus
    }
