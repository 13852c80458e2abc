"""The transaction event schema (contract: "Transaction event") and its validation.

Validation is a pure function from the raw Kafka value (and the record's timestamp) to
either a ``Transaction`` dict or a ``Rejection`` with a reason code. Every rejection
goes to the dead-letter topic; nothing is dropped. Reason codes are part of the public
surface (docs/contract.md lists them).

No input can make validation raise: the payload is bounded in bytes before parsing,
orjson parses without Python recursion (it stops at 1,024 levels with an error), and
nesting depth and collection sizes are then bounded by an iterative walk, so a hostile
payload becomes a rejection, never a ``RecursionError`` that would restart the job.

The parsed event holds the contract's fields only: extra fields stay in the raw payload
(which the trace keeps), so no producer-chosen structure travels through the job.

The hot path uses hand-written checks instead of a pydantic model: each event is
validated once per decision and pydantic's error objects would then have to be
mapped back to reason codes anyway. ``TRANSACTION_JSON_SCHEMA`` documents the same
rules for producers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pycountry

from rtd_core.contract import MAX_FUTURE_SKEW_MS

MAX_PAYLOAD_BYTES = 64 * 1024
MAX_AMOUNT = 1_000_000
# Fixed bounds on structure (contract: "nesting or collections beyond fixed bounds"). A
# valid event is one flat object; these leave room for producers' extra metadata.
MAX_DEPTH = 16
MAX_COLLECTION_ITEMS = 1_000
# Contract default: an event more than this far ahead of its Kafka record's timestamp
# is rejected (``event_time_in_future``) and never moves a watermark.
DEFAULT_MAX_FUTURE_SKEW_MS = MAX_FUTURE_SKEW_MS
CHANNELS = frozenset({"pos", "ecom", "atm"})
CURRENCIES = frozenset(c.alpha_3 for c in pycountry.currencies)
COUNTRIES = frozenset(c.alpha_2 for c in pycountry.countries)

# RFC 3339 date-time (section 5.6), the one string form of event_time: the job's Kafka
# source parses the same pattern in SQL for its watermarks (flink_jobs/event_time_sql.py),
# so both ends agree on which strings are times. Groups: year, month, day, hour, minute,
# second, fraction digits, and the offset (Z, or sign, hours, minutes).
RFC3339_PATTERN = (
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt ]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]{1,9}))?(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)
_RFC3339 = re.compile(RFC3339_PATTERN)
# Epoch ms as a JSON integer: no sign, no leading zero, at most 18 digits (fits a long).
EPOCH_MS_PATTERN = r"0|[1-9][0-9]{0,17}"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
REQUIRED_STRINGS = ("event_id", "card_id", "customer_id", "merchant_id", "currency", "country")
OPTIONAL_STRINGS = ("merchant_category", "channel")
EVENT_FIELDS = (*REQUIRED_STRINGS, "amount", "event_time", *OPTIONAL_STRINGS)


class Reason:
    """Dead-letter reason codes."""

    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    OVERSIZED = "oversized"
    TOO_DEEP = "too_deep"
    TOO_MANY_ITEMS = "too_many_items"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    EMPTY_FIELD = "empty_field"
    AMOUNT_OUT_OF_RANGE = "amount_out_of_range"
    INVALID_CHANNEL = "invalid_channel"
    INVALID_CURRENCY = "invalid_currency"
    INVALID_COUNTRY = "invalid_country"
    INVALID_EVENT_TIME = "invalid_event_time"
    EVENT_TIME_IN_FUTURE = "event_time_in_future"
    # Not a validation outcome: a later stage failed on the record (operators/failures.py).
    INTERNAL_ERROR = "internal_error"

    ALL = (
        NOT_UTF8, NOT_JSON, NOT_OBJECT, OVERSIZED, TOO_DEEP, TOO_MANY_ITEMS, MISSING_FIELD,
        WRONG_TYPE, EMPTY_FIELD, AMOUNT_OUT_OF_RANGE, INVALID_CHANNEL, INVALID_CURRENCY,
        INVALID_COUNTRY, INVALID_EVENT_TIME, EVENT_TIME_IN_FUTURE, INTERNAL_ERROR,
    )


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str
    detail: str


def parse_rfc3339(text: str) -> int | None:
    """Epoch ms of an RFC 3339 date-time (fraction truncated to ms); None if invalid."""
    match = _RFC3339.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, sign, off_h, off_m = match.groups()
    if sign is None:
        offset = timedelta(0)
    else:
        if int(off_h) > 23 or int(off_m) > 59:
            return None
        offset = timedelta(hours=int(off_h), minutes=int(off_m))
        if sign == "-":
            offset = -offset
    try:
        moment = datetime(int(year), int(month), int(day), int(hour), int(minute),
                          int(second), tzinfo=timezone(offset))
    except ValueError:  # month 13, February 30, second 60, ...
        return None
    # Integer arithmetic: float timestamps can lose a millisecond.
    millis = (moment - _EPOCH) // timedelta(milliseconds=1)
    millis += int((fraction or "0")[:3].ljust(3, "0"))
    return millis if millis >= 0 else None


def parse_event_time(value: Any) -> int | None:
    """Epoch ms from an int or an RFC 3339 string with an offset; None if invalid."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str):
        return parse_rfc3339(value)
    return None


def _structure_rejection(doc: dict[str, Any]) -> Rejection | None:
    """Depth and size bounds, walked without recursion."""
    pending: list[tuple[Any, int]] = [(doc, 1)]
    while pending:
        node, depth = pending.pop()
        if depth > MAX_DEPTH:
            return Rejection(Reason.TOO_DEEP, f"nesting deeper than {MAX_DEPTH} levels")
        if len(node) > MAX_COLLECTION_ITEMS:
            return Rejection(Reason.TOO_MANY_ITEMS,
                             f"a collection of {len(node)} items > {MAX_COLLECTION_ITEMS}")
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, (dict, list)):
                pending.append((child, depth + 1))
    return None


