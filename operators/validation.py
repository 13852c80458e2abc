"""Validation: valid events go on as records, malformed ones to the dead-letter output."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from pyflink.common import Row, Types
from pyflink.datastream import OutputTag, ProcessFunction, RuntimeContext

from decisioning.transaction import Reason, Rejection, validate
from operators.clock import now_ms
from operators.failures import dead_letter_row, error_text
from operators.records import JobRecord

# Dead letters, decisions and traces leave the job as (key text, value JSON bytes) rows:
# JSON encoded once, by orjson, straight to the UTF-8 bytes the Kafka record carries.
KEY_VALUE_ROW = Types.ROW_NAMED(["k", "v"], [Types.STRING(), Types.PRIMITIVE_ARRAY(Types.BYTE())])
DLQ_TAG = OutputTag("dead-letters", KEY_VALUE_ROW)
STAGE = "validate"


def _text(value: bytes | None) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", errors="replace")


def _epoch_ms(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    if hasattr(value, "to_epoch_milli"):  # pyflink.common.time.Instant (TIMESTAMP_LTZ)
        return int(value.to_epoch_milli())
    if hasattr(value, "toEpochMilli"):  # thread mode: a java.time.Instant proxy (PEMJA)
        return int(value.toEpochMilli())
    return int(value)


def source_fields(row: Any) -> tuple[dict[str, Any], bytes | None]:
    """A source row (key bytes, value bytes, topic, partition, offset, kafka timestamp):
    the record's ``source`` (what its trace and dead letter show), and the raw value."""
    key, raw, topic, partition, offset, kafka_ts = row
    source = {
        "key": _text(key),
        "raw": _text(raw),
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "kafka_timestamp": _epoch_ms(kafka_ts),
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


class ValidateEvents(ProcessFunction):
    """Input rows: (key bytes, value bytes, topic, partition, offset, kafka timestamp)."""

    def __init__(self, max_future_skew_ms: int) -> None:
        self.max_future_skew_ms = max_future_skew_ms

    def open(self, runtime_context: RuntimeContext) -> None:
        group = runtime_context.get_metrics_group().add_group("rtd")
        self._internal_errors = group.add_group("internal_errors").counter(STAGE)

    def process_element(self, value: Row, ctx: ProcessFunction.Context) -> Iterator[Any]:
        received = now_ms()
        source: dict[str, Any] = {}
        try:
            source, raw = source_fields(value)
            result = accepted(source, raw, self.max_future_skew_ms, received)
        except Exception as exc:  # noqa: BLE001 - no record's content may stop the job
            self._internal_errors.inc()
            yield DLQ_TAG, dead_letter_row(Rejection(Reason.INTERNAL_ERROR, error_text(exc)),
                                           source, received, stage=STAGE)
            return
        if isinstance(result, Rejection):
            yield DLQ_TAG, dead_letter_row(result, source, received)
            return
        yield result
