"""Window arithmetic for one key of one feature view: pure Python, no Flink.

The per-key state is one compact value, ``[last_time, entries, last_pruned]``:
  - ``last_time``: the largest event time processed for the key (-1: none), which the
    last-seen delta needs after the history has been pruned;
  - ``entries``: one tuple ``(event_time, *view.history_fields)`` per processed event,
    sorted by event time, ties kept in processing order;
  - ``last_pruned``: the largest event time pruned from ``entries`` (-1: none). An event
    that is out of order but not late (its time below ``last_time``) finds its
    predecessor there when that lies beyond the longest window, so its last-seen delta
    is still exact. (States written before it had two items; they read as -1.)

Semantics (contract, "Features"): for an event e of key k at event time t, a windowed
feature over W covers the events of k already processed, e included, whose event time is
in (t - W, t]. Events with a later event time that arrived earlier are not counted.

Expiry is on event time, driven by the watermark: an entry older than
``watermark - allowed_lateness - history_window`` cannot fall into the window of any
event that is not late, so it is pruned. Pruning is therefore invisible to every
event that is not late, and a replay computes the same values as the live run.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from operator import itemgetter
from typing import Any

from feature_views.model import Aggregation, FeatureView

State = list[Any]  # [last_time: int, entries: list[tuple], last_pruned: int]
_TIME = itemgetter(0)


def empty_state() -> State:
    return [-1, [], -1]


def history_size(state: State) -> int:
    """How many history entries a state holds: what its memory grows with."""
    return len(state[1])


class ViewComputer:
    """Computes one view's features for an event and folds the event into the state."""

    def __init__(self, view: FeatureView) -> None:
        self.view = view
        fields = view.history_fields
        self._fields = fields
        self._index = {name: i + 1 for i, name in enumerate(fields)}
        # One C call builds the history entry (event_time, *fields): a generator over
        # the fields was the single largest cost of ``apply`` in a profile.
        self._entry = itemgetter("event_time", *fields) if fields else (
            lambda event: (event["event_time"],))
        self._history_window = view.history_window_ms
        self._last_seen_window = view.last_seen_window_ms
        # Pre-resolved plan: (name, aggregation, window, tuple index of its field).
        self._plan = [
            (f.name, f.aggregation, f.window_ms, self._index.get(f.field) if f.field else None)
            for f in view.features
        ]

    def entry_for(self, event: Mapping[str, Any]) -> tuple[Any, ...]:
        return self._entry(event)

    def prune(self, state: State, watermark: int, allowed_lateness_ms: int) -> None:
        """Drop history no event that is not late can see any more."""
        entries = state[1]
        if not entries:
            return
        horizon = watermark - allowed_lateness_ms - self._history_window
        cut = bisect_right(entries, horizon, key=_TIME)
        if cut:
            pruned = entries[cut - 1][0]
            if len(state) < 3:
                state.append(pruned)
            elif pruned > state[2]:
                state[2] = pruned
            del entries[:cut]

    def expires_at(self, state: State, allowed_lateness_ms: int) -> int:
        """Event time after which the key's whole state can no longer affect any window."""
        entries = state[1]
        newest = entries[-1][0] if entries else -1
        return max(newest + self._history_window, state[0] + self._last_seen_window) + (
            allowed_lateness_ms
        )

    def is_expired(self, state: State, watermark: int, allowed_lateness_ms: int) -> bool:
        return self.expires_at(state, allowed_lateness_ms) <= watermark

    def apply(self, state: State, event: Mapping[str, Any]) -> dict[str, float]:
        """Features of ``event`` (itself included), then fold it into ``state``."""
        entries: list[tuple[Any, ...]] = state[1]
        t: int = event["event_time"]
        current = self._entry(event)
        hi = bisect_right(entries, t, key=_TIME)  # entries[:hi] have event time <= t
        out: dict[str, float] = {}
        for name, aggregation, window, idx in self._plan:
            lo = bisect_right(entries, t - window, 0, hi, key=_TIME)
            if aggregation is Aggregation.COUNT:
                out[name] = hi - lo + 1
            elif aggregation is Aggregation.SUM:
                total = current[idx]
                for i in range(lo, hi):
                    total += entries[i][idx]
                out[name] = round(total, 6)
            elif aggregation is Aggregation.MAX:
                out[name] = max([current[idx], *(entries[i][idx] for i in range(lo, hi))])
            elif aggregation is Aggregation.DISTINCT_COUNT:
                values = {entries[i][idx] for i in range(lo, hi)}
                values.add(current[idx])
                out[name] = len(values)
            elif aggregation is Aggregation.CHANGED_WITHIN:
                mine = current[idx]
                out[name] = int(any(entries[i][idx] != mine for i in range(lo, hi)))
            else:  # SECONDS_SINCE_LAST
                previous = entries[hi - 1][0] if hi else None
                if previous is None and len(state) > 2 and 0 <= state[2] <= t:
                    previous = state[2]
                if 0 <= state[0] <= t and (previous is None or state[0] > previous):
                    previous = state[0]
                if previous is None or previous <= t - window:
                    out[name] = -1.0
                else:
                    out[name] = (t - previous) / 1000.0
        entries.insert(hi, current)
        state[0] = max(state[0], t)
        return out