def validate(raw: bytes | None, record_timestamp_ms: int | None = None,
             max_future_skew_ms: int = DEFAULT_MAX_FUTURE_SKEW_MS) -> dict[str, Any] | Rejection:
    """Validate one raw Kafka value.

    Returns the event as a dict of the contract's fields with ``event_time`` normalised
    to epoch ms (the value as sent stays in the raw payload, which the trace keeps), or
    a ``Rejection``. ``record_timestamp_ms``: the Kafka record's timestamp, against which
    an event time in the future is judged (None: not judged).
    """
    if raw is None:
        return Rejection(Reason.NOT_JSON, "empty value (null payload)")
    if len(raw) > MAX_PAYLOAD_BYTES:
        return Rejection(Reason.OVERSIZED, f"{len(raw)} bytes > {MAX_PAYLOAD_BYTES}")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection(Reason.NOT_UTF8, str(exc)[:200])
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        reason = Reason.TOO_DEEP if "recursion" in str(exc) else Reason.NOT_JSON
        return Rejection(reason, str(exc)[:200])
    if not isinstance(doc, dict):
        return Rejection(Reason.NOT_OBJECT, f"top-level JSON {type(doc).__name__}")
    bounds = _structure_rejection(doc)
    if bounds is not None:
        return bounds
    event = validate_object(doc)
    if isinstance(event, Rejection) or record_timestamp_ms is None:
        return event
    if event["event_time"] > record_timestamp_ms + max_future_skew_ms:
        ahead = event["event_time"] - record_timestamp_ms
        return Rejection(Reason.EVENT_TIME_IN_FUTURE,
                         f"event_time {event['event_time']} is {ahead} ms ahead of the record "
                         f"timestamp {record_timestamp_ms} (max {max_future_skew_ms} ms)")
    return event


def validate_object(doc: dict[str, Any]) -> dict[str, Any] | Rejection:
    for name in REQUIRED_STRINGS:
        value = doc.get(name)
        if value is None:
            return Rejection(Reason.MISSING_FIELD, name)
        if not isinstance(value, str):
            return Rejection(Reason.WRONG_TYPE, f"{name} must be a string")
        if not value:
            return Rejection(Reason.EMPTY_FIELD, name)
    for name in OPTIONAL_STRINGS:
        value = doc.get(name)
        if value is not None and not isinstance(value, str):
            return Rejection(Reason.WRONG_TYPE, f"{name} must be a string")

    amount = doc.get("amount")
    if amount is None:
        return Rejection(Reason.MISSING_FIELD, "amount")
    if isinstance(amount, bool) or not isinstance(amount, (int, float)):
        return Rejection(Reason.WRONG_TYPE, "amount must be a number")
    if not (0 < amount <= MAX_AMOUNT):  # also rejects NaN
        return Rejection(Reason.AMOUNT_OUT_OF_RANGE, f"amount {amount} not in (0, {MAX_AMOUNT}]")

    channel = doc.get("channel")
    if channel is not None and channel not in CHANNELS:
        return Rejection(Reason.INVALID_CHANNEL,
                         f"channel {channel[:40]!r} not in {sorted(CHANNELS)}")
    if doc["currency"] not in CURRENCIES:
        return Rejection(Reason.INVALID_CURRENCY,
                         f"{doc['currency'][:40]!r} is not an ISO 4217 code")
    if doc["country"] not in COUNTRIES:
        return Rejection(Reason.INVALID_COUNTRY,
                         f"{doc['country'][:40]!r} is not ISO 3166 alpha-2")

    raw_time = doc.get("event_time")
    if raw_time is None:
        return Rejection(Reason.MISSING_FIELD, "event_time")
    if isinstance(raw_time, bool) or not isinstance(raw_time, (int, str)):
        return Rejection(Reason.WRONG_TYPE, "event_time must be epoch ms (int) or RFC 3339")
    event_time = parse_event_time(raw_time)
    if event_time is None:
        return Rejection(Reason.INVALID_EVENT_TIME, f"{str(raw_time)[:60]!r}")

    return contract_event(doc, event_time)


def contract_event(doc: dict[str, Any], event_time: int) -> dict[str, Any]:
    """The parsed event of a valid payload ``doc``: the contract's fields only (absent
    optional ones None), amount as a float, ``event_time`` as epoch ms. A version 2
    trace keeps only the raw payload and rebuilds its event with this."""
    event = {name: doc.get(name) for name in EVENT_FIELDS}
    event["amount"] = float(doc["amount"])
    event["event_time"] = event_time
    return event


TRANSACTION_JSON_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "transaction",
    "type": "object",
    "required": [*REQUIRED_STRINGS[:4], "amount", "currency", "country", "event_time"],
    "properties": {
        "event_id": {"type": "string", "minLength": 1},
        "card_id": {"type": "string", "minLength": 1},
        "customer_id": {"type": "string", "minLength": 1},
        "merchant_id": {"type": "string", "minLength": 1},
        "merchant_category": {"type": ["string", "null"]},
        "amount": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_AMOUNT},
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "country": {"type": "string", "pattern": "^[A-Z]{2}$"},
        "channel": {"enum": sorted(CHANNELS) + [None]},
        "event_time": {
            "oneOf": [{"type": "integer", "minimum": 0}, {"type": "string", "format": "date-time"}]
        },
    },
}
