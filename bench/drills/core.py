"""What every drill shares: its settings, the context a fault acts in, the steady load,
the audit by event id, and the arithmetic of recovery times and windows."""

from __future__ import annotations

import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import orjson
import psutil
from confluent_kafka import TopicPartition

from bench.flink_metrics import FlinkSampler, FlinkSamples
from bench.stats import latency_summary
from rtd_core.config import RtdConfig
from rtd_core.topic_reader import consumer
from simulator.producer import DeliveryFailedError, run_simulation
from stack.flink_cluster import FlinkCluster
from stack.processes import wait_until

# docs/BENCHMARKS.md, run 2fda81 (2026-12-02, quiet machine, the fused topology): the
# most decisions/s the job sustained on a machine of this kind, whole stack on it. Only
# the fallback: the same code peaked at 668-989/s on other machines of the kind, so a
# drill takes its peak from the newest `rtd bench` result made here (latest_peak).
MEASURED_PEAK_PER_S = 750.0
DEFAULT_LOAD_SHARE = 0.6
# The soak runs longer, at half the peak: what it judges is memory and p99 over time
# at a load the job holds with room to spare, not the edge of its capacity.
SOAK_LOAD_SHARE = 0.5
RECOVERY_GOAL_S = 15.0
# Caught up: the job's committed input offsets within this many seconds of input.
CAUGHT_UP_S = 2.0
CATCH_UP_POLL_S = 1.0


@dataclass(frozen=True)
class MeasuredPeak:
    per_s: float
    run: str  # the bench run's id and when it ran ("cb78bd, 2026-12-03 20:03 UTC")
    path: Path


