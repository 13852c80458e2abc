"""The operators' window core against the independent reference (bench/reference_features)."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.reference_features import DAY, HOUR, MIN, all_features
from feature_views.definitions import CARD_FEATURES, CUSTOMER_FEATURES
from feature_views.window_state import ViewComputer, empty_state

pytestmark = pytest.mark.unit

T0 = 1_700_000_000_000
LATENESS = MIN
DELAY = 5_000


def run_views(events, watermark_delay=DELAY, lateness=LATENESS):
    """Drive both views' core like the operator does: prune by watermark, then apply; a
    card's state is scoped to the customer (operators/keyed_features.py)."""
    computers = {v.name: ViewComputer(v) for v in (CARD_FEATURES, CUSTOMER_FEATURES)}
    states = {}
    max_seen = None
    out = {}
    for e in events:
        watermark = None if max_seen is None else max_seen - watermark_delay
        late = watermark is not None and e["event_time"] < watermark - lateness
        features = {}
        for view in (CARD_FEATURES, CUSTOMER_FEATURES):
            key = (view.name, e["customer_id"], e[view.entity_key])
            state = states.setdefault(key, empty_state())
            if watermark is not None:
                computers[view.name].prune(state, watermark, lateness)
            features.update(computers[view.name].apply(state, e))
        out[e["event_id"]] = (features, late)
        max_seen = e["event_time"] if max_seen is None else max(max_seen, e["event_time"])
    return out


def assert_not_late_match_reference(events):
    got = run_views(events)
    expected = all_features(events)
    for e in events:
        features, late = got[e["event_id"]]
        if not late:
            assert features == expected[e["event_id"]], e


def ev(i, card, at, amount=10.0, merchant="m1", country="US", customer=None):
    return {"event_id": f"e{i}", "card_id": card, "customer_id": customer or f"u-{card}",
            "merchant_id": merchant, "country": country, "amount": amount, "event_time": at}


def test_window_edges_are_half_open():
    events = [ev(0, "c", T0), ev(1, "c", T0 + MIN - 1), ev(2, "c", T0 + MIN)]
    got = run_views(events)
    assert got["e1"][0]["card_txn_count_1m"] == 2  # T0 is inside (T0+MIN-1-MIN, ...]
    assert got["e2"][0]["card_txn_count_1m"] == 2  # T0 is exactly t - W: excluded


def test_out_of_order_event_does_not_count_later_events():
    events = [ev(0, "c", T0 + 30_000), ev(1, "c", T0)]
    got = run_views(events)
    assert got["e1"][0]["card_txn_count_1m"] == 1
    assert got["e1"][0]["card_seconds_since_last_txn"] == -1.0
    assert got["e0"][0]["card_seconds_since_last_txn"] == -1.0


def test_seconds_since_last_and_country_change():
    events = [ev(0, "c", T0, country="US"), ev(1, "c", T0 + 90_000, country="FR"),
              ev(2, "c", T0 + 90_000 + 11 * MIN, country="FR")]
    got = run_views(events)
    assert got["e1"][0]["card_seconds_since_last_txn"] == 90.0
    assert got["e1"][0]["card_country_changed_10m"] == 1
    assert got["e2"][0]["card_country_changed_10m"] == 0  # the US event is 12.5 min back


def test_last_seen_survives_history_pruning():
    events = [ev(0, "c", T0), ev(1, "c", T0 + 3 * HOUR)]
    got = run_views(events)
    assert got["e1"][0]["card_seconds_since_last_txn"] == 3 * 3600.0
    assert got["e1"][0]["card_txn_count_1h"] == 1


def test_customer_exposure_across_cards():
    events = [ev(0, "c1", T0, 3000, customer="u"), ev(1, "c2", T0 + HOUR - 1, 2500.5, customer="u"),
              ev(2, "c3", T0 + DAY, 1.0, customer="u")]
    got = run_views(events)
    assert got["e1"][0]["customer_amount_sum_24h"] == 5500.5
    assert got["e1"][0]["customer_distinct_cards_1h"] == 2
    assert got["e2"][0]["customer_txn_count_24h"] == 2  # T0 is exactly 24 h back: excluded
    assert got["e2"][0]["customer_distinct_cards_1h"] == 1


def test_expiry_clears_a_quiet_key():
    computer = ViewComputer(CARD_FEATURES)
    state = empty_state()
    computer.apply(state, ev(0, "c", T0))
    expires = computer.expires_at(state, LATENESS)
    assert not computer.is_expired(state, expires - 1, LATENESS)
    assert computer.is_expired(state, expires, LATENESS)


events_strategy = st.lists(
    st.tuples(
        st.integers(0, 3),                      # card
        st.integers(0, 1),                      # customer group
        st.integers(-2 * MIN, 2 * HOUR),        # offset of the simulated clock
        st.integers(0, 8 * MIN),                # lag behind the clock (out of order / late)
        st.sampled_from(["m1", "m2", "m3"]),
        st.sampled_from(["US", "FR"]),
        st.sampled_from([1.0, 10.5, 2500.0]),
        st.booleans(),                          # burst: same time as previous
    ),
    min_size=1, max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(events_strategy)
def test_core_matches_reference_for_every_event_that_is_not_late(raw):
    events = []
    clock = T0
    for i, (card, group, step, lag, merchant, country, amount, burst) in enumerate(raw):
        if not burst:
            clock += abs(step) // 10
        events.append(ev(i, f"c{card}", clock - lag, amount, merchant, country,
                         customer=f"u{card % 2 + group}"))
    assert_not_late_match_reference(events)


def test_out_of_order_event_finds_its_predecessor_beyond_the_longest_window():
    # c: T0, then T0+3h+10s, then T0+3h (10 s out of order: not late). The T0 entry is
    # pruned by then (older than the 1 h history), yet it is T0+3h's predecessor.
    events = [ev(0, "c", T0), ev(1, "c", T0 + 3 * HOUR + 10_000), ev(2, "c", T0 + 3 * HOUR)]
    got = run_views(events)
    expected = all_features(events)
    assert not got["e2"][1]
    assert got["e2"][0]["card_seconds_since_last_txn"] == 3 * 3600.0
    assert got["e2"][0] == expected["e2"]


gappy_events = st.lists(
    st.tuples(
        st.integers(0, 2),                                   # card
        st.sampled_from([0, 0, 0, 20_000, 2 * HOUR, 26 * HOUR]),  # clock step
        st.integers(0, 20_000),                              # lag: out of order, not late
    ),
    min_size=1, max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(gappy_events)
def test_core_matches_reference_across_gaps_longer_than_every_window(raw):
    events, clock = [], T0
    for i, (card, step, lag) in enumerate(raw):
        clock += step
        events.append(ev(i, f"c{card}", clock - lag, customer="u"))
    assert_not_late_match_reference(events)
