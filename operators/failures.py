"""A record that a stage cannot process becomes a dead letter, never a job restart.

Contract: "A record that a later stage cannot process for any reason goes to
`transactions-dlq` with reason `internal_error`, the stage and the error; it is counted
in a metric. No record's content can make the job restart."

Each stage catches what fails on one record and marks the record (``failure``: stage and
error); later stages pass a marked record on untouched, and the decide stage turns it
into the dead letter (operators/decide.py). So one side output (``DEAD_LETTER_TAG``)
carries every stage's failures to the dead-letter sink, and the record keeps its Kafka
source for the letter.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from pyflink.common import Row, Types
from pyflink.datastream import OutputTag

from decisioning.transaction import Reason, Rejection
from operators.records import JobRecord

# Dead letters, decisions and traces leave the job as (key text, value JSON bytes) rows:
# JSON encoded once, by orjson, straight to the UTF-8 bytes the Kafka record carries.
KEY_VALUE_ROW = Types.ROW_NAMED(["k", "v"], [Types.STRING(), Types.PRIMITIVE_ARRAY(Types.BYTE())])
# Every stage's dead letters, validation's and internal errors, leave by this side output.
DEAD_LETTER_TAG = OutputTag("dead-letters", KEY_VALUE_ROW)
DETAIL_LIMIT = 500
_log = logging.getLogger(__name__)


def error_text(exc: BaseException) -> str:
    try:
        return f"{type(exc).__name__}: {exc}"[:DETAIL_LIMIT]
    except Exception:  # noqa: BLE001 - an exception whose str() fails still has a type
        return type(exc).__name__


def mark_failed(value: JobRecord, stage: str, exc: BaseException) -> JobRecord:
    """``value`` marked as failed at ``stage``; logged once, here, with the traceback."""
    _log.warning("record failed at stage %s", stage, exc_info=exc)
    value.failure = {"stage": stage, "error": error_text(exc)}
    return value


def has_failed(value: JobRecord) -> bool:
    return value.failure is not None


def dead_letter_row(rejection: Rejection, source: dict[str, Any], seen_at: int,
                    stage: str = "validate") -> Row:
    """The dead-letter record: (original key, JSON value). ``stage``: where it was
    rejected (validation, or the stage an internal error happened in)."""
    doc = {
        "reason": rejection.reason,
        "detail": rejection.detail,
        "stage": stage,
        "raw": source.get("raw"),
        "topic": source.get("topic"),
        "partition": source.get("partition"),
        "offset": source.get("offset"),
        "seen_at": seen_at,
    }
    return Row(source.get("key"), orjson.dumps(doc))


def internal_error_row(value: JobRecord, seen_at: int) -> Row:
    failure = value.failure or {"stage": "unknown", "error": "no failure recorded"}
    return dead_letter_row(Rejection(Reason.INTERNAL_ERROR, failure["error"]),
                           value.source, seen_at, stage=failure["stage"])