def latest_peak(bench_dir: Path) -> MeasuredPeak | None:
    """The job's peak in the newest ``rtd bench`` result under ``bench_dir``
    (``out/bench/<run>/result.json``, written on this machine: out/ is not committed),
    None when no result there measured one."""
    found = []
    for path in bench_dir.glob("*/result.json"):
        try:
            result = json.loads(path.read_text())
            peak = float(result["systems"]["ours"]["peak_decisions_per_s"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if peak > 0:
            found.append((path.stat().st_mtime, MeasuredPeak(
                peak, f"{result.get('run_id', path.parent.name)}, {result.get('date', '?')}",
                path)))
    return max(found, key=lambda f: f[0])[1] if found else None


@dataclass(frozen=True)
class DrillSettings:
    rate: float = MEASURED_PEAK_PER_S * DEFAULT_LOAD_SHARE
    kills: int = 5
    interval_s: float = 60.0
    broker_down_s: float = 30.0
    # Load before the first action and after the last one.
    warmup_s: float = 30.0
    # After the warm-up the first action waits, up to this long, until the job has
    # caught up with its input: a fault acted on a job still working off the backlog of
    # its own start (a cold TaskManager) would be judged on the start's latency.
    catch_up_max_s: float = 120.0
    # ... and has stayed caught up this many readings in a row (CATCH_UP_POLL_S apart): the
    # first reading within CAUGHT_UP_S can come while the start's backlog is still being
    # worked off (run 20261205-1142-aa065e acted with p50 at 300 ms, just caught up).
    caught_up_readings: int = 20
    tail_s: float = 45.0
    drain_timeout_s: float = 300.0
    seed: int = 31
    # The simulated population (None: the simulator's default, 200,000 customers). The
    # soak with 10 million shows memory against cards seen: nearly every card is new.
    customers: int | None = None
    # model-chaos: each fault phase, the calm between them, and the outage.
    chaos_phase_s: float = 30.0
    chaos_calm_s: float = 20.0
    model_down_s: float = 60.0
    chaos_error_rate: float = 0.2
    # rescale: how long the job runs at the higher parallelism, and which one.
    rescale_hold_s: float = 60.0
    rescale_to: int = 2
    # hostile-input: how many fuzzed and hostile payloads, and how fast they are sent.
    hostile_count: int = 100_000
    hostile_rate: float = 500.0
    # soak: how long the steady load lasts after warm-up.
    soak_minutes: float = 60.0


@dataclass
class Action:
    at_ms: int
    what: str
    detail: str = ""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def input_lag(config: RtdConfig) -> int:
    """Records of the input topic past the offsets the job's consumer group committed.
    The job's Kafka source commits them at each checkpoint, so this trails the job by
    about a checkpoint interval: what ``CAUGHT_UP_S`` allows for."""
    reader = consumer(config, "read_uncommitted", **{"group.id": config.kafka.consumer_group})
    topic = config.kafka.topics.transactions
    try:
        partitions = [TopicPartition(topic, p)
                      for p in reader.list_topics(topic, timeout=10).topics[topic].partitions]
        lag = 0
        for tp in reader.committed(partitions, timeout=10):
            high = reader.get_watermark_offsets(tp, timeout=10)[1]
            lag += high - tp.offset if tp.offset >= 0 else high
        return lag
    finally:
        reader.close()


@dataclass
class DrillContext:
    """What a fault acts on, and what it leaves for its judge: the actions it took, the
    jobs it ran (a rescale replaces the job), and anything else under ``extra``."""

    config: RtdConfig
    cluster: FlinkCluster
    job_id: str
    settings: DrillSettings
    log: Callable[[str], None]
    actions: list[Action] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)
    samplers: list[FlinkSampler] = field(default_factory=list)
    lag: Callable[[RtdConfig], int] = input_lag  # a test passes its own
    # Sample the memory parts too (bench/flink_metrics.py): only the soak judges them.
    memory_parts: bool = False

    def act(self, what: str, detail: str = "") -> None:
        self.actions.append(Action(now_ms(), what, detail))

    def sample(self, job_id: str) -> None:
        """Follow ``job_id`` from now on (a new job after a rescale)."""
        if self.samplers:
            self.samplers[-1].stop()
        self.job_id = job_id
        sampler = FlinkSampler(self.config.flink.rest_url, job_id, interval_s=5.0,
                               memory=self.memory_parts)
        sampler.start()
        self.samplers.append(sampler)

    def warm_up(self) -> None:
        """``warmup_s`` of load, then until the job has been within ``CAUGHT_UP_S`` of its
        input for ``caught_up_readings`` readings in a row, or ``catch_up_max_s`` more
        have passed (logged: the drill goes on)."""
        time.sleep(self.settings.warmup_s)
        allowed = max(1, int(self.settings.rate * CAUGHT_UP_S))
        deadline = time.monotonic() + self.settings.catch_up_max_s
        streak = 0
        while True:
            lag = self.lag(self.config)
            streak = streak + 1 if lag <= allowed else 0
            if streak >= self.settings.caught_up_readings or time.monotonic() >= deadline:
                break
            time.sleep(CATCH_UP_POLL_S)
        state = "caught up" if streak >= self.settings.caught_up_readings else (
            f"not caught up after {self.settings.catch_up_max_s:g} s more; acting anyway")
        self.log(f"warm-up done, {state}: {lag} input records not yet committed by the job")

    def stop_sampling(self) -> FlinkSamples:
        """The samples of every job the drill ran, merged: restarts summed."""
        merged = FlinkSamples()
        for i, sampler in enumerate(self.samplers):
            samples = sampler.stop() if i == len(self.samplers) - 1 else sampler.samples
            merged.vertex += samples.vertex
            merged.memory += samples.memory
            merged.checkpoints.update({(i, k): v for k, v in samples.checkpoints.items()})
            merged.errors += samples.errors
            merged.restarts += samples.restarts
        return merged


def audit_ids(expected: set[str], received: list[str]) -> dict[str, int]:
    counts = Counter(received)
    return {"expected": len(expected), "received": sum(counts.values()),
            "lost": len(expected - counts.keys()),
            "duplicated": sum(n - 1 for n in counts.values() if n > 1),
            "unexpected": len(counts.keys() - expected)}


def recovery_times(decided_ms: list[int], actions_ms: list[int]) -> list[dict[str, float]]:
    """Per action: the gap from the last decision made before it to the first made after
    it, and from the action itself to that first decision (seconds)."""
    ordered = sorted(decided_ms)
    out = []
    for at in actions_ms:
        before = [t for t in ordered if t <= at]
        after = [t for t in ordered if t > at]
        if not after:
            out.append({"gap_s": float("inf"), "since_action_s": float("inf")})
            continue
        first = after[0]
        last = before[-1] if before else at
        out.append({"gap_s": round((first - last) / 1000, 2),
                    "since_action_s": round((first - at) / 1000, 2)})
    return out


def longest_stall(decided_ms: list[int], since_ms: int) -> float | None:
    """The longest gap (s) between consecutive decisions from ``since_ms`` on, counting
    the wait from ``since_ms`` to the first of them."""
    times = [since_ms, *(t for t in sorted(decided_ms) if t > since_ms)]
    if len(times) < 2:
        return None
    return round(max(b - a for a, b in itertools.pairwise(times)) / 1000, 2)


def windows(times_ms: list[int], latencies_ms: list[float], start_ms: int,
            width_s: int = 5) -> list[dict[str, float]]:
    """Decisions/s and latency p50/p99 per ``width_s`` window of decision time."""
    buckets: dict[int, list[float]] = {}
    for t, lat in zip(times_ms, latencies_ms, strict=True):
        buckets.setdefault((t - start_ms) // (width_s * 1000), []).append(lat)
    if not buckets:
        return []
    rows = []
    for i in range(min(buckets), max(buckets) + 1):
        lats = sorted(buckets.get(i, []))
        summary = latency_summary(lats)
        rows.append({"t_s": i * width_s, "per_s": len(lats) / width_s,
                     "p50_ms": summary["p50"], "p99_ms": summary["p99"]})
    return rows


def open_transactions(config: RtdConfig, topics: list[str]) -> dict[str, int]:
    """Records past the last stable offset per output topic: > 0 means a transaction is
    still open there (read_committed readers cannot pass it)."""
    committed = consumer(config, "read_committed")
    uncommitted = consumer(config, "read_uncommitted")
    out = {}
    try:
        for topic in topics:
            meta = committed.list_topics(topic, timeout=10).topics[topic]
            stuck = 0
            for p in meta.partitions:
                tp = TopicPartition(topic, p)
                lso = committed.get_watermark_offsets(tp, timeout=10)[1]
                high = uncommitted.get_watermark_offsets(tp, timeout=10)[1]
                stuck += max(high - lso, 0)
            out[topic] = stuck
    finally:
        committed.close()
        uncommitted.close()
    return out


class SteadyLoad:
    """The simulator at a steady rate in a background thread."""

    def __init__(self, config: RtdConfig, rate: float, duration_s: float, seed: int,
                 customers: int | None = None) -> None:
        self.summary: Any = None
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run,
                                        args=(config, rate, duration_s, seed, customers),
                                        name="drill-load", daemon=True)

    def _run(self, config: RtdConfig, rate: float, duration_s: float, seed: int,
             customers: int | None) -> None:
        try:
            self.summary = run_simulation(config, count=None, rate=rate, duration_s=duration_s,
                                          seed=seed, malformed_share=0.01, progress=False,
                                          stop=self._stop, customers=customers)
        except DeliveryFailedError as exc:
            self.summary, self.error = exc.summary, str(exc)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def stop(self) -> None:
        """End the load now (the drill's actions are done) rather than at ``duration_s``."""
        self._stop.set()

    def __exit__(self, *exc: object) -> None:
        self._thread.join()


def event_id_of(value: str | bytes | None) -> str | None:
    """The event id of an input record, None if it has none. orjson, as hostile input
    may nest deeper than the standard library's parser recurses."""
    try:
        doc = orjson.loads(value or b"")
    except orjson.JSONDecodeError:
        return None
    event_id = doc.get("event_id") if isinstance(doc, dict) else None
    return event_id if isinstance(event_id, str) else None


def _running_taskmanagers(cluster: FlinkCluster, job_id: str) -> list[dict[str, Any]]:
    """The REST API's entries of the TaskManagers that run a RUNNING subtask of the job."""
    return [tm for vertex in cluster.rest(f"/jobs/{job_id}")["vertices"]
            for tm in cluster.rest(f"/jobs/{job_id}/vertices/{vertex['id']}/taskmanagers")[
                "taskmanagers"] if tm.get("status") == "RUNNING"]


def tm_pid_running(cluster: FlinkCluster, job_id: str) -> int | None:
    """The pid of the TaskManager that runs the job's tasks (by its RPC port)."""
    ports: set[int] = set()
    for tm in _running_taskmanagers(cluster, job_id):
        endpoint = tm.get("endpoint") or tm.get("host", "")
        port = endpoint.rpartition(":")[2]
        tm_id = tm.get("taskmanager-id", "")
        rpc = tm_id.split(":")[1].split("-")[0] if ":" in tm_id else ""
        ports |= {int(x) for x in (port, rpc) if x.isdigit()}
    for pid in cluster._pids("taskexecutor"):
        try:
            listening = {c.laddr.port for c in psutil.Process(pid).net_connections("tcp")
                         if c.status == psutil.CONN_LISTEN}
        except psutil.Error:
            continue
        if listening & ports:
            return pid
    return None


def taskmanagers_of(cluster: FlinkCluster, job_id: str) -> set[str]:
    """The TaskManagers (ids) that run a RUNNING subtask of the job."""
    return {str(tm.get("taskmanager-id") or tm.get("endpoint"))
            for tm in _running_taskmanagers(cluster, job_id)}


def wait_running(cluster: FlinkCluster, job_id: str, timeout_s: float = 180) -> None:
    def all_running() -> bool:
        try:
            detail = cluster.rest(f"/jobs/{job_id}")
        except Exception:  # noqa: BLE001 - the REST API may be busy while it restarts
            return False
        return detail.get("state") == "RUNNING" and all(
            v.get("status") == "RUNNING" for v in detail.get("vertices", []))
    wait_until(all_running, timeout_s, f"job {job_id} running")
