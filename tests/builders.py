"""Shared event builders for tests: contract-shaped transactions in one line each.

txn("c1", 25.0, at=T0 + 5 * MIN)          # a purchase on card c1
encode(txn("c1", country="FR"))           # the bytes a producer would write
"""

from __future__ import annotations

import itertools
import json
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
