"""Validation: valid events go on as records, malformed ones to the dead letters."""

from __future__ import annotations

from typing import Any

from pyflink.common import Row
from pyflink.datastream import RuntimeContext

from decisioning.transaction import Reason, Rejection, validate
from operators.clock import now_ms
from operators.failures import dead_letter_row, error_text
from operators.records import JobRecord
from rtd_core.sharding import shard_of

STAGE = "validate"
ROUTE_STAGE = "route"


def _text(value: bytes | None) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", errors="replace")


def source_fields(row: Any) -> tuple[dict[str, Any], bytes | None]:
    """A source row (key bytes, value bytes, topic, partition, offset, Kafka timestamp
    and read time, both epoch ms): the record's ``source`` (what its trace and dead letter
    show), and the raw value."""
    key, raw, topic, partition, offset, kafka_ts = row[:6]
    source = {
        "key": _text(key),
        "raw": _text(raw),
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "kafka_timestamp": kafka_ts,
    }
    return source, raw


def accepted(source: dict[str, Any], raw: bytes | None, max_future_skew_ms: int,
             received: int) -> JobRecord | Rejection:
    """The valid event's record, or why the payload is rejected."""
    result = validate(raw, source["kafka_timestamp"], max_future_skew_ms)
    if isinstance(result, Rejection):
        return result
    return JobRecord(source=source, event=result,
                     timings={"received": received, "validated": now_ms()})


def _received(row: Any) -> int:
    read_at = row[6]  # None where a test's collection stands in for the source
    return now_ms() if read_at is None else int(read_at)


class Validation:
    """Validation as the keyed operator runs it (operators/customer_shard.py): a source
    row becomes its record, or its dead letter.

    The source keys rows by the shard of the customer id it reads from the JSON in SQL
    (flink_jobs/kafka_tables.py); a valid event whose customer belongs to another shard
    (a payload Flink's JSON reader and validation's read differently) would see the
    wrong shard's state, so it is a dead letter (``internal_error``, stage ``route``),
    counted, never a decision on wrong features."""

    def __init__(self, max_future_skew_ms: int, customer_field: str, shards: int) -> None:
        self.max_future_skew_ms = max_future_skew_ms
        self.customer_field = customer_field
        self.shards = shards

    def open(self, runtime_context: RuntimeContext) -> None:
        errors = runtime_context.get_metrics_group().add_group("rtd").add_group(
            "internal_errors")
        self._internal_errors = errors.counter(STAGE)
        self._misrouted = errors.counter(ROUTE_STAGE)

    def check(self, value: Row, shard: int) -> JobRecord | Row:
        """``value``: a ``SOURCE_ROW`` (flink_jobs/kafka_tables.py). The record's
        ``received`` time is when the source read it (its last field), so the time in
        the shuffle's queue shows in the trace, between it and ``validated``."""
        received = _received(value)
        source: dict[str, Any] = {}
        try:
            source, raw = source_fields(value)
            result = accepted(source, raw, self.max_future_skew_ms, received)
        except Exception as exc:  # noqa: BLE001 - no record's content may stop the job
            self._internal_errors.inc()
            return dead_letter_row(Rejection(Reason.INTERNAL_ERROR, error_text(exc)),
                                   source, received, stage=STAGE)
        if isinstance(result, Rejection):
            return dead_letter_row(result, source, received)
        customer = result.event[self.customer_field]
        belongs_to = shard_of(customer, self.shards)
        if belongs_to != shard:
            self._misrouted.inc()
            return dead_letter_row(
                Rejection(Reason.INTERNAL_ERROR,
                          f"{self.customer_field} {customer[:100]!r} belongs to shard "
                          f"{belongs_to}, the source keyed it to {shard}: "
                          "Flink's JSON functions read the payload differently"),
                source, received, stage=ROUTE_STAGE)
        return result
