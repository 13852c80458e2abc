"""A live tally of committed decisions by outcome and path (the demo's screen)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

from confluent_kafka import OFFSET_END, TopicPartition
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from rtd_core.config import RtdConfig
from rtd_core.topic_reader import consumer
from stack.flink_cluster import FlinkCluster

OUTCOMES = ("APPROVE", "REVIEW", "DECLINE")
PATHS = ("MODEL", "RULES_ONLY")


class DecisionTally:
    def __init__(self, config: RtdConfig) -> None:
        self.config = config
        self.counts: Counter[tuple[str, str]] = Counter()
        self.fallbacks: Counter[str] = Counter()
        self.versions: Counter[str] = Counter()
        self.late = 0
        self.started = time.monotonic()

    def add(self, decision: dict) -> None:
        self.counts[(decision["outcome"], decision["path"])] += 1
        if decision.get("fallback_reason"):
            self.fallbacks[decision["fallback_reason"]] += 1
        if decision.get("model_version") is not None:
            self.versions[str(decision["model_version"])] += 1
        self.late += bool(decision.get("late"))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def render(self, checkpoints: str) -> Group:
        table = Table(title="Committed decisions (read_committed)")
        table.add_column("outcome")
        for path in PATHS:
            table.add_column(path, justify="right")
        for outcome in OUTCOMES:
            table.add_row(outcome, *(str(self.counts[(outcome, p)]) for p in PATHS))
        elapsed = max(time.monotonic() - self.started, 1e-6)
        info = Text(
            f"total {self.total}  ({self.total / elapsed:.0f}/s)   late {self.late}   "
            f"fallbacks {dict(self.fallbacks) or '-'}   model versions {dict(self.versions) or '-'}\n"
            f"Flink web UI: {self.config.flink.rest_url}   checkpoints: {checkpoints}"
        )
        return Group(table, info)


def _checkpoint_summary(cluster: FlinkCluster, job_name: str) -> str:
    job = cluster.running_job(job_name)
    if not job:
        return "job not running"
    try:
        counts = cluster.rest(f"/jobs/{job['jid']}/checkpoints")["counts"]
    except Exception:  # noqa: BLE001 - the UI line is best effort
        return "n/a"
    return f"{counts.get('completed', 0)} completed, {counts.get('failed', 0)} failed"


def live_tally(config: RtdConfig, stop: threading.Event, from_end: bool = True) -> DecisionTally:
    """Show decisions as they commit until ``stop`` is set."""
    tally = DecisionTally(config)
    cluster = FlinkCluster(config)
    c = consumer(config, "read_committed", **{"enable.partition.eof": False})
    topic = config.kafka.topics.decisions
    meta = c.list_topics(topic, timeout=10)
    start = OFFSET_END if from_end else 0
    c.assign([TopicPartition(topic, p, start) for p in meta.topics[topic].partitions])
    last_ui = 0.0
    checkpoints = "..."
    try:
        with Live(tally.render(checkpoints), refresh_per_second=4) as live:
            while not stop.is_set():
                for msg in c.consume(num_messages=500, timeout=0.25):
                    if msg.error() is None and msg.value():
                        tally.add(json.loads(msg.value()))
                if time.monotonic() - last_ui > 2:
                    checkpoints = _checkpoint_summary(cluster, config.job.name)
                    last_ui = time.monotonic()
                live.update(tally.render(checkpoints))
    finally:
        c.close()
    return tally
