"""The simulator's generator, population and malformed payloads; no broker needed."""

from __future__ import annotations

import heapq
import json
import random
import re
from collections import Counter, defaultdict
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rtd_core.config import load_config
from simulator import (
    LABEL,
    MALFORMED,
    MAX_EVENT_BYTES,
    REASONS,
    TXN,
    GeneratorSettings,
    Population,
    SimRecord,
    TransactionGenerator,
    format_rfc3339,
    generate,
    make_malformed,
)
from simulator.population import CATEGORIES, COUNTRIES
from tests.builders import HOUR, MIN, SEC, T0, encode, txn

pytestmark = pytest.mark.unit

CONTRACT_FIELDS = (
    "event_id", "card_id", "customer_id", "merchant_id", "merchant_category",
    "amount", "currency", "country", "channel", "event_time",
)  # fmt: skip
REQUIRED = (
    "event_id",
    "card_id",
    "customer_id",
    "merchant_id",
    "amount",
    "currency",
    "country",
    "event_time",
)
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
CURRENCY_OF = {c.code: c.currency for c in COUNTRIES}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SMALL = {"n_customers": 2_000}  # a cheap population for property tests


def event_time_ms(value: Any) -> int:
    if isinstance(value, int):
        return value
    # Exact integer arithmetic: timestamp() * 1000 is a float and may lose the last ms.
    delta = datetime.fromisoformat(value) - EPOCH
    return delta.days * 86_400_000 + delta.seconds * 1_000 + delta.microseconds // 1_000


def reference_reason(raw: bytes) -> str | None:
    """An independent reading of the contract: the reason a payload fails, or None."""
    if len(raw) > MAX_EVENT_BYTES:
        return "oversized"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "not_utf8"
    try:
        obj = json.loads(text)
    except ValueError:
        return "not_json"
    if not isinstance(obj, dict):
        return "not_object"
    if any(f not in obj for f in REQUIRED):
        return "missing_field"
    if any(
        not isinstance(obj[f], str) for f in ("event_id", "card_id", "customer_id", "merchant_id")
    ):
        return "wrong_type"
    amount = obj["amount"]
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        return "wrong_type"
    if not 0 < amount <= 1_000_000:
        return "amount_out_of_range"
    if "channel" in obj and obj["channel"] not in ("pos", "ecom", "atm"):
        return "invalid_channel"
    if not re.fullmatch(r"[A-Z]{3}", str(obj["currency"])):
        return "invalid_currency"
    if not re.fullmatch(r"[A-Z]{2}", str(obj["country"])):
        return "invalid_country"
    t = obj["event_time"]
    if isinstance(t, bool) or not isinstance(t, int | str):
        return "invalid_event_time"
    if isinstance(t, int) and t < 0:
        return "invalid_event_time"
    if isinstance(t, str):
        try:
            if not _RFC3339.match(t):
                raise ValueError(t)
            datetime.fromisoformat(t)
        except ValueError:
            return "invalid_event_time"
    return None


@lru_cache(maxsize=8)
def sample(count: int, seed: int = 7, **overrides: Any) -> tuple[SimRecord, ...]:
    return tuple(generate(GeneratorSettings(start_time_ms=T0, seed=seed, **overrides), count))


def txns(records: tuple[SimRecord, ...] | list[SimRecord]) -> list[SimRecord]:
    return [r for r in records if r.kind == TXN]


# -- determinism --------------------------------------------------------------------


def test_same_seed_and_start_give_identical_bytes() -> None:
    a = generate(GeneratorSettings(start_time_ms=T0, seed=3), 5_000)
    b = generate(GeneratorSettings(start_time_ms=T0, seed=3), 5_000)
    assert [(r.kind, r.key, r.value) for r in a] == [(r.kind, r.key, r.value) for r in b]


