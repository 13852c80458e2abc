"""Bounded state: per-key feature state over simulated days, on event-time expiry alone.

Drives the operators' window core (``feature_views.window_state``) the way the keyed
operators do: prune by watermark on access, drop whole keys when their expiry timer
would fire. 100,000 distinct cards (2 per customer) transact at a steady simulated rate;
every few simulated hours the pickled size of all live state (what the operators store
per key in RocksDB) is measured. State must stop growing once the longest history window
(24 h, customers) has passed; what remains per card is its last-seen time, kept for the
30-day look-back of `card_seconds_since_last_txn`.

    .venv/bin/python -m bench.state_size --cards 100000 --days 3 --rate 3
"""

from __future__ import annotations

import argparse
import json
import pickle
import random
from pathlib import Path

from feature_views.definitions import CARD_FEATURES, CUSTOMER_FEATURES
from feature_views.model import HOUR_MS
from feature_views.window_state import ViewComputer, empty_state

LATENESS = 60_000
DELAY = 5_000


def measure(cards: int, days: float, rate: float, snapshot_hours: float, seed: int) -> list[dict]:
    rng = random.Random(seed)
    views = {"card": (CARD_FEATURES, ViewComputer(CARD_FEATURES), {}),
             "customer": (CUSTOMER_FEATURES, ViewComputer(CUSTOMER_FEATURES), {})}
    t = 1_700_000_000_000
    end = t + int(days * 24 * HOUR_MS)
    step = int(1000 / rate)
    next_snapshot = t
    rows = []
    while t < end:
        card = rng.randrange(cards)
        event = {"event_id": "", "card_id": f"card-{card}", "customer_id": f"cust-{card // 2}",
                 "merchant_id": f"m{rng.randrange(5000)}", "country": "US",
                 "amount": round(rng.uniform(1, 300), 2), "event_time": t}
        watermark = t - DELAY
        for view, computer, states in views.values():
            key = event[view.entity_key]
            state = states.get(key)
            if state is None:
                state = states[key] = empty_state()
            else:
                computer.prune(state, watermark, LATENESS)
            computer.apply(state, event)
        if t >= next_snapshot:
            row = {"hours": round((t - 1_700_000_000_000) / HOUR_MS, 1)}
            for name, (view, computer, states) in views.items():
                for key in [k for k, s in states.items()
                            if computer.is_expired(s, watermark, LATENESS)]:
                    del states[key]  # what the operator's expiry timer does
                total = 0
                for state in states.values():
                    computer.prune(state, watermark, LATENESS)
                    total += len(pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
                row[f"{name}_keys"] = len(states)
                row[f"{name}_bytes"] = total
                row[f"{name}_bytes_per_key"] = round(total / max(len(states), 1), 1)
            rows.append(row)
            print(json.dumps(row), flush=True)
            next_snapshot += int(snapshot_hours * HOUR_MS)
        t += step
    return rows


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    hours = [r["hours"] for r in rows]
    for name in ("card", "customer"):
        ax.plot(hours, [r[f"{name}_bytes"] / 1e6 for r in rows], label=f"{name} state (MB)")
    ax.axvline(24, color="grey", linestyle=":", label="longest window (24 h)")
    ax.set_xlabel("simulated hours")
    ax.set_ylabel("pickled state, MB")
    ax.set_title("Feature state size under event-time expiry (100k cards)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cards", type=int, default=100_000)
    parser.add_argument("--days", type=float, default=3)
    parser.add_argument("--rate", type=float, default=3.0, help="simulated events per second")
    parser.add_argument("--snapshot-hours", type=float, default=4)
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--plot", default="docs/img/state_size.png")
    args = parser.parse_args()
    rows = measure(args.cards, args.days, args.rate, args.snapshot_hours, args.seed)
    plot(rows, Path(args.plot))


if __name__ == "__main__":
    main()
