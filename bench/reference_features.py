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
    cards: dict[tuple[str, str], list[dict[str, Any]]] = {}
    customers: dict[str, list[dict[str, Any]]] = {}
    for e in processed:
        card = cards.setdefault((e["customer_id"], e["card_id"]), [])
        customer = customers.setdefault(e["customer_id"], [])
        out[e["event_id"]] = {**card_features(card, e), **customer_features(customer, e)}
        card.append(e)
        customer.append(e)
    return out


def customer_bounds(certain: list[dict[str, Any]], possible: list[dict[str, Any]],
                    e: dict[str, Any]) -> dict[str, tuple[float, float]]:
    """Bounds of e's customer features when the order across some of the customer's
    events is not known: ``certain`` were processed before e, ``possible`` may have been
    (either way). Every such feature only grows with the events counted."""
    low = customer_features(certain, e)
    high = customer_features(certain + possible, e)
    return {name: (low[name], high[name]) for name in low}


CARD_FEATURES = ("card_txn_count_1m", "card_txn_count_1h", "card_amount_sum_1h",
                 "card_distinct_merchants_5m", "card_seconds_since_last_txn",
                 "card_country_changed_10m")
CUSTOMER_FEATURES = ("customer_amount_sum_24h", "customer_distinct_cards_1h",
                     "customer_txn_count_24h")


def judge_traces(traces: list[dict[str, Any]], limit: int = 20) -> dict[str, Any]:
    """``judge_rows`` over committed traces (either schema version)."""
    from decisioning.trace import feature_values, trace_event

    return judge_rows([{"event_id": t["event_id"], "partition": t["input"]["partition"],
                        "offset": t["input"]["offset"], "event": trace_event(t),
                        "features": feature_values(t), "late": bool(t.get("late"))}
                       for t in traces], limit)


def judge_rows(rows: list[dict[str, Any]], limit: int = 20) -> dict[str, Any]:
    """Every on-time decision's features against this reference. A row: ``event_id``,
    the input's ``partition`` and ``offset``, the ``event``, the decision's ``features``
    and its ``late`` flag.

    A card's events share a partition (the producer keys by card), so a card's
    processing order is its partition's offset order: its features must be exact. A
    customer's cards may lie on several partitions, whose interleaving the job chose:
    each customer feature must lie between the reference over the customer's events
    certainly processed before (same partition, lower offset) and over all that may
    have been (any other partition too); for a customer seen on one partition the two
    bounds are equal, so exact. Late events are decided with the state they find and
    are not judged, but count in the others' history. Returns counts and the first
    ``limit`` mismatches."""
    ordered = sorted(rows, key=lambda r: (r["partition"], r["offset"]))
    cards: dict[tuple[str, str], list[dict[str, Any]]] = {}
    customers: dict[str, list[tuple[int, int, dict[str, Any]]]] = {}
    for r in ordered:
        customers.setdefault(r["event"]["customer_id"], []).append(
            (r["partition"], r["offset"], r["event"]))
    out: dict[str, Any] = {"judged": 0, "late_skipped": 0, "card_exact": 0,
                           "customer_exact": 0, "customer_within_bounds": 0,
                           "mismatches": 0, "first_mismatches": []}

    def mismatch(row: dict[str, Any], name: str, got: Any, want: Any) -> None:
        out["mismatches"] += 1
        if len(out["first_mismatches"]) < limit:
            out["first_mismatches"].append({"event_id": row["event_id"], "feature": name,
                                            "got": got, "want": want,
                                            "at": [row["partition"], row["offset"]]})

    for r in ordered:
        e = r["event"]
        history = cards.setdefault((e["customer_id"], e["card_id"]), [])
        want = card_features(history, e)
        history.append(e)
        if r["late"]:
            out["late_skipped"] += 1
            continue
        out["judged"] += 1
        got = r["features"]
        bad = [n for n in CARD_FEATURES if got.get(n) != want[n]]
        for name in bad:
            mismatch(r, name, got.get(name), want[name])
        out["card_exact"] += not bad
        others = customers[e["customer_id"]]
        certain = [x for p, o, x in others if p == r["partition"] and o < r["offset"]]
        possible = certain + [x for p, _, x in others if p != r["partition"]]
        low, high = customer_features(certain, e), customer_features(possible, e)
        inside = True
        for name in CUSTOMER_FEATURES:
            if not low[name] <= got.get(name, float("nan")) <= high[name]:
                mismatch(r, name, got.get(name), [low[name], high[name]])
                inside = False
        if inside:
            out["customer_exact" if low == high else "customer_within_bounds"] += 1
    return out
