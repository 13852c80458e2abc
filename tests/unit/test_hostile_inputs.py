"""Validation never raises: every input is exactly one valid event or one rejection.

A corpus of hostile payloads (simulator/hostile.py) with the outcome the contract
expects of each, plus hypothesis-generated JSON documents and byte strings. A valid
event must also survive what the job does with it next (pickling between operators,
orjson for the trace), since a failure there would be the same poison pill later.
"""

from __future__ import annotations

import json
import pickle

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from decisioning.transaction import EVENT_FIELDS, Reason, Rejection, validate
from simulator.hostile import VALID, hostile_payloads
from tests.builders import T0, encode, txn

pytestmark = pytest.mark.unit

CORPUS = hostile_payloads(lambda event_id: txn("c-hostile", at=T0, event_id=event_id), T0)


def check_outcome(raw, record_time=T0):
    result = validate(raw, record_time)
    if isinstance(result, Rejection):
        assert result.reason in Reason.ALL and result.reason != Reason.INTERNAL_ERROR
        assert isinstance(result.detail, str) and len(result.detail) <= 300
        return result.reason
    assert set(result) == set(EVENT_FIELDS)
    pickle.loads(pickle.dumps(result))
    orjson.dumps({"input": {"event": result, "raw": raw.decode("utf-8", "replace")}})
    return VALID


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_each_hostile_payload_gets_the_contract_outcome(case):
    assert check_outcome(case.value) == case.expected


def test_the_corpus_covers_every_kind_the_contract_names():
    names = " ".join(c.name for c in CORPUS)
    for kind in ("deep", "huge", "nan", "infinity", "utf8", "bom", "duplicate", "far-future",
                 "far-past", "null-", "64kib"):
        assert kind in names, kind
    assert len({c.value for c in CORPUS}) == len(CORPUS)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.text(max_size=8), children, max_size=5),
    max_leaves=30,
)
fields = st.sampled_from([*EVENT_FIELDS, "extra"])


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(fields, json_values, max_size=12))
def test_any_json_object_is_one_event_or_one_rejection(doc):
    check_outcome(json.dumps(doc).encode())


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(fields, json_values, max_size=4), st.integers(0, 12))
def test_a_valid_event_with_one_field_replaced_never_raises(changes, at):
    check_outcome(encode({**txn("c", at=T0 - at), **changes}))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_any_bytes_are_one_event_or_one_rejection(raw):
    check_outcome(raw)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 5000), st.sampled_from([(b"[", b"]"), (b'{"a":', b"}")]))
def test_nesting_at_any_depth_is_bounded(depth, brackets):
    opener, closer = brackets
    reason = check_outcome(opener * depth + b"1" + closer * depth)
    assert reason in ("not_object", "too_deep", "missing_field")
