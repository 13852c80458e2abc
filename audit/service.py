"""`python -m audit.service`: the audit indexer, a service of the local stack.

It consumes `decisions` and `decision-traces` (read_committed) in its own consumer group
and writes each polled batch, with the offsets after it, in one RocksDB write batch
(audit/store.py). Partitions come from the group's assignment and start where the
store's own offsets say, never from Kafka's committed offsets: the store is the only
place that knows what it holds. (The service commits to Kafka too, after each batch, but
only so that standard lag tools see its progress.) Nothing here assumes it is the only
instance: several share the partitions of both topics through the group.

Beside the indexer it runs the health monitor (audit/health.py) on what it stores
and on the `labels` topic, and serves the decision console and /metrics
(audit/console.py) on ``audit.console_port``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)

from audit.archive import ArchiveWriter
from audit.completeness import completeness_report, write_report
from audit.health import HealthMonitor, read_label
from audit.metrics import HealthMetrics
from audit.records import AuditRow, read_trace
from audit.store import HOUR_MS, AuditStore, KafkaRecord
from model_training import score_distribution
from model_training.score_distribution import ScoreDistribution
from rtd_core.config import RtdConfig, load_config
from rtd_core.security import kafka_client_properties

log = logging.getLogger("audit")


def index_path(config: RtdConfig) -> Path:
    return config.audit_path / "index"


def archive_path(config: RtdConfig) -> Path:
    return config.audit_path / "archive"


class AuditService:
    def __init__(self, config: RtdConfig, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.clock = clock
        self.stop = threading.Event()
        self.store = AuditStore(index_path(config))
        self.archive = ArchiveWriter(self.store, archive_path(config))
        self.topics = config.kafka.topics
        self._distributions: dict[int, ScoreDistribution | None] = {}
        self.health = HealthMonitor(config.audit, config.thresholds, self.training_distribution)
        # The latest health snapshot: replaced whole by the service loop, read by the console.
        self.snapshot: dict[str, Any] | None = None
        self.metrics = HealthMetrics()
        self.accuracy_series: dict[str, list[dict[str, Any]]] = {}
        self.unreadable_labels = 0
        self.labels_behind: int | None = None
        self.labels_assigned = False

    def training_distribution(self, version: int) -> ScoreDistribution | None:
        """The version's recorded training scores; a version never changes once published."""
        if version not in self._distributions:
            folder = self.config.path(self.config.serving.base_path) / str(version)
            self._distributions[version] = score_distribution.read(folder)
        return self._distributions[version]

    def row(self, event_or_decision_id: str) -> AuditRow | None:
        raw = self.store.trace_bytes(event_or_decision_id)
        return None if raw is None else read_trace(orjson.loads(raw))

    def _consumer(self) -> Consumer:
        return Consumer(kafka_client_properties(self.config.kafka, **{
            "group.id": self.config.audit.consumer_group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
        }))

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        stored = self.store.offsets()
        for tp in partitions:
            tp.offset = stored.get((tp.topic, tp.partition), OFFSET_BEGINNING)
        log.info("assigned %s", [(tp.topic, tp.partition, tp.offset) for tp in partitions])
        consumer.assign(partitions)

    def poll_once(self, consumer: Consumer) -> int:
        messages = consumer.consume(self.config.audit.batch_size, timeout=0.5)
        records, next_offsets = [], {}
        for msg in messages:
            error = msg.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    continue
                if error.fatal():
                    raise RuntimeError(f"Kafka consumer failed: {error}")
                log.warning("consumer: %s", error)
                continue
            records.append(KafkaRecord(msg.topic(), msg.partition(), msg.offset(),
                                       msg.value()))
            next_offsets[(msg.topic(), msg.partition())] = msg.offset() + 1
        if not records:
            return 0
        result = self.store.ingest(self.topics.traces, records, next_offsets)
        self.health.observe_rows(result.rows)
        self.health.observe_decisions(result.decision_refs, int(self.clock() * 1000))
        if result.unreadable:
            log.error("unreadable records kept aside: %s", result.unreadable)
        try:
            consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o
                                     in next_offsets.items()], asynchronous=True)
        except Exception as exc:  # noqa: BLE001 - a lag hint only; the store has the truth
            log.debug("offset commit hint failed: %s", exc)
        return len(records)

    def _labels_consumer(self) -> Consumer:
        """`labels` from its start, every time, all partitions (assigned, not shared
        through a group: each instance joins the labels of the decisions it stores), so
        accuracy is rebuilt from the topic and the store after a restart."""
        return Consumer({
            "bootstrap.servers": self.config.kafka.bootstrap_servers,
            "group.id": f"{self.config.audit.consumer_group}-labels",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        })

    def _assign_labels(self, consumer: Consumer) -> bool:
        topic = self.topics.labels
        meta = consumer.list_topics(topic, timeout=1.0).topics.get(topic)
        if meta is None or meta.error is not None or not meta.partitions:
            return False  # not created yet: try again at the next health tick
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
        return True

    def poll_labels(self, consumer: Consumer) -> int:
        if not self.labels_assigned:
            return 0
        now = int(self.clock() * 1000)
        count = 0
        for msg in consumer.consume(5_000, timeout=0.05):
            if msg.error() is not None:
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    log.warning("labels consumer: %s", msg.error())
                continue
            try:
                self.health.observe_label(read_label(msg.value()), now)
                count += 1
            except ValueError as exc:
                # A bad label costs only itself: counted and logged, never fatal.
                self.unreadable_labels += 1
                log.warning("labels[%d]@%d: %s", msg.partition(), msg.offset(), exc)
        return count

    def labels_lag(self, consumer: Consumer) -> int | None:
        """Labels on the topic not yet read (None before the consumer has partitions)."""
        assigned = consumer.assignment()
        if not assigned:
            return None
        behind = 0
        for tp in consumer.position(assigned):
            _low, high = consumer.get_watermark_offsets(tp, timeout=1.0)
            behind += max(0, high - max(tp.offset, 0))
        return behind

    def health_tick(self) -> None:
        now = int(self.clock() * 1000)
        self.health.join(self.row, now)
        self.health.prune(now)
        report = completeness_report(
            self.store, decisions_topic=self.topics.decisions, traces_topic=self.topics.traces,
            grace_ms=self.config.audit.completeness_grace_ms, now_ms=now)
        self.health.observe_completeness(report["share_complete"], now)
        snap = self.health.snapshot(now, report)
        snap["accuracy"]["labels_unreadable"] = self.unreadable_labels
        snap["accuracy"]["labels_behind"] = self.labels_behind
        snap["versions"] = self.health.versions()
        self.accuracy_series = {str(v): self.health.accuracy_series(now, v)
                                for v in snap["versions"]}
        self.accuracy_series["all"] = self.health.accuracy_series(now, None)
        self.snapshot = snap
        self.metrics.update(snap)

    def housekeeping(self) -> None:
        """Archive, expire, report: the periodic work, also done once at a clean stop."""
        written = self.archive.flush()
        now_ms = int(self.clock() * 1000)
        hours = self.config.audit.retention_hours
        if hours:
            cutoff = now_ms - hours * HOUR_MS
            self.store.expire_before(cutoff)
            self.archive.expire_before(cutoff)
        report = completeness_report(
            self.store, decisions_topic=self.topics.decisions, traces_topic=self.topics.traces,
            grace_ms=self.config.audit.completeness_grace_ms, now_ms=now_ms)
        write_report(self.config.audit_path, report)
        log.info("archived %d rows; %d decisions, completeness %.6f", written,
                 report["decisions"], report["share_complete"])

    def run(self, console: bool = True) -> None:
        self.archive.recover()
        consumer = self._consumer()
        consumer.subscribe([self.topics.decisions, self.topics.traces],
                           on_assign=self._on_assign)
        labels = self._labels_consumer()
        server = start_console(self) if console and self.config.audit.console_port else None
        last_flush = last_health = time.monotonic()
        try:
            while not self.stop.is_set():
                self.poll_once(consumer)
                self.poll_labels(labels)
                if time.monotonic() - last_health >= self.config.audit.health_interval_s:
                    try:
                        if not self.labels_assigned:
                            self.labels_assigned = self._assign_labels(labels)
                        self.labels_behind = self.labels_lag(labels)
                    except KafkaException as exc:
                        log.warning("labels: %s", exc)
                    self.health_tick()
                    last_health = time.monotonic()
                if time.monotonic() - last_flush >= self.config.audit.archive_flush_s:
                    self.housekeeping()
                    last_flush = time.monotonic()
            self.housekeeping()
        finally:
            if server is not None:
                server.should_exit = True
            labels.close()
            consumer.close()
            self.store.close()


def start_console(service: AuditService) -> Any:
    """The console and /metrics in a thread of this process: it reads the store this
    process writes (RocksDB allows one writer process; reads from threads are safe)."""
    import uvicorn

    from audit.console import create_app

    audit = service.config.audit
    server = uvicorn.Server(uvicorn.Config(
        create_app(service), host=audit.console_host, port=audit.console_port,
        log_level="warning", access_log=False))
    threading.Thread(target=server.run, name="console", daemon=True).start()
    log.info("console on http://%s:%d", audit.console_host, audit.console_port)
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default=None, help="JSON config file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    service = AuditService(load_config(args.config))
    # SIGTERM (`rtd stack down`) finishes the batch in hand, archives and reports.
    signal.signal(signal.SIGTERM, lambda *_: service.stop.set())
    signal.signal(signal.SIGINT, lambda *_: service.stop.set())
    log.info("audit service: store %s, topics %s, %s", service.store.path,
             service.topics.decisions, service.topics.traces)
    service.run()


if __name__ == "__main__":
    main()
