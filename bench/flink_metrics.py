"""What the Flink REST API says about our job while the benchmark runs.

Per operator (job vertex): ``busyTimeMsPerSecond``, ``backPressuredTimeMsPerSecond`` and
``idleTimeMsPerSecond`` (the figures behind the web UI's busy/back-pressure colours),
aggregated over subtasks with ``agg=max``. Checkpoints: each completed one's end-to-end
duration and checkpointed size, collected from ``/jobs/<id>/checkpoints`` (which only
keeps the latest few, hence the polling). Memory: RocksDB's memory gauges and the
operators' ``rtd.memory.*`` (operators/process_memory.py), ``keys_tracked`` and
``history_in_memory`` figures, summed over subtasks, for the soak to split the
TaskManager's RSS by part.
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import requests

VERTEX_METRICS = ("busyTimeMsPerSecond", "backPressuredTimeMsPerSecond", "idleTimeMsPerSecond")
# Metric id suffixes (after the operator's name) that say what native memory holds, and
# the working sets' miss counters beside them: what a bound on memory costs in reads.
MEMORY_MARKS = ("rocksdb_", ".rtd.memory.", ".keys_tracked", ".history_in_memory",
                ".working_set_misses", ".working_set_miss_us")


def memory_figure(metric_id: str) -> tuple[str, bool] | None:
    """The figure a metric id feeds, and whether its values are maxed rather than summed
    across column families (RocksDB's block cache is one cache per slot that every
    column family reports). None for other metrics."""
    if "rocksdb_" in metric_id:
        name = "rocksdb_" + metric_id.rsplit("rocksdb_", 1)[1]
        return name, "block-cache" in name
    if any(mark in metric_id for mark in MEMORY_MARKS):
        return metric_id.split(".rtd.", 1)[-1], False
    return None


@dataclass
class FlinkSamples:
    # (epoch ms, vertex name, metric -> value)
    vertex: list[tuple[int, str, dict[str, float]]] = field(default_factory=list)
    # checkpoint id -> {trigger_ms, duration_ms, size_bytes, state_bytes, status}; size is
    # what the (incremental) checkpoint wrote, state the whole state it covers.
    checkpoints: dict[int, dict[str, Any]] = field(default_factory=dict)
    # (epoch ms, figure -> value): memory_figure's figures, when sampled.
    memory: list[tuple[int, dict[str, float]]] = field(default_factory=list)
    errors: int = 0
    # Job restarts during the run (a TaskManager replaced under the job, a failure):
    # figures of a run with restarts are not comparable.
    restarts: int = 0


def summarize_window(samples: FlinkSamples, start_ms: int, end_ms: int) -> dict[str, Any]:
    """Mean busy/back-pressured/idle ms per second per operator, and the checkpoints
    triggered within [start_ms, end_ms)."""
    per_vertex: dict[str, dict[str, list[float]]] = {}
    for at, name, values in samples.vertex:
        if start_ms <= at < end_ms:
            slot = per_vertex.setdefault(name, {m: [] for m in VERTEX_METRICS})
            for metric, value in values.items():
                slot[metric].append(value)
    operators = {
        name: {m: round(statistics.fmean(v), 1) if v else None for m, v in metrics.items()}
        for name, metrics in per_vertex.items()
    }
    cps = [c for c in samples.checkpoints.values()
           if start_ms <= c["trigger_ms"] < end_ms and c["status"] == "COMPLETED"]
    durations = sorted(c["duration_ms"] for c in cps)
    return {
        "operators": operators,
        "checkpoints": {
            "completed": len(cps),
            "duration_ms_median": statistics.median(durations) if durations else None,
            "duration_ms_max": durations[-1] if durations else None,
            "size_bytes_median": statistics.median([c["size_bytes"] for c in cps]) if cps else None,
        },
    }


class FlinkSampler:
    """Polls the REST API for one job in a background thread."""

    def __init__(self, rest_url: str, job_id: str, interval_s: float = 2.0,
                 memory: bool = False) -> None:
        self.rest_url = rest_url
        self.job_id = job_id
        self.interval_s = interval_s
        self.memory = memory
        self._memory_ids: dict[str, list[str]] = {}  # vertex id -> its memory metric ids
        self.samples = FlinkSamples()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="flink-sampler", daemon=True)
        self._vertices: list[tuple[str, str]] = []

    def _get(self, path: str) -> Any:
        response = requests.get(f"{self.rest_url}{path}", timeout=5)
        response.raise_for_status()
        return response.json()

    def _sample(self) -> None:
        if not self._vertices:
            detail = self._get(f"/jobs/{self.job_id}")
            self._vertices = [(v["id"], v["name"]) for v in detail.get("vertices", [])]
        now = time.time_ns() // 1_000_000
        for vid, name in self._vertices:
            rows = self._get(f"/jobs/{self.job_id}/vertices/{vid}/subtasks/metrics"
                             f"?get={','.join(VERTEX_METRICS)}&agg=max")
            values = {r["id"]: float(r["max"]) for r in rows if "max" in r}
            if values:
                self.samples.vertex.append((now, name, values))
        if self.memory:
            self._sample_memory(now)
        restarts = self._get(f"/jobs/{self.job_id}/metrics?get=numRestarts")
        if restarts:
            self.samples.restarts = int(float(restarts[0].get("value", 0)))
        history = self._get(f"/jobs/{self.job_id}/checkpoints").get("history", [])
        for cp in history:
            if cp.get("status") in ("COMPLETED", "FAILED"):
                self.samples.checkpoints[int(cp["id"])] = {
                    "trigger_ms": int(cp.get("trigger_timestamp", 0)),
                    "duration_ms": int(cp.get("end_to_end_duration", 0)),
                    "size_bytes": int(cp.get("checkpointed_size", cp.get("state_size", 0))),
                    "state_bytes": int(cp.get("state_size", 0)),
                    "status": cp["status"],
                }

    def _sample_memory(self, now: int) -> None:
        figures: dict[str, float] = {}
        for vid, _ in self._vertices:
            path = f"/jobs/{self.job_id}/vertices/{vid}/subtasks/metrics"
            if not self._memory_ids.get(vid):  # listed once the operators registered them
                self._memory_ids[vid] = [m["id"] for m in self._get(path)
                                         if memory_figure(m["id"]) is not None]
            ids = self._memory_ids[vid]
            if not ids:
                continue
            for row in self._get(f"{path}?get={','.join(ids)}&agg=sum"):
                figure = memory_figure(row["id"])
                if figure is None or "sum" not in row:
                    continue
                name, shared = figure
                value = float(row["sum"])
                figures[name] = max(figures.get(name, 0.0), value) if shared \
                    else figures.get(name, 0.0) + value
        if figures:
            self.samples.memory.append((now, figures))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self._sample()
            except (requests.RequestException, KeyError, ValueError):
                self.samples.errors += 1

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> FlinkSamples:
        self._stop.set()
        self._thread.join(timeout=10)
        try:
            self._sample()  # the latest checkpoints
        except (requests.RequestException, KeyError, ValueError):
            self.samples.errors += 1
        return self.samples