def test_other_seed_or_start_gives_other_events_and_ids() -> None:
    base = txns(generate(GeneratorSettings(start_time_ms=T0, seed=3), 500))
    other_seed = txns(generate(GeneratorSettings(start_time_ms=T0, seed=4), 500))
    other_start = txns(generate(GeneratorSettings(start_time_ms=T0 + 1, seed=3), 500))
    ids = {r.event_id for r in base}
    assert ids.isdisjoint(r.event_id for r in other_seed)
    # A rerun "now" must not reuse the ids of an earlier run with the same seed.
    assert ids.isdisjoint(r.event_id for r in other_start)
    assert [r.value for r in base] != [r.value for r in other_seed]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**32),
    start=st.integers(0, 4_000_000_000_000),
    malformed=st.floats(0, 0.5),
    disorder=st.floats(0, 0.3),
    late=st.floats(0, 0.1),
    rate=st.floats(0.5, 100_000),
)
def test_property_stream_is_deterministic_and_contract_shaped(
    seed: int, start: int, malformed: float, disorder: float, late: float, rate: float
) -> None:
    s = GeneratorSettings(
        start_time_ms=start, seed=seed, rate=rate, malformed_share=malformed,
        out_of_order_share=disorder, late_share=late, fraud_share=0.2, **SMALL,
    )  # fmt: skip
    first = generate(s, 300)
    assert [r.value for r in first] == [r.value for r in generate(s, 300)]
    assert sum(r.kind != LABEL for r in first) == 300
    for r in first:
        if r.kind == TXN:
            event = json.loads(r.value)
            assert reference_reason(r.value) is None, event
            assert tuple(event) == CONTRACT_FIELDS
            assert r.key == event["card_id"].encode()
            assert event_time_ms(event["event_time"]) == r.event_time_ms
        elif r.kind == MALFORMED:
            assert reference_reason(r.value) == r.reason


# -- population ---------------------------------------------------------------------


def test_population_is_sane() -> None:
    pop = Population(seed=1, n_customers=20_000)
    cards = Counter(pop.card_count)
    assert set(cards) == {1, 2, 3}
    assert sum(cards[n] for n in (2, 3)) / pop.n_customers > 0.4  # most hold several cards
    customer = pop.customer(next(i for i in range(100) if pop.card_count[i] == 3))
    assert len(set(customer.card_ids)) == 3
    assert customer.home_country in CURRENCY_OF
    # Every pattern needs a merchant of every category in every country.
    for ci in range(len(COUNTRIES)):
        for ki in range(len(CATEGORIES)):
            assert pop.merchants_by_country_category[(ci, ki)]
    assert len({m.merchant_id for m in pop.merchants}) == len(pop.merchants)


def test_events_are_consistent_with_the_population() -> None:
    events = [json.loads(r.value) for r in txns(sample(20_000))]
    atm = [e for e in events if e["channel"] == "atm"]
    assert atm and all(e["merchant_category"] == "6011" and e["amount"] % 20 == 0 for e in atm)
    assert {e["channel"] for e in events} == {"pos", "ecom", "atm"}
    for e in events:
        assert e["currency"] == CURRENCY_OF[e["country"]]
        assert e["card_id"].startswith("card-" + e["customer_id"].removeprefix("cust-"))
        assert 0 < e["amount"] <= 1_000_000 and round(e["amount"], 2) == e["amount"]
    cards_per_customer = defaultdict(set)
    for e in events:
        cards_per_customer[e["customer_id"]].add(e["card_id"])
    assert any(len(c) >= 2 for c in cards_per_customer.values())
    home = Counter(e["country"] for e in events)
    assert home.most_common(1)[0][0] == "US"


# -- shares -------------------------------------------------------------------------


def test_shares_are_roughly_honoured() -> None:
    records = sample(40_000)
    valid = txns(records)
    n = 40_000
    malformed = n - len(valid)
    assert 0.007 < malformed / n < 0.013
    lag = [r.clock_ms - r.event_time_ms for r in valid if r.event_time_ms is not None]
    late = sum(d >= 120 * SEC for d in lag) / len(lag)
    disordered = sum(0 < d <= 4 * SEC for d in lag) / len(lag)
    assert 0.003 < late < 0.008
    assert 0.04 < disordered < 0.06
    assert all(d <= 10 * MIN for d in lag)
    strings = sum(b'"event_time":"' in r.value for r in valid) / len(valid)
    assert 0.04 < strings < 0.06


def test_shares_follow_settings() -> None:
    records = sample(10_000, malformed_share=0.2, late_share=0.1, out_of_order_share=0.0)
    valid = txns(records)
    assert 0.17 < 1 - len(valid) / 10_000 < 0.23
    lag = [r.clock_ms - r.event_time_ms for r in valid if r.event_time_ms is not None]
    assert 0.08 < sum(d >= 120 * SEC for d in lag) / len(lag) < 0.12
    assert not any(0 < d < 120 * SEC for d in lag)


