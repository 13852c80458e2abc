"""Shared event builders for tests: contract-shaped transactions in one line each.

txn("c1", 25.0, at=T0 + 5 * MIN)          # a purchase on card c1
encode(txn("c1", country="FR"))           # the bytes a producer would write
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

# 2023-11-14T22:13:20Z: a fixed, round epoch so that expected times read easily.
T0 = 1_700_000_000_000
SEC = 1_000
MIN = 60 * SEC
HOUR = 60 * MIN
DAY = 24 * HOUR

_ids = itertools.count(1)


def txn(
    card: str = "c1",
    amount: float = 10.0,
    at: int | str = T0,
    customer: str | None = None,
    merchant: str = "m1",
    country: str = "US",
    channel: str = "pos",
    currency: str = "USD",
    event_id: str | None = None,
    mcc: str = "5411",
) -> dict[str, Any]:
    """A valid transaction event. Without `customer` each card is its own customer
    ("cust-<card>"), so customer features stay out of card tests unless asked for."""
    return {
        "event_id": event_id if event_id is not None else f"evt-{next(_ids):06d}",
        "card_id": card,
        "customer_id": customer if customer is not None else f"cust-{card}",
        "merchant_id": merchant,
        "merchant_category": mcc,
        "amount": amount,
        "currency": currency,
        "country": country,
        "channel": channel,
        "event_time": at,
    }


def label(event_id: str, is_fraud: bool, at: int = T0) -> dict[str, Any]:
    """A ground-truth label as written to the `labels` topic."""
    return {"event_id": event_id, "is_fraud": is_fraud, "labeled_at": at}


def encode(event: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON, the wire form of events and labels."""
    return json.dumps(event, separators=(",", ":")).encode("utf-8")


def v1_traces() -> list[dict[str, Any]]:
    """Two traces as the job wrote them in ``schema_version`` 1 (the code of commit
    dbc7dc1, on simulated traffic): a live-scored one with a fired rule, and a late,
    rules-only one after a model timeout."""
    return json.loads((Path(__file__).parent / "data" / "traces_v1.json").read_text())


def v2_of_v1(trace: dict[str, Any]) -> dict[str, Any]:
    """The ``schema_version`` 2 trace of the same decision, written by today's
    ``build_trace`` from nothing but what the version 1 trace holds (its feature view
    versions included: a view's version may have moved on since)."""
    from dataclasses import replace

    from decisioning.decision import decide
    from decisioning.trace import build_trace, model_result_from_trace
    from feature_views.definitions import ALL_VIEWS

    inp, event = trace["input"], trace["input"]["event"]
    model = model_result_from_trace(trace)
    decision = decide(event, trace["rules"], model, decline_at=trace["thresholds"]["decline"],
                      review_at=trace["thresholds"]["review"], late=trace["late"],
                      decided_at=trace["decided_at"])
    versions = trace["job"]["feature_views"]
    views = tuple(replace(v, version=versions[v.name]) for v in ALL_VIEWS)
    as_of = {f["view"]: {k: f[k] for k in ("as_of_event_time", "watermark", "computed_at")}
             for f in trace["features"]}
    return build_trace(
        decision=decision, source={k: v for k, v in inp.items() if k != "event"},
        event=event, views=views, features={f["name"]: f["value"] for f in trace["features"]},
        as_of=as_of, rule_results=trace["rules"], rules_version=trace["rules_version"],
        model_request={k: trace["model"][k] for k in
                       ("name", "signature", "requested_version", "inputs")},
        model=model, thresholds=trace["thresholds"], timings=trace["timings"], job=trace["job"])
