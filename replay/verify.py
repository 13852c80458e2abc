"""The skew proof: replayed feature vectors against the ones serving recorded.

Every live decision's trace records each feature value it used. For every replayed
row with a committed trace, each feature is compared exactly (same code, same
arithmetic, so equal means bit-equal floats after JSON). Each compared event is:

  identical        every feature equal (a late flag that differs is counted apart: it
                   is not a feature, and follows the processing-time watermark)
  differing        a difference nothing below explains: training/serving skew (fails)
  order_dependent  only features of views NOT keyed by the partition key (customer_id)
                   differ, the entity's events sit in more than one partition, and both
                   values lie within what some interleaving of those partitions gives
  late             the event was late (live or replay): it is decided "with the state
                   it finds", and what had expired by then depends on how far the
                   watermark had advanced at processing time

Why order_dependent exists: per card, processing order is the partition order in live
and replay alike. A customer's cards may hash to different partitions, and the order
in which the live job's Kafka reader interleaved those partitions is not recorded
anywhere (it depends on fetch timing). Both runs are valid interleavings; verify proves
it by bounding: the value with only the events that must precede (same partition,
lower offset) and with every event that may precede (plus all of the entity's events
on other partitions). A changed feature definition falls outside those bounds and is
reported as differing. ``strict`` makes order_dependent and late events fail too.

A definition check runs first: the window, aggregation, field and view version each
trace records against the views the replay ran with.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from decisioning.trace import feature_entries, trace_event
from feature_views.model import Aggregation, FeatureView
from feature_views.rows import view_definitions
from feature_views.window_state import ViewComputer, empty_state

# Contract: `transactions` is keyed by card_id, so a card's events share one partition.
PARTITION_KEY = "card_id"

IDENTICAL, DIFFERING, ORDER_DEPENDENT, LATE = "identical", "differing", "order_dependent", "late"


@dataclass(frozen=True)
class FeatureDiff:
    name: str
    live: float
    replay: float
    bounds: tuple[float, float] | None = None  # (must-precede, may-precede) values


@dataclass(frozen=True)
class EventDiff:
    event_id: str
    category: str
    cause: str
    features: tuple[FeatureDiff, ...]
    late_live: bool
    late_replay: bool


@dataclass
class VerifyReport:
    compared: int = 0
    identical: int = 0  # every feature equal (the feature vector serving used)
    # Identical features but a different late flag: the flag is not a feature; it
    # follows the watermark, which advances with processing time (informational).
    late_flag_differs: int = 0
    no_live_trace: int = 0
    diffs: list[EventDiff] = field(default_factory=list)
    definition_mismatches: list[str] = field(default_factory=list)
    by_feature: Counter[str] = field(default_factory=Counter)

    def of(self, category: str) -> list[EventDiff]:
        return [d for d in self.diffs if d.category == category]

    def ok(self, strict: bool = False) -> bool:
        """Passes only on evidence: a verify that compared no event proves nothing."""
        if self.compared == 0:
            return False
        failing = {DIFFERING} | ({ORDER_DEPENDENT, LATE} if strict else set())
        return not self.definition_mismatches and not any(
            d.category in failing for d in self.diffs)

    def to_json(self) -> dict[str, Any]:
        return {
            "compared": self.compared, "identical": self.identical,
            "differing": len(self.of(DIFFERING)),
            "order_dependent": len(self.of(ORDER_DEPENDENT)), "late": len(self.of(LATE)),
            "late_flag_differs": self.late_flag_differs, "no_live_trace": self.no_live_trace,
            "definition_mismatches": self.definition_mismatches,
            "differences_by_feature": dict(self.by_feature),
        }


@dataclass(frozen=True)
class LiveTrace:
    """The slice of a trace verify needs."""

    event: dict[str, Any]
    partition: int
    offset: int
    late: bool
    features: dict[str, float]
    definitions: dict[str, tuple[Any, ...]]  # name -> (view, version, aggregation, window, field)


def live_trace(doc: Mapping[str, Any]) -> LiveTrace:
    entries = feature_entries(doc)
    return LiveTrace(
        event=trace_event(doc),
        partition=doc["input"]["partition"],
        offset=doc["input"]["offset"],
        late=bool(doc["late"]),
        features={f["name"]: f["value"] for f in entries},
        definitions={f["name"]: (f["view"], f["view_version"], f["aggregation"],
                                 f["window_ms"], f["field"]) for f in entries},
    )


def parse_traces(values: Iterable[str | bytes | None]) -> dict[str, LiveTrace]:
    """event_id -> trace from `decision-traces` values (one trace per decision)."""
    out: dict[str, LiveTrace] = {}
    for value in values:
        if value is None:
            continue
        doc = json.loads(value)
        out[doc["event_id"]] = live_trace(doc)
    return out


def _definitions(views: Sequence[FeatureView]) -> dict[str, tuple[Any, ...]]:
    return {f["name"]: (v["name"], v["version"], f["aggregation"], f["window_ms"], f["field"])
            for v in view_definitions(views) for f in v["features"]}


def check_definitions(views: Sequence[FeatureView], traces: Iterable[LiveTrace]) -> list[str]:
    """One line per feature whose recorded definition differs from the replay's."""
    replayed = _definitions(views)
    seen: dict[str, set[tuple[Any, ...] | None]] = {}
    for trace in traces:
        for name in set(replayed) | set(trace.definitions):
            seen.setdefault(name, set()).add(trace.definitions.get(name))
    fields = ("view", "version", "aggregation", "window_ms", "field")
    lines = []
    for name in sorted(seen):
        mine = replayed.get(name)
        for live in sorted(seen[name], key=repr):
            if live == mine:
                continue
            if live is None or mine is None:
                where = "replay" if live is None else "live traces"
                lines.append(f"{name}: only in the {where}")
                continue
            changed = ", ".join(f"{k} {a!r} (live) vs {b!r} (replay)"
                                for k, a, b in zip(fields, live, mine, strict=True) if a != b)
            lines.append(f"{name}: {changed}")
    return lines


