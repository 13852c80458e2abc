"""The vocabulary feature views are declared in: frozen, typed, hashable data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from rtd_core.contract import ALLOWED_LATENESS_MS, WATERMARK_DELAY_MS

MINUTE_MS = 60_000
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS


class Aggregation(str, Enum):
    """How a feature folds the events of its key inside its window."""

    COUNT = "count"
    """Number of events in (t - W, t], the current event included."""
    SUM = "sum"
    """Sum of ``field`` over events in (t - W, t], the current event included."""
    MAX = "max"
    """Largest ``field`` over events in (t - W, t], the current event included."""
    DISTINCT_COUNT = "distinct_count"
    """Exact number of distinct ``field`` values over events in (t - W, t], current included."""
    SECONDS_SINCE_LAST = "seconds_since_last"
    """t minus the latest earlier-processed event time <= t, in seconds; -1 when there is none
    within the look-back window W."""
    CHANGED_WITHIN = "changed_within"
    """1 if an earlier-processed event in (t - W, t] has a ``field`` other than the current
    event's, else 0."""


# Aggregations that read a value from the event (the others only read event time).
NEEDS_FIELD = frozenset(
    {Aggregation.SUM, Aggregation.MAX, Aggregation.DISTINCT_COUNT, Aggregation.CHANGED_WITHIN}
)


@dataclass(frozen=True)
class Feature:
    name: str
    aggregation: Aggregation
    window_ms: int
    field: str | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.window_ms <= 0:
            raise ValueError(f"feature {self.name}: window_ms must be > 0, got {self.window_ms}")
        if (self.aggregation in NEEDS_FIELD) != (self.field is not None):
            need = "needs" if self.aggregation in NEEDS_FIELD else "takes no"
            raise ValueError(f"feature {self.name}: {self.aggregation.value} {need} a field")

    @property
    def keeps_history(self) -> bool:
        """Whether the feature needs the per-event history (all but the last-seen delta)."""
        return self.aggregation is not Aggregation.SECONDS_SINCE_LAST


@dataclass(frozen=True)
class FeatureView:
    """Features of one entity key, computed by one keyed operator.

    ``version`` changes whenever the meaning of any feature changes: it is recorded in
    every trace and every replayed row, so values of different semantics never mix.
    """

    name: str
    entity_key: str
    features: tuple[Feature, ...]
    version: int
    description: str = ""
    # The bounded out-of-orderness the view tolerates, and how far behind the watermark
    # an event may be before it is flagged late: the contract's values, which the job
    # config's settings of the same names default to as well.
    watermark_delay_ms: int = WATERMARK_DELAY_MS
    allowed_lateness_ms: int = ALLOWED_LATENESS_MS
    # An event field the entity is scoped to: state is per (scope value, entity key).
    # The card view is scoped to the customer, so its state lives beside the customer's
    # in one keyed operator (operators/keyed_features.py).
    scope: str | None = None

    def state_key(self, event: Mapping[str, Any]) -> str:
        """The key of ``event``'s entity state: the entity key, within its scope."""
        key = event[self.entity_key]
        if self.scope is None:
            return key
        scope = event[self.scope]
        return f"{len(scope)}:{scope}{key}"  # unambiguous: the scope's length first

    def __post_init__(self) -> None:
        names = [f.name for f in self.features]
        if len(names) != len(set(names)):
            raise ValueError(f"view {self.name}: duplicate feature names {names}")
        if not self.features:
            raise ValueError(f"view {self.name}: no features")

    @property
    def history_fields(self) -> tuple[str, ...]:
        """Event fields kept per history entry, in a fixed order."""
        return tuple(sorted({f.field for f in self.features if f.keeps_history and f.field}))

    @property
    def history_window_ms(self) -> int:
        """How far back the per-event history must reach (0 when no feature needs it)."""
        return max((f.window_ms for f in self.features if f.keeps_history), default=0)

    @property
    def last_seen_window_ms(self) -> int:
        return max(
            (f.window_ms for f in self.features if not f.keeps_history), default=0
        )

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)
