"""Validation: valid events go on as records, malformed ones to the dead-letter output."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

import orjson
from pyflink.common import Row, Types
from pyflink.datastream import OutputTag, ProcessFunction

from decisioning.transaction import Rejection, validate
from operators.clock import now_ms

# Dead letters, decisions and traces leave the job as (key text, value JSON bytes) rows:
# JSON encoded once, by orjson, straight to the UTF-8 bytes the Kafka record carries.
KEY_VALUE_ROW = Types.ROW_NAMED(["k", "v"], [Types.STRING(), Types.PRIMITIVE_ARRAY(Types.BYTE())])
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
    if hasattr(value, "toEpochMilli"):  # thread mode: a java.time.Instant proxy (PEMJA)
        return int(value.toEpochMilli())
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
    return Row(source["key"], orjson.dumps(doc))


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
