"""The transaction event schema (contract: "Transaction event") and its validation.

Validation is a pure function from the raw Kafka value to either a ``Transaction``
dict or a ``Rejection`` with a reason code. Every rejection goes to the dead-letter
topic; nothing is dropped. Reason codes are part of the public surface
(docs/contract.md lists them).

The hot path uses hand-written checks instead of a pydantic model: each event is
validated once per decision and pydantic's error objects would then have to be
mapped back to reason codes anyway. ``TRANSACTION_JSON_SCHEMA`` documents the same
rules for producers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import pycountry

MAX_PAYLOAD_BYTES = 64 * 1024
MAX_AMOUNT = 1_000_000
CHANNELS = frozenset({"pos", "ecom", "atm"})
CURRENCIES = frozenset(c.alpha_3 for c in pycountry.currencies)
COUNTRIES = frozenset(c.alpha_2 for c in pycountry.countries)

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
REQUIRED_STRINGS = ("event_id", "card_id", "customer_id", "merchant_id", "currency", "country")
OPTIONAL_STRINGS = ("merchant_category", "channel")


class Reason:
    """Dead-letter reason codes."""

    NOT_UTF8 = "not_utf8"
    NOT_JSON = "not_json"
    NOT_OBJECT = "not_object"
    OVERSIZED = "oversized"
    MISSING_FIELD = "missing_field"
    WRONG_TYPE = "wrong_type"
    EMPTY_FIELD = "empty_field"
    AMOUNT_OUT_OF_RANGE = "amount_out_of_range"
    INVALID_CHANNEL = "invalid_channel"
    INVALID_CURRENCY = "invalid_currency"
    INVALID_COUNTRY = "invalid_country"
    INVALID_EVENT_TIME = "invalid_event_time"

    ALL = (
        NOT_UTF8, NOT_JSON, NOT_OBJECT, OVERSIZED, MISSING_FIELD, WRONG_TYPE, EMPTY_FIELD,
        AMOUNT_OUT_OF_RANGE, INVALID_CHANNEL, INVALID_CURRENCY, INVALID_COUNTRY,
        INVALID_EVENT_TIME,
    )


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: str
    detail: str


def parse_event_time(value: Any) -> int | None:
    """Epoch ms from an int or an RFC 3339 string with an offset; None if invalid."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str):
        text = value.strip()
        if "T" not in text and "t" not in text and " " not in text:
            return None
        try:
            parsed = datetime.fromisoformat(text.replace("z", "Z"))
        except ValueError:
            return None
        if parsed.tzinfo is None:  # RFC 3339 requires an offset
            return None
        # Integer arithmetic: float timestamps can lose a millisecond.
        millis = (parsed - _EPOCH) // timedelta(milliseconds=1)
        return millis if millis >= 0 else None
    return None


def validate(raw: bytes | None) -> dict[str, Any] | Rejection:
    """Validate one raw Kafka value.

    Returns the event as a dict with ``event_time`` normalised to epoch ms (the value
    as sent stays in the raw payload, which the trace keeps), or a ``Rejection``.
    """
    if raw is None:
        return Rejection(Reason.NOT_JSON, "empty value (null payload)")
    if len(raw) > MAX_PAYLOAD_BYTES:
        return Rejection(Reason.OVERSIZED, f"{len(raw)} bytes > {MAX_PAYLOAD_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejection(Reason.NOT_UTF8, str(exc))
    try:
        doc = json.loads(text)
    except ValueError as exc:
        return Rejection(Reason.NOT_JSON, str(exc)[:200])
    if not isinstance(doc, dict):
        return Rejection(Reason.NOT_OBJECT, f"top-level JSON {type(doc).__name__}")
    return validate_object(doc)


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
        return Rejection(Reason.INVALID_CHANNEL, f"channel {channel!r} not in {sorted(CHANNELS)}")
    if doc["currency"] not in CURRENCIES:
        return Rejection(Reason.INVALID_CURRENCY, f"{doc['currency']!r} is not an ISO 4217 code")
    if doc["country"] not in COUNTRIES:
        return Rejection(Reason.INVALID_COUNTRY, f"{doc['country']!r} is not ISO 3166 alpha-2")

    raw_time = doc.get("event_time")
    if raw_time is None:
        return Rejection(Reason.MISSING_FIELD, "event_time")
    if isinstance(raw_time, bool) or not isinstance(raw_time, (int, str)):
        return Rejection(Reason.WRONG_TYPE, "event_time must be epoch ms (int) or RFC 3339")
    event_time = parse_event_time(raw_time)
    if event_time is None:
        return Rejection(Reason.INVALID_EVENT_TIME, f"{raw_time!r}")

    event = dict(doc)
    event["amount"] = float(amount)
    event["event_time"] = event_time
    event.setdefault("merchant_category", None)
    event.setdefault("channel", None)
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
