"""Validation: valid events go on as records, malformed ones to the dead-letter output."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from pyflink.common import Row, Types
from pyflink.datastream import OutputTag, ProcessFunction

from decisioning.transaction import Rejection, validate
from operators.clock import now_ms

# Dead letters and decisions leave the job as (key, value) string rows.
KEY_VALUE_ROW = Types.ROW_NAMED(["k", "v"], [Types.STRING(), Types.STRING()])
DLQ_TAG = OutputTag("dead-letters", KEY_VALUE_ROW)


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
    return int(value)


def dead_letter(rejection: Rejection, source: dict[str, Any], seen_at: int) -> Row:
    doc = {
        "reason": rejection.reason,
        "detail": rejection.detail,
        "raw": source["raw"],
        "topic": source["topic"],
        "partition": source["partition"],
        "offset": source["offset"],
        "seen_at": seen_at,
    }
    return Row(source["key"], json.dumps(doc, separators=(",", ":")))


class ValidateEvents(ProcessFunction):
    """Input rows: (key bytes, value bytes, topic, partition, offset, kafka timestamp)."""

    def process_element(self, value: Row, ctx: ProcessFunction.Context) -> Iterator[Any]:
        received = now_ms()
        key, raw, topic, partition, offset, kafka_ts = value
        source = {
            "key": _text(key),
            "raw": _text(raw),
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "kafka_timestamp": _epoch_ms(kafka_ts),
        }
        result = validate(raw)
        if isinstance(result, Rejection):
            yield DLQ_TAG, dead_letter(result, source, received)
            return
        yield {
            "source": source,
            "event": result,
            "features": {},
            "as_of": {},
            "late": False,
            "timings": {"received": received, "validated": now_ms()},
        }
