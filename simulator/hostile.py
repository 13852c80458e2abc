"""Hostile payloads: inputs written to break a parser or a job, not honest mistakes.

Each one is built around a valid event (its ids stay unique, so whatever the job makes of
it can be found again) and says what the contract expects of it: a dead letter with a
given reason, or a valid event (``VALID``) that must get exactly one decision. Used by the
validation fuzz tests, the live hostile-input test and the hostile-input drill.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

VALID = "valid"
MAX_BYTES = 65_536


class HostilePayload(NamedTuple):
    name: str
    key: bytes | None
    value: bytes | None
    expected: str  # a dead-letter reason, or VALID


def _dump(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=True).encode("utf-8")


def _pad_to(event: dict[str, Any], size: int) -> bytes:
    """The event with an extra string field that makes it exactly ``size`` bytes."""
    base = len(_dump({**event, "pad": ""}))
    return _dump({**event, "pad": "x" * (size - base)})


def _nested(depth: int, opener: bytes = b"[", closer: bytes = b"]") -> bytes:
    return opener * depth + b"1" + closer * depth


def _nested_in(event: dict[str, Any], depth: int) -> bytes:
    raw = _dump(event)
    return raw[:-1] + b',"meta":' + (b'{"a":' * depth) + b"1" + (b"}" * depth) + b"}"


def _cases(event: dict[str, Any], now_ms: int) -> Iterator[tuple[str, bytes | None, str]]:
    e = event
    yield "deep-array-5000", _nested(5000), "too_deep"
    yield "deep-object-in-event-3000", _nested_in(e, 3000), "too_deep"
    yield "deep-object-in-event-1030", _nested_in(e, 1030), "too_deep"
    yield "deep-object-in-event-200", _nested_in(e, 200), "too_deep"
    yield "nesting-at-the-bound", _nested_in(e, 14), VALID
    yield "huge-array-in-event", _dump({**e, "meta": list(range(5000))}), "too_many_items"
    # Beyond a double: orjson refuses the document (infinity), as it does 1e400.
    yield "huge-int-amount", _dump(e)[:-1] + b',"amount":' + b"9" * 400 + b"}", "not_json"
    yield "big-int-amount", _dump({**e, "amount": 10**22}), "amount_out_of_range"
    yield "huge-int-event-time", _dump({**e, "event_time": 10**30}), "wrong_type"
    yield "u64-event-time", _dump({**e, "event_time": 2**64 - 1}), "event_time_in_future"
    yield "amount-1e400", _dump(e)[:-1] + b',"amount":1e400}', "not_json"
    yield "amount-nan", _dump({**e, "amount": float("nan")}), "not_json"
    yield "amount-infinity", _dump({**e, "amount": float("inf")}), "not_json"
    yield "amount-tiny", _dump({**e, "amount": 1e-320}), VALID
    yield "bad-utf8", _dump(e).replace(b'"card_id"', b'"card_\xff\xfeid"'), "not_utf8"
    yield "overlong-utf8", _dump(e)[:-1] + b',"x":"\xc0\xaf"}', "not_utf8"
    yield "bom", b"\xef\xbb\xbf" + _dump(e), "not_json"
    yield "lone-surrogate", _dump(e)[:-1] + b',"x":"\\ud800"}', "not_json"
    yield "nul-in-id", _dump({**e, "merchant_id": "m\u0000x"}), VALID
    yield "duplicate-keys-last-valid", _dump(e)[:-1] + b',"amount":-5,"amount":7.5}', VALID
    yield "duplicate-keys-last-invalid", _dump(e)[:-1] + b',"amount":7.5,"amount":-5}', \
        "amount_out_of_range"
    yield "far-future", _dump({**e, "event_time": 4_102_444_800_000}), "event_time_in_future"
    yield "far-future-rfc3339", _dump({**e, "event_time": "2100-01-01T00:00:00Z"}), \
        "event_time_in_future"
    yield "just-in-future", _dump({**e, "event_time": now_ms + 60_000}), VALID
    yield "far-past-epoch-0", _dump({**e, "event_time": 0}), VALID
    yield "negative-time", _dump({**e, "event_time": -1}), "invalid_event_time"
    yield "feb-30", _dump({**e, "event_time": "2023-02-30T00:00:00Z"}), "invalid_event_time"
    yield "leap-second", _dump({**e, "event_time": "2016-12-31T23:59:60Z"}), \
        "invalid_event_time"
    yield "no-offset", _dump({**e, "event_time": "2023-11-14T22:13:20"}), "invalid_event_time"
    yield "float-time", _dump({**e, "event_time": 1.7e12}), "wrong_type"
    yield "string-number-time", _dump({**e, "event_time": str(now_ms)}), "invalid_event_time"
    for field in ("event_id", "card_id", "customer_id", "merchant_id", "amount", "currency",
                  "country", "event_time"):
        yield f"null-{field}", _dump({**e, field: None}), "missing_field"
    yield "null-channel", _dump({**e, "channel": None}), VALID
    yield "null-merchant-category", _dump({**e, "merchant_category": None}), VALID
    yield "no-optional-fields", _dump({k: v for k, v in e.items()
                                      if k not in ("channel", "merchant_category")}), VALID
    yield "object-as-card", _dump({**e, "card_id": {"$ne": 1}}), "wrong_type"
    yield "array-as-amount", _dump({**e, "amount": [1]}), "wrong_type"
    yield "bool-amount", _dump({**e, "amount": True}), "wrong_type"
    yield "exactly-64kib", _pad_to(e, MAX_BYTES), VALID
    yield "64kib-plus-one", _pad_to(e, MAX_BYTES + 1), "oversized"
    yield "900kb", _pad_to(e, 900_000), "oversized"  # under the broker's 1 MB message limit
    yield "empty", b"", "not_json"
    yield "null-payload", None, "not_json"
    yield "json-null", b"null", "not_object"
    yield "json-string", b'"hello"', "not_object"
    yield "truncated", _dump(e)[:-7], "not_json"
    yield "whitespace-only", b" \n\t ", "not_json"
    yield "script-in-field", _dump({**e, "merchant_id": "<script>alert(1)</script>"}), VALID
    yield "very-long-id", _dump({**e, "merchant_id": "m" * 60_000}), VALID


def hostile_payloads(make_event: Callable[[str], dict[str, Any]], now_ms: int,
                     seed: int = 0) -> list[HostilePayload]:
    """One payload per hostile case. ``make_event(event_id)``: a valid event (with an
    event time near ``now_ms``, the record timestamp the payload will get)."""
    rng = random.Random(seed)
    out = []
    for i, (name, value, expected) in enumerate(
            _cases(make_event(f"hostile-{seed}-{0:04d}"), now_ms)):
        # Each case gets its own event id, so its outcome can be found by id.
        event = make_event(f"hostile-{seed}-{i:04d}")
        if value is not None:
            value = value.replace(b"hostile-%d-0000" % seed, event["event_id"].encode())
        key = event["card_id"].encode() if rng.random() < 0.9 else None
        out.append(HostilePayload(name, key, value, expected))
    return out


class FuzzedPayload(NamedTuple):
    name: str
    key: bytes | None
    value: bytes | None
    event_id: str  # the id the payload was built around; no mutation touches it
    expected: str | None  # a dead-letter reason, VALID, or None: either is right


# Values a fuzzed field may get: wrong types, edge numbers, odd strings, nesting.
_ODD_VALUES: tuple[Any, ...] = (
    None, [], {}, "", " ", "x" * 300, -1, 0, 1e308, -1e308, 2**63, -(2**63), True, False,
    "\u0000", "\ud7ff\ue000", "null", "NaN", [1, [2, [3]]], {"$gt": ""}, 1.5, "1.5",
    "2023-01-01T00:00:00Z", "9" * 40,
)
_MUTATIONS = ("corpus", "flip", "truncate", "odd-value", "drop-field", "extra-fields",
              "garbage", "nest", "duplicate-key")


def _flip(raw: bytes, keep: tuple[int, int], rng: random.Random) -> bytes:
    """1-3 bytes replaced by random ones, outside ``keep`` (the event id's span)."""
    out = bytearray(raw)
    for _ in range(rng.randint(1, 3)):
        i = rng.randrange(len(out) - (keep[1] - keep[0]))
        out[i if i < keep[0] else i + keep[1] - keep[0]] = rng.randrange(256)
    return bytes(out)


def fuzzed_payloads(make_event: Callable[[str], dict[str, Any]], count: int, *, seed: int,
                    now_ms: int) -> list[FuzzedPayload]:
    """``count`` payloads for the hostile-input drill: the hostile corpus above, cycled
    with fresh ids (its cases over 64 KiB only now and then), and random mutations of
    valid events. Every payload has its own event id, never mutated, so each one's
    decision can be found; its dead letter is found by partition and offset."""
    rng = random.Random(seed)
    # The corpus once, around a placeholder id replaced per payload.
    placeholder = f"fz-{seed}-PPPPPPP"  # as long as the ids, so sizes stay exact
    corpus = list(_cases(make_event(placeholder), now_ms))
    out: list[FuzzedPayload] = []
    taken = 0  # corpus cases considered so far
    while len(out) < count:
        n = len(out)
        event_id = f"fz-{seed}-{n:07d}"
        event = make_event(event_id)
        key = event["card_id"].encode() if rng.random() < 0.9 else None
        kind = rng.choice(_MUTATIONS)
        raw = _dump(event)
        expected: str | None = None
        if kind == "corpus":
            name, value, expected = corpus[taken % len(corpus)]
            taken += 1
            if value is not None and len(value) > MAX_BYTES and taken // len(corpus) % 50:
                continue  # the big ones are costly to send: in one round of 50
            if value is not None:
                value = value.replace(placeholder.encode(), event_id.encode())
            out.append(FuzzedPayload(f"corpus:{name}", key, value, event_id, expected))
            continue
        if kind == "flip":
            start = raw.index(event_id.encode())
            value = _flip(raw, (start - 1, start + len(event_id) + 1), rng)
        elif kind == "truncate":
            value = raw[:rng.randrange(len(raw))]
        elif kind == "odd-value":
            field = rng.choice([k for k in event if k != "event_id"])
            value = _dump({**event, field: rng.choice(_ODD_VALUES)})
        elif kind == "drop-field":
            field = rng.choice([k for k in event if k != "event_id"])
            value = _dump({k: v for k, v in event.items() if k != field})
        elif kind == "extra-fields":
            extra = {f"x{i}": rng.choice(_ODD_VALUES) for i in range(rng.randint(1, 8))}
            value = _dump({**event, **extra})
        elif kind == "garbage":
            value = rng.randbytes(rng.randint(0, 200))
        elif kind == "nest":
            value = _nested_in(event, rng.choice((15, 16, 64, 1000, 3000)))
        else:  # duplicate-key
            field = rng.choice([k for k in event if k != "event_id"])
            value = raw[:-1] + b',"' + field.encode() + b'":' + _dump(rng.choice(_ODD_VALUES)) \
                + b"}"
        out.append(FuzzedPayload(kind, key, value, event_id, None))
    return out
