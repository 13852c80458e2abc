"""What the feature operator's working sets hold in Python as a soak's stream goes on.

Runs the two views' window code (feature_views/window_state.py) in front of their
working sets (operators/working_set.py) in this process, on the simulator's stream at
``--rate`` events/s of event time, pruned on a watermark 5 s behind, as the job does.
The store is a dict of pickles standing in for RocksDB (its blocks are subtracted).
Every simulated minute, after a full ``gc.collect()``, it prints the interpreter's
allocated blocks, the states and history entries held per view and the hit rate, then
the growth per minute over the second half. ``--unbounded`` leaves out the history bound
(``job.working_set_history``), as before it existed; ``--history N`` holds N entries a
view instead of the default; docs/RELIABILITY.md has the figures.

    python -m bench.working_set_memory --minutes 60 [--unbounded | --history 100000]
"""

from __future__ import annotations

import argparse
import gc
import json
import pickle
import sys
from typing import Any

from feature_views.definitions import ALL_VIEWS
from feature_views.window_state import ViewComputer, empty_state, history_size
from operators.working_set import WorkingSet
from rtd_core.config import JobConfig
from simulator.generator import TXN, GeneratorSettings, TransactionGenerator

WATERMARK_DELAY_MS = 5_000


class PickleStore:
    """The MapState calls WorkingSet makes, holding pickles as RocksDB would."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def get(self, key: str) -> Any:
        value = self.data.get(key)
        return None if value is None else pickle.loads(value)

    def put(self, key: str, state: Any) -> None:
        self.data[key] = pickle.dumps(state)

    def keys(self) -> list[str]:
        return list(self.data)

    def remove(self, key: str) -> None:
        self.data.pop(key, None)

    def items(self) -> Any:
        return ((k, pickle.loads(v)) for k, v in self.data.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=int, default=60)
    parser.add_argument("--rate", type=float, default=300.0)
    parser.add_argument("--unbounded", action="store_true",
                        help="bound the states only, not their history entries")
    parser.add_argument("--history", type=int, default=None,
                        help="history entries held per view (default: job.working_set_history)")
    args = parser.parse_args()
    job = JobConfig() if args.history is None else JobConfig(working_set_history=args.history)
    bound = {} if args.unbounded else {"weigh": history_size,
                                       "weight_capacity": job.working_set_history}
    views = [(v, ViewComputer(v), WorkingSet(PickleStore(), job.working_set_entities,
                                              job.working_set_keys, **bound))
             for v in ALL_VIEWS]
    generator = TransactionGenerator(GeneratorSettings(start_time_ms=1_700_000_000_000,
                                                       rate=args.rate))
    per_minute = int(60 * args.rate)
    rows: list[tuple[int, int]] = []
    events = 0
    for record in generator.stream(args.minutes * per_minute):
        if record.kind != TXN:
            continue
        event = json.loads(record.value)
        event["event_time"] = record.event_time_ms  # the job parses RFC 3339 times too
        watermark = record.clock_ms - WATERMARK_DELAY_MS
        for view, computer, entities in views:
            key = view.state_key(event)
            state = entities.get(key)
            if state is None:
                state = empty_state()
            else:
                computer.prune(state, watermark, job.allowed_lateness_ms)
            computer.apply(state, event)
            entities.put(key, state)
        events += 1
        if events % per_minute == 0:
            gc.collect()
            stored = sum(len(e._store.data) for _, _, e in views)  # RocksDB's in the job
            blocks = sys.getallocatedblocks() - stored
            rows.append((events // per_minute, blocks))
            held = ", ".join(
                f"{v.name}: {len(e)} states, {sum(history_size(s) for s in e._lru.values())}"
                f" entries, hit rate {e.hits / max(1, e.hits + e.misses):.3f}"
                for v, _, e in views)
            print(f"minute {rows[-1][0]}: {blocks} blocks; {held}", flush=True)
    half = rows[len(rows) // 2:]
    if len(half) >= 2:
        minutes = half[-1][0] - half[0][0]
        print(f"blocks per minute over the second half: {(half[-1][1] - half[0][1]) / minutes:.0f}")


if __name__ == "__main__":
    main()
