"""The contract's feature semantics, written naively and independently of the operators.

For an event e of key k at event time t, a windowed feature over W covers the events
of k already processed, e included, whose event time is in (t - W, t]. A card's key is
(customer, card): a card seen under a second customer has a separate history there. It is used as
the oracle in property tests and to check every decision of the pipeline tests.
"""

from __future__ import annotations

from typing import Any

MIN = 60_000
HOUR = 60 * MIN
DAY = 24 * HOUR
LAST_SEEN_LOOKBACK = 30 * DAY


def _in_window(events: list[dict[str, Any]], t: int, window: int) -> list[dict[str, Any]]:
    return [x for x in events if t - window < x["event_time"] <= t]


def card_features(earlier: list[dict[str, Any]], e: dict[str, Any]) -> dict[str, float]:
    """``earlier``: events of e's card under e's customer processed before e, in
    processing order."""
    t = e["event_time"]
    seen = earlier + [e]
    previous_times = [x["event_time"] for x in earlier if x["event_time"] <= t]
    previous = max(previous_times) if previous_times else None
    if previous is None or previous <= t - LAST_SEEN_LOOKBACK:
        since = -1.0
    else:
        since = (t - previous) / 1000.0
    return {
        "card_txn_count_1m": len(_in_window(seen, t, MIN)),
        "card_txn_count_1h": len(_in_window(seen, t, HOUR)),
        "card_amount_sum_1h": round(sum(x["amount"] for x in _in_window(seen, t, HOUR)), 6),
        "card_distinct_merchants_5m": len({x["merchant_id"] for x in _in_window(seen, t, 5 * MIN)}),
        "card_seconds_since_last_txn": since,
        "card_country_changed_10m": int(
            any(x["country"] != e["country"] for x in _in_window(earlier, t, 10 * MIN))
        ),
    }


def customer_features(earlier: list[dict[str, Any]], e: dict[str, Any]) -> dict[str, float]:
    t = e["event_time"]
    seen = earlier + [e]
    day = _in_window(seen, t, DAY)
    return {
        "customer_amount_sum_24h": round(sum(x["amount"] for x in day), 6),
        "customer_distinct_cards_1h": len({x["card_id"] for x in _in_window(seen, t, HOUR)}),
        "customer_txn_count_24h": len(day),
    }


def all_features(processed: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Features of every event, by event id, for events in processing order."""
    out: dict[str, dict[str, float]] = {}
    for i, e in enumerate(processed):
        before = processed[:i]
        cards = [x for x in before if x["card_id"] == e["card_id"]
                 and x["customer_id"] == e["customer_id"]]
        customers = [x for x in before if x["customer_id"] == e["customer_id"]]
        out[e["event_id"]] = {**card_features(cards, e), **customer_features(customers, e)}
    return out


def customer_bounds(certain: list[dict[str, Any]], possible: list[dict[str, Any]],
                    e: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """Bounds of e's customer features when the order across some of the customer's
    events is not known: ``certain`` were processed before e, ``possible`` may have been
    (either way). Every such feature only grows with the events counted."""
    low = customer_features(certain, e)
    high = customer_features(certain + possible, e)
    return {name: (low[name], high[name]) for name in low}