def _order_key(value: float, aggregation: Aggregation) -> float:
    # seconds_since_last shrinks as more events precede; -1 means "none", i.e. infinite.
    if aggregation is Aggregation.SECONDS_SINCE_LAST and value == -1:
        return math.inf
    return value


class InterleavingBounds:
    """Feature values of an event under the fewest and the most preceding events that
    any interleaving of the entity's partitions allows."""

    def __init__(self, views: Sequence[FeatureView], traces: Mapping[str, LiveTrace]) -> None:
        self._computers = {v.name: ViewComputer(v) for v in views}
        self._views = {v.name: v for v in views}
        self._by_entity: dict[tuple[str, Any], list[LiveTrace]] = {}
        for view in views:
            if view.entity_key == PARTITION_KEY:
                continue
            for trace in traces.values():
                key = (view.name, trace.event.get(view.entity_key))
                self._by_entity.setdefault(key, []).append(trace)

    def bounds(self, view_name: str, event: Mapping[str, Any], partition: int, offset: int
               ) -> tuple[dict[str, float], dict[str, float]] | None:
        """(must-precede values, may-precede values); None when every event of the
        entity shares the event's partition, so its order is fixed."""
        view = self._views[view_name]
        others = [t for t in self._by_entity.get((view_name, event.get(view.entity_key)), ())
                  if t.event["event_id"] != event["event_id"]]
        must = [t for t in others if t.partition == partition and t.offset < offset]
        may = must + [t for t in others if t.partition != partition]
        if len(may) == len(must):
            return None
        return self._values(view_name, must, event), self._values(view_name, may, event)

    def _values(self, view_name: str, preceding: list[LiveTrace], event: Mapping[str, Any]
                ) -> dict[str, float]:
        # The values depend only on the set of preceding events, not their order.
        computer = self._computers[view_name]
        state = empty_state()
        for trace in preceding:
            computer.apply(state, trace.event)
        return computer.apply(state, event)


def compare(rows: Iterable[Mapping[str, Any]], traces: Mapping[str, LiveTrace],
            views: Sequence[FeatureView]) -> VerifyReport:
    """Compare replayed rows (dicts with the row columns) with the live traces."""
    report = VerifyReport(definition_mismatches=check_definitions(views, traces.values()))
    names = [(v, f) for v in views for f in v.features]
    bounds = InterleavingBounds(views, traces)
    for row in rows:
        trace = traces.get(row["event_id"])
        if trace is None:
            report.no_live_trace += 1
            continue
        report.compared += 1
        differing = [(v, f) for v, f in names
                     if f.name not in trace.features or trace.features[f.name] != row[f.name]]
        if not differing:
            report.identical += 1
            report.late_flag_differs += trace.late != bool(row["late"])
            continue
        report.diffs.append(_classify(row, trace, differing, bounds))
        report.by_feature.update(f.name for _, f in differing)
    return report


def _classify(row: Mapping[str, Any], trace: LiveTrace,
              differing: list[tuple[FeatureView, Any]], bounds: InterleavingBounds) -> EventDiff:
    late_replay = bool(row["late"])

    def diff(feature: Any, within: tuple[float, float] | None = None) -> FeatureDiff:
        return FeatureDiff(feature.name, trace.features.get(feature.name, math.nan),
                           row[feature.name], within)

    if trace.late or late_replay:
        cause = (f"late event (live {trace.late}, replay {late_replay}): decided with the "
                 "state it found; what had expired depends on the watermark at processing "
                 "time")
        return EventDiff(row["event_id"], LATE, cause, tuple(diff(f) for _, f in differing),
                         trace.late, late_replay)
    out: list[FeatureDiff] = []
    explained = True
    for view, feature in differing:
        within = None
        if view.entity_key != PARTITION_KEY and feature.name in trace.features:
            found = bounds.bounds(view.name, trace.event, trace.partition, trace.offset)
            if found is not None:
                lo, hi = found[0][feature.name], found[1][feature.name]
                keys = sorted((_order_key(lo, feature.aggregation),
                               _order_key(hi, feature.aggregation)))
                live_k = _order_key(trace.features[feature.name], feature.aggregation)
                replay_k = _order_key(row[feature.name], feature.aggregation)
                within = (lo, hi)
                explained &= keys[0] <= live_k <= keys[1] and keys[0] <= replay_k <= keys[1]
            else:
                explained = False
        else:
            explained = False
        out.append(diff(feature, within))
    if explained:
        return EventDiff(row["event_id"], ORDER_DEPENDENT,
                         "the entity's events sit in several partitions; live and replay "
                         "interleaved them differently, both within the possible bounds",
                         tuple(out), trace.late, late_replay)
    return EventDiff(row["event_id"], DIFFERING,
                     "training/serving skew: not explained by lateness or interleaving",
                     tuple(out), trace.late, late_replay)