def test_clock_ticks_at_the_rate() -> None:
    records = txns(
        generate(GeneratorSettings(start_time_ms=T0, rate=200.0, malformed_share=0), 1_000)
    )
    assert records[0].clock_ms == T0
    assert records[-1].clock_ms == T0 + 999 * 5  # 5 ms per event at 200 events/s


def test_fraud_share_and_every_pattern() -> None:
    # A slow simulated rate so that episodes (up to half an hour) complete in the sample.
    valid = txns(sample(60_000, rate=20.0))
    share = sum(r.is_fraud for r in valid) / len(valid)
    assert 0.006 < share < 0.014
    patterns = Counter(r.pattern for r in valid if r.is_fraud)
    assert set(patterns) == {"card_testing", "geo_jump", "exposure_spike", "high_amount"}


def _by(records: list[SimRecord], pattern: str, what: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r.pattern == pattern:
            event = json.loads(r.value)
            event["_t"], event["_fraud"] = r.event_time_ms, r.is_fraud
            out[event[what]].append(event)
    return out


def test_fraud_patterns_look_like_their_names() -> None:
    valid = txns(sample(30_000, rate=20.0, fraud_share=0.1, out_of_order_share=0.0, late_share=0.0))
    bursts = _by(valid, "card_testing", "card_id")
    full = [b for b in bursts.values() if len(b) >= 8]
    assert full
    for burst in full:
        assert all(e["channel"] == "ecom" and e["amount"] < 5 and e["_fraud"] for e in burst)
        assert max(e["_t"] for e in burst) - min(e["_t"] for e in burst) < MIN
        assert len({e["merchant_id"] for e in burst}) > len(burst) // 2
    jumps = [j for j in _by(valid, "geo_jump", "card_id").values() if len(j) >= 2]
    assert jumps
    for jump in jumps:
        home, *abroad = sorted(jump, key=lambda e: e["_t"])
        assert not home["_fraud"] and all(e["_fraud"] for e in abroad)
        assert all(e["country"] != home["country"] for e in abroad)
        assert abroad[0]["_t"] - home["_t"] <= 8 * MIN
    spikes = [s for s in _by(valid, "exposure_spike", "customer_id").values() if len(s) >= 3]
    assert spikes
    assert all(len({e["card_id"] for e in s}) >= 2 for s in spikes)
    assert all(max(e["_t"] for e in s) - min(e["_t"] for e in s) <= HOUR for s in spikes)
    high = [e for es in _by(valid, "high_amount", "card_id").values() for e in es]
    assert high and sum(e["amount"] >= 2_000 for e in high) / len(high) > 0.7


# -- malformed ----------------------------------------------------------------------


def test_every_malformed_kind_appears_with_the_validators_reason() -> None:
    bad = [r for r in sample(4_000, malformed_share=0.5) if r.kind == MALFORMED]
    assert Counter(r.reason for r in bad).keys() == set(REASONS)
    for r in bad:
        assert reference_reason(r.value) == r.reason, r.value[:200]
        assert r.event_id is None and not r.is_fraud
    assert any(r.key is None for r in bad) and any(r.key is not None for r in bad)


def test_the_jobs_validator_agrees_with_every_label() -> None:
    # The simulator's promise to the job: valid events pass, each malformed payload is
    # rejected for the reason it was made for.
    validation = pytest.importorskip("decisioning.transaction")
    records = sample(6_000, malformed_share=0.4)
    for r in records:
        if r.kind == LABEL:
            continue
        verdict = validation.validate(r.value)
        if r.kind == TXN:
            assert not isinstance(verdict, validation.Rejection), (verdict, r.value)
            assert verdict["event_time"] == r.event_time_ms
        else:
            assert isinstance(verdict, validation.Rejection), r.value[:200]
            assert verdict.reason == r.reason, (verdict, r.value[:200])


@pytest.mark.parametrize("reason", REASONS)
def test_make_malformed_breaks_exactly_what_it_says(reason: str) -> None:
    event = txn("card-1", 12.3)
    rng = random.Random(5)
    for _ in range(50):
        bad = make_malformed(rng, event, reason)
        assert bad.reason == reason
        assert reference_reason(bad.value) == reason, bad.value[:200]
        if bad.key is not None:
            assert bad.key == b"card-1"
    assert event == txn("card-1", 12.3, event_id=event["event_id"])  # input left alone


def test_oversized_is_otherwise_valid() -> None:
    bad = make_malformed(random.Random(1), txn(), "oversized")
    assert len(bad.value) > 65_536
    event = json.loads(bad.value)
    del event["padding"]
    assert reference_reason(encode(event)) is None


def test_unknown_reason_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown malformed reason"):
        make_malformed(random.Random(1), txn(), "bogus")


# -- labels -------------------------------------------------------------------------


def test_one_label_per_valid_event_after_the_delay() -> None:
    records = sample(20_000, label_delay_ms=45_000)
    valid = {r.event_id: r for r in txns(records)}
    labels = [r for r in records if r.kind == LABEL]
    assert len(labels) == len(valid) == len({r.event_id for r in labels})
    for r in labels:
        body = json.loads(r.value)
        assert tuple(body) == ("event_id", "is_fraud", "labeled_at")
        event = valid[body["event_id"]]
        assert event.event_time_ms is not None
        assert body["labeled_at"] == event.event_time_ms + 45_000 == r.event_time_ms
        assert body["is_fraud"] is event.is_fraud
        assert r.key == body["event_id"].encode()


def test_labels_are_emitted_once_the_clock_passes_them() -> None:
    pending: dict[str, int] = {}
    due: list[tuple[int, str]] = []  # min-heap over pending, cleaned lazily
    for r in sample(20_000):
        if r.kind == LABEL:
            assert r.event_id in pending  # never before its event
            assert r.clock_ms >= pending.pop(r.event_id)
        elif r.kind == TXN:
            assert r.event_id is not None and r.event_time_ms is not None
            while due and due[0][1] not in pending:
                heapq.heappop(due)
            assert not due or due[0][0] > r.clock_ms, "a due label was held back"
            pending[r.event_id] = r.event_time_ms + 30_000
            heapq.heappush(due, (pending[r.event_id], r.event_id))
    assert not pending  # the end flushes the rest


def test_a_caller_stopping_early_drains_the_pending_labels() -> None:
    gen = TransactionGenerator(GeneratorSettings(start_time_ms=T0, **SMALL))
    taken = []
    for r in gen.stream():
        taken.append(r)
        if sum(x.kind != LABEL for x in taken) == 500:
            break
    rest = gen.drain_labels()
    ids = {r.event_id for r in taken if r.kind == TXN}
    assert {r.event_id for r in taken + rest if r.kind == LABEL} == ids
    times = [r.event_time_ms or 0 for r in rest]
    assert times == sorted(times)


# -- smaller pieces -----------------------------------------------------------------


@given(st.integers(0, 253_402_300_799_999))
def test_rfc3339_round_trips(ms: int) -> None:
    text = format_rfc3339(ms)
    assert _RFC3339.match(text)
    assert event_time_ms(text) == ms


@pytest.mark.parametrize(
    "bad",
    [{"malformed_share": 1.5}, {"late_share": -0.1}, {"rate": 0}, {"start_time_ms": -1},
     {"out_of_order_share": 0.8, "late_share": 0.5}, {"label_delay_ms": -1}],
)  # fmt: skip
def test_settings_refuse_nonsense(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        GeneratorSettings(**{"start_time_ms": T0, **bad})


def test_builders_make_contract_events() -> None:
    a, b = txn(), txn("c2", 99.5, at=T0 + 5 * MIN, customer="u1")
    assert a["event_id"] != b["event_id"]
    assert tuple(a) == CONTRACT_FIELDS
    assert reference_reason(encode(b)) is None
    assert json.loads(encode(b)) == b and b" " not in encode(b)


def test_start_time_parsing_and_broker_check_need_no_broker() -> None:
    from confluent_kafka import Producer

    from rtd.simulator_cli import parse_start_time
    from simulator.producer import BrokerUnavailableError, check_broker, producer_settings

    assert parse_start_time(str(T0)) == T0
    assert parse_start_time("2023-11-14T22:13:20Z") == T0
    assert parse_start_time("2023-11-14T23:13:20.000+01:00") == T0
    with pytest.raises(Exception, match="time zone"):
        parse_start_time("2023-11-14T22:13:20")
    # Port 9 (discard) on loopback: nothing listens, so the check must fail fast.
    config = load_config(kafka={"bootstrap_servers": "127.0.0.1:9"})
    with pytest.raises(BrokerUnavailableError, match="rtd stack up"):
        check_broker(Producer(producer_settings(config)), config, timeout_s=1.0)
