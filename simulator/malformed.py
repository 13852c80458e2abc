"""Malformed transaction payloads, one per rejection reason the job's validator uses.

Each payload starts from a valid event and breaks exactly one thing, so the reason the
validator gives is unambiguous whatever order it checks in. Values that a reasonable
validator could file under two reasons (a channel given as a number: wrong_type or
invalid_channel?) are deliberately not produced.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

# Reason codes, as written into `transactions-dlq` records.
NOT_JSON = "not_json"
NOT_UTF8 = "not_utf8"
NOT_OBJECT = "not_object"
MISSING_FIELD = "missing_field"
WRONG_TYPE = "wrong_type"
AMOUNT_OUT_OF_RANGE = "amount_out_of_range"
INVALID_CHANNEL = "invalid_channel"
INVALID_CURRENCY = "invalid_currency"
INVALID_COUNTRY = "invalid_country"
INVALID_EVENT_TIME = "invalid_event_time"
OVERSIZED = "oversized"

REASONS: tuple[str, ...] = (
    NOT_JSON,
    NOT_UTF8,
    NOT_OBJECT,
    MISSING_FIELD,
    WRONG_TYPE,
    AMOUNT_OUT_OF_RANGE,
    INVALID_CHANNEL,
    INVALID_CURRENCY,
    INVALID_COUNTRY,
    INVALID_EVENT_TIME,
    OVERSIZED,
)

# The contract's payload limit: a value longer than this is rejected as oversized.
MAX_EVENT_BYTES = 65_536
# Fields the contract marks required; merchant_category and channel are optional there.
REQUIRED_FIELDS: tuple[str, ...] = (
    "event_id",
    "card_id",
    "customer_id",
    "merchant_id",
    "amount",
    "currency",
    "country",
    "event_time",
)

_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class MalformedPayload(NamedTuple):
    reason: str
    key: bytes | None  # the card_id when the payload still names one, else None
    value: bytes


def _dump(event: Mapping[str, Any]) -> bytes:
    return _encode(event).encode("utf-8")


def _not_json(rng: random.Random, event: dict[str, Any]) -> tuple[bytes, bool]:
    raw = _dump(event)
    variants: tuple[bytes, ...] = (
        # A producer that died mid-write: unbalanced braces can never parse.
        raw[: rng.randint(1, len(raw) - 2)],
        b"card_id=" + event["card_id"].encode() + b"&amount=" + str(event["amount"]).encode(),
        raw.replace(b'"', b"'"),
        b"",
        b"<txn><amount>12.30</amount></txn>",
    )
    choice = rng.randrange(len(variants))
    # Form-encoded and quoted variants still carry the card; the rest lose their key.
    return variants[choice], choice in (0, 1, 2)


def _not_utf8(rng: random.Random, event: dict[str, Any]) -> tuple[bytes, bool]:
    raw = _dump(event)
    # An otherwise valid event whose merchant_id holds a byte sequence UTF-8 forbids:
    # a lone continuation byte, an overlong encoding or Latin-1 text.
    bad = rng.choice((b"\x80", b"\xc0\xaf", b"caf\xe9"))
    needle = b'"merchant_id":"'
    at = raw.index(needle) + len(needle)
    return raw[:at] + bad + raw[at:], True


def _not_object(rng: random.Random, event: dict[str, Any]) -> tuple[bytes, bool]:
    variants: tuple[bytes, ...] = (
        b"[" + _dump(event) + b"]",
        str(event["amount"]).encode(),
        b'"' + event["event_id"].encode() + b'"',
        b"null",
        b"true",
    )
    return variants[rng.randrange(len(variants))], True


def _missing_field(rng: random.Random, event: dict[str, Any]) -> tuple[bytes, bool]:
    field = rng.choice(REQUIRED_FIELDS)
    broken = {k: v for k, v in event.items() if k != field}
    return _dump(broken), field != "card_id"


def _wrong_type(rng: random.Random, event: dict[str, Any]) -> tuple[bytes, bool]:
    broken = dict(event)
    field = rng.choice(("amount", "card_id", "event_id", "merchant_id", "customer_id"))
    if field == "amount":
        broken["amount"] = str(event["amount"])  # "12.3": a number in quotes
    elif field == "card_id":
        broken["card_id"] = rng.randint(1_000_000, 9_999_999)
    elif field == "event_id":
        broken["event_id"] = rng.randint(1, 10**12)
    elif field == "merchant_id":
        broken["merchant_id"] = [event["merchant_id"]]
    else:
        broken["customer_id"] = {"id": event["customer_id"]}
    return _dump(broken), field != "card_id"


def _amount_out_of_range(rng: random.Random, event: dict[str, Any]) -> tuple[bytes, bool]:
    broken = dict(event)
    broken["amount"] = rng.choice(
        (0, 0.0, -1.0, -round(rng.uniform(0.01, 500), 2), 1_000_000.01, 5e6)
    )
    return _dump(broken), True


def _replace(
    field: str, values: tuple[Any, ...]
) -> Callable[[random.Random, dict[str, Any]], tuple[bytes, bool]]:
    def make(rng: random.Random, event: dict[str, Any]) -> tuple[bytes, bool]:
        broken = dict(event)
        broken[field] = rng.choice(values)
        return _dump(broken), True

    return make


def _oversized(rng: random.Random, event: dict[str, Any]) -> tuple[bytes, bool]:
    # Valid in every field; only the extra padding pushes it past the limit.
    raw = _dump(event)
    target = rng.randint(MAX_EVENT_BYTES + 1, MAX_EVENT_BYTES + 16_384)
    overhead = len(b',"padding":""')
    padded = raw[:-1] + b',"padding":"' + b"x" * (target - len(raw) - overhead) + b'"}'
    return padded, True


_MAKERS: dict[str, Callable[[random.Random, dict[str, Any]], tuple[bytes, bool]]] = {
    NOT_JSON: _not_json,
    NOT_UTF8: _not_utf8,
    NOT_OBJECT: _not_object,
    MISSING_FIELD: _missing_field,
    WRONG_TYPE: _wrong_type,
    AMOUNT_OUT_OF_RANGE: _amount_out_of_range,
    # Values that fail on format, not on a lookup table, so a format check suffices;
    # no empty strings for required fields, which a validator might call missing.
    INVALID_CHANNEL: _replace("channel", ("phone", "mail", "ussd", "", "card-present")),
    INVALID_CURRENCY: _replace("currency", ("usd1", "usd", "US", "DOLLAR", "12$")),
    INVALID_COUNTRY: _replace("country", ("usa", "U1", "us", "United States", "U")),
    INVALID_EVENT_TIME: _replace(
        "event_time", ("yesterday", -1, -1_700_000_000_000, "2024-13-45T99:00:00Z", "now")
    ),
    OVERSIZED: _oversized,
}


def make_malformed(
    rng: random.Random, event: dict[str, Any], reason: str | None = None
) -> MalformedPayload:
    """Break a valid `event` (left unchanged) for `reason`, or for a reason drawn from `rng`."""
    if reason is None:
        reason = REASONS[int(rng.random() * len(REASONS))]
    try:
        maker = _MAKERS[reason]
    except KeyError:
        raise ValueError(
            f"unknown malformed reason {reason!r}; known: {', '.join(REASONS)}"
        ) from None
    value, keyed = maker(rng, event)
    key = event["card_id"].encode("utf-8") if keyed else None
    return MalformedPayload(reason, key, value)
