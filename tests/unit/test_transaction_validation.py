import json

import pytest

from decisioning.transaction import MAX_PAYLOAD_BYTES, Reason, Rejection, validate

pytestmark = pytest.mark.unit

VALID = {
    "event_id": "e1", "card_id": "c1", "customer_id": "u1", "merchant_id": "m1",
    "merchant_category": "5411", "amount": 12.5, "currency": "EUR", "country": "DE",
    "channel": "pos", "event_time": 1_700_000_000_000,
}


def raw(**changes):
    doc = {**VALID, **changes}
    return json.dumps({k: v for k, v in doc.items() if v is not ...}).encode()


def reason(payload):
    result = validate(payload)
    assert isinstance(result, Rejection), result
    return result.reason


def test_valid_event_passes_with_event_time_in_ms():
    event = validate(raw())
    assert isinstance(event, dict)
    assert event["event_time"] == 1_700_000_000_000
    assert event["amount"] == 12.5


def test_rfc3339_event_time_is_normalised_to_epoch_ms():
    event = validate(raw(event_time="2023-11-14T22:13:20.250Z"))
    assert event["event_time"] == 1_700_000_000_250
    event = validate(raw(event_time="2023-11-14T23:13:20+01:00"))
    assert event["event_time"] == 1_700_000_000_000


def test_rfc3339_milliseconds_are_exact():
    assert validate(raw(event_time="1970-01-01T00:00:01.001Z"))["event_time"] == 1001


def test_integer_amount_and_optional_fields_absent_are_valid():
    event = validate(raw(amount=1_000_000, channel=..., merchant_category=...))
    assert event["amount"] == 1_000_000.0 and event["channel"] is None


@pytest.mark.parametrize("payload, expected", [
    (b"\xff\xfe not utf8", Reason.NOT_UTF8),
    (b"{not json", Reason.NOT_JSON),
    (b"[1, 2]", Reason.NOT_OBJECT),
    (b"42", Reason.NOT_OBJECT),
    (None, Reason.NOT_JSON),
])
def test_undecodable_payloads(payload, expected):
    assert reason(payload) == expected


@pytest.mark.parametrize("field", ["event_id", "card_id", "customer_id", "merchant_id",
                                   "amount", "currency", "country", "event_time"])
def test_each_required_field_missing(field):
    assert reason(raw(**{field: ...})) == Reason.MISSING_FIELD


@pytest.mark.parametrize("changes, expected", [
    ({"card_id": 17}, Reason.WRONG_TYPE),
    ({"amount": "12.5"}, Reason.WRONG_TYPE),
    ({"amount": True}, Reason.WRONG_TYPE),
    ({"channel": 3}, Reason.WRONG_TYPE),
    ({"event_time": 1.5e12}, Reason.WRONG_TYPE),
    ({"card_id": ""}, Reason.EMPTY_FIELD),
    ({"amount": 0}, Reason.AMOUNT_OUT_OF_RANGE),
    ({"amount": -3}, Reason.AMOUNT_OUT_OF_RANGE),
    ({"amount": 1_000_000.01}, Reason.AMOUNT_OUT_OF_RANGE),
    ({"channel": "phone"}, Reason.INVALID_CHANNEL),
    ({"currency": "usd"}, Reason.INVALID_CURRENCY),
    ({"currency": "XYZ"}, Reason.INVALID_CURRENCY),
    ({"country": "ZZ"}, Reason.INVALID_COUNTRY),
    ({"event_time": "yesterday"}, Reason.INVALID_EVENT_TIME),
    ({"event_time": "2023-11-14T22:13:20"}, Reason.INVALID_EVENT_TIME),
    ({"event_time": -5}, Reason.INVALID_EVENT_TIME),
])
def test_schema_violations_have_reason_codes(changes, expected):
    assert reason(raw(**changes)) == expected


def test_oversized_payload_is_rejected_before_parsing():
    payload = raw(padding="x" * MAX_PAYLOAD_BYTES)
    assert len(payload) > MAX_PAYLOAD_BYTES
    assert reason(payload) == Reason.OVERSIZED


def test_payload_exactly_at_limit_is_not_oversized():
    base = raw(padding="")
    payload = raw(padding="x" * (MAX_PAYLOAD_BYTES - len(base)))
    assert len(payload) == MAX_PAYLOAD_BYTES
    assert isinstance(validate(payload), dict)
