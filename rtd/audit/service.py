"""`python -m rtd.audit.service`: the audit indexer, a service of the local stack.

It consumes `decisions` and `decision-traces` (read_committed) in its own consumer group
and writes each polled batch, with the offsets after it, in one RocksDB write batch
(rtd/audit/store.py). Partitions come from the group's assignment and start where the
store's own offsets say, never from Kafka's committed offsets: the store is the only
place that knows what it holds. (The service commits to Kafka too, after each batch, but
only so that standard lag tools see its progress.) Nothing here assumes it is the only
instance: several share the partitions of both topics through the group.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from rtd.audit.archive import ArchiveWriter
from rtd.audit.completeness import completeness_report, write_report
from rtd.audit.store import HOUR_MS, AuditStore, KafkaRecord
from rtd.config import RtdConfig, load_config
from rtd.security import kafka_client_properties

log = logging.getLogger("rtd.audit")


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
        if result.unreadable:
            log.error("unreadable records kept aside: %s", result.unreadable)
        try:
            consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o
                                     in next_offsets.items()], asynchronous=True)
        except Exception as exc:  # noqa: BLE001 - a lag hint only; the store has the truth
            log.debug("offset commit hint failed: %s", exc)
        return len(records)

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

    def run(self) -> None:
        self.archive.recover()
        consumer = self._consumer()
        consumer.subscribe([self.topics.decisions, self.topics.traces],
                           on_assign=self._on_assign)
        last_flush = time.monotonic()
        try:
            while not self.stop.is_set():
                self.poll_once(consumer)
                if time.monotonic() - last_flush >= self.config.audit.archive_flush_s:
                    self.housekeeping()
                    last_flush = time.monotonic()
            self.housekeeping()
        finally:
            consumer.close()
            self.store.close()


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
