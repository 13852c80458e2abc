"""Soak run: the job at a steady rate for many minutes, then an exactly-once audit.

What a platform team asks before it trusts the default execution mode: does the job
stay up under sustained load (no restarts, no TaskManager crash), does its memory
stay flat, do checkpoints keep completing, and does every valid event still get
exactly one committed decision and one trace, every malformed one one dead letter?

    .venv/bin/python -m bench.soak --rate 600 --minutes 15 [--override JSON]

Fresh topics per run; the job is submitted to the running local stack (``rtd stack
up`` first) like ``rtd submit``. Writes ``out/soak/<run>/result.json`` and
``soak.png`` (decisions/s, TaskManager memory and checkpoint duration over time).
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench.flink_metrics import FlinkSampler
from bench.resources import pids_from_file
from bench.stats import latency_summary
from bench.fresh_run import fresh_run_config
from rtd.config import PROJECT_ROOT, RtdConfig
from rtd.job_submission import submit
from rtd.simulator.producer import run_simulation
from rtd.stack.flink_cluster import FlinkCluster
from rtd.stack.kafka_broker import KafkaBroker
from rtd.topic_reader import iter_all

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

    def __enter__(self) -> MemorySampler:
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


def _keys(config: RtdConfig, topic: str, field: str | None = None) -> list[str]:
    """Record keys of a whole topic, or one field of each JSON value."""
    out = []
    for record in iter_all(config, topic, timeout_s=600):
        out.append(json.loads(record.value or "{}").get(field) if field else record.key)
    return out


def _chart(result: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    rate = result["decisions_per_window"]
    axes[0].plot([t for t, _ in rate], [r for _, r in rate], label="decisions/s (10 s windows)")
    axes[0].axhline(result["rate"], linestyle=":", color="grey", label="input rate")
    axes[0].set_ylabel("per second")
    axes[0].set_ylim(bottom=0)
    axes[0].legend(fontsize=8)
    memory = result["taskmanager_rss_mib"]
    axes[1].plot([t for t, _, _ in memory], [m for _, m, _ in memory], color="tab:purple",
                 label="RSS")
    axes[1].plot([t for t, _, _ in memory], [h for _, _, h in memory], "--",
                 color="tab:purple", label="of which Java heap (touched pages)")
    axes[1].plot([t for t, _, _ in memory], [m - h for _, m, h in memory], ":",
                 color="tab:red", label="native: RocksDB, Python, JVM internals")
    axes[1].legend(fontsize=8)
    axes[1].set_ylabel("TaskManager MiB")
    axes[1].set_ylim(bottom=0)
    cps = result["checkpoint_durations"]
    axes[2].plot([t for t, _ in cps], [d for _, d in cps], ".", color="tab:green")
    axes[2].set_ylabel("checkpoint ms")
    axes[2].set_xlabel("seconds since the run began")
    for ax in axes:
        ax.grid(True, alpha=0.3)
    fig.suptitle(f"Soak: {result['rate']:.0f} events/s for {result['minutes']} min "
                 f"(run {result['run']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=600.0, help="events/s to send")
    parser.add_argument("--minutes", type=float, default=15.0, help="how long to send")
    parser.add_argument("--override", default="{}", help="JSON config overrides")
    parser.add_argument("--drain-timeout", type=float, default=600.0,
                        help="seconds to wait for the last decisions after sending")
    args = parser.parse_args()

    run, topics, config = fresh_run_config("soak", args.override)
    cluster = FlinkCluster(config)
    out = PROJECT_ROOT / "out" / "soak" / run
    out.mkdir(parents=True, exist_ok=True)
    KafkaBroker(config).create_topics()

    began_wall, began = time.time(), time.monotonic()
    job_id = submit(config)
    sampler = FlinkSampler(config.flink.rest_url, job_id, interval_s=5.0)
    sampler.start()
    try:
        with MemorySampler(cluster.pid_dir) as memory:
            summary = run_simulation(config, count=None, rate=args.rate,
                                     duration_s=args.minutes * 60, seed=11, progress=True)
            expected = set(summary.valid_event_ids)
            deadline = time.monotonic() + args.drain_timeout
            decided: list[str] = []
            while time.monotonic() < deadline:
                decided = _keys(config, topics["decisions"], "event_id")
                if len(set(decided)) >= len(expected):
                    break
                time.sleep(5)
            time.sleep(2)  # the checkpoint after the last decision commits its traces
    finally:
        flink = sampler.stop()
        job_state = cluster.rest(f"/jobs/{job_id}").get("state")
        cluster.cancel(job_id)

    decisions = [json.loads(r.value or "{}") for r in iter_all(config, topics["decisions"],
                                                                timeout_s=600)]
    trace_ids = _keys(config, topics["traces"], "event_id")
    dlq = _keys(config, topics["dlq"])
    decided_at = [int(d["decided_at"]) for d in decisions]
    first = min(decided_at) if decided_at else 0
    cps = sorted(flink.checkpoints.values(), key=lambda c: c["trigger_ms"])
    rss = [(round(t, 1), round(m, 1), round(h, 1)) for t, m, h, _ in memory.samples]
    tm_pids = {tuple(p) for _, _, _, p in memory.samples if p}
    decision_audit = audit(expected, [d["event_id"] for d in decisions])
    trace_audit = audit(expected, trace_ids)
    result = {
        "run": run, "rate": args.rate, "minutes": args.minutes,
        "override": json.loads(args.override),
        "sent": {"valid": len(expected), "malformed": len(summary.malformed)},
        "decisions": decision_audit.__dict__ | {"exactly_once": decision_audit.exactly_once},
        "traces": trace_audit.__dict__ | {"exactly_once": trace_audit.exactly_once},
        "dead_letters": {"expected": len(summary.malformed), "received": len(dlq)},
        "job_state_at_end": job_state,
        "restarts": flink.restarts,
        "taskmanager_pids_seen": [list(p) for p in sorted(tm_pids)],
        "crash_lines": crash_lines(cluster.log_dir, began_wall),
        "checkpoints": {
            "completed": sum(c["status"] == "COMPLETED" for c in cps),
            "failed": sum(c["status"] == "FAILED" for c in cps),
            "duration_ms": latency_summary(c["duration_ms"] for c in cps
                                           if c["status"] == "COMPLETED"),
        },
        "decisions_per_window": per_window_rate(decided_at, 10),
        "taskmanager_rss_mib": rss,
        # [first, last, max] of the RSS, and of its native (non-heap) part
        "taskmanager_rss_mib_first_last_max": (
            [rss[0][1], rss[-1][1], max(m for _, m, _ in rss)] if rss else None),
        "taskmanager_native_mib_first_last_max": (
            [round(rss[0][1] - rss[0][2], 1), round(rss[-1][1] - rss[-1][2], 1),
             round(max(m - h for _, m, h in rss), 1)] if rss else None),
        "checkpoint_durations": [(round((c["trigger_ms"] - first) / 1000, 1), c["duration_ms"])
                                 for c in cps if c["status"] == "COMPLETED"],
        "elapsed_s": round(time.monotonic() - began, 1),
    }
    (out / "result.json").write_text(json.dumps(result, indent=1))
    _chart(result, out / "soak.png")
    brief = {k: v for k, v in result.items()
             if k not in ("decisions_per_window", "taskmanager_rss_mib", "checkpoint_durations")}
    print(json.dumps(brief, indent=1))
    print(f"written: {out / 'result.json'}, {out / 'soak.png'}")


if __name__ == "__main__":
    main()
