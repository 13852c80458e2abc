"""Decision and trace for each scored record, and the dead letter of a failed one: one
tagged output, split into three sinks by the JVM (flink_jobs/topology.py).

``Decider`` is the decide stage's core, used by the customer-shard operator, which
decides where it scores (operators/customer_shard.py), and by ``DecideAndTrace``, the
stage's own operator after the opt-in last-score rung (operators/fallback_ladder.py) or
PyFlink's async scorer (process mode).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
from pyflink.common import Row, Types
from pyflink.datastream import ProcessFunction, RuntimeContext

from decisioning.decision import decide
from decisioning.rules import RuleSet, evaluate_rules
from decisioning.trace import build_trace
from feature_views.model import FeatureView
from operators.clock import now_ms
from operators.failures import has_failed, internal_error_row, mark_failed
from operators.fallback_ladder import LadderMetrics
from operators.records import JobRecord
from rtd_core.config import ThresholdsConfig

# Each output row is (kind, key, value), the kind one of these. One main output rather
# than the trace and dead letters as side outputs: PyFlink reads each side output through
# an identity map of its own, a Python operator, so a trace per event was a second
# Python entry per event (8.3% of the GIL's time in the 2026-12-02 profile,
# docs/BENCHMARKS.md). The split by kind is a filter in SQL, in the JVM.
DECISION, TRACE, DEAD_LETTER = 0, 1, 2
OUTPUT_ROW = Types.ROW_NAMED(["kind", "k", "v"],
                             [Types.INT(), Types.STRING(), Types.PRIMITIVE_ARRAY(Types.BYTE())])
STAGE = "decide"


class Decider:
    """Rows (DECISION, card_id, decision JSON) and (TRACE, decision_id, trace JSON), or
    (DEAD_LETTER, key, dead-letter JSON) for a record a stage failed on."""

    def __init__(
        self,
        rules: RuleSet,
        thresholds: ThresholdsConfig,
        views: tuple[FeatureView, ...],
        job_info: dict[str, Any],
    ) -> None:
        self.rules = rules
        self.thresholds = thresholds
        self.views = views
        self.job_info = job_info

    def open(self, runtime_context: RuntimeContext) -> None:
        group = runtime_context.get_metrics_group().add_group("rtd")
        self._internal_errors = group.add_group("internal_errors").counter(STAGE)
        self._outcomes = {
            (o, p): group.add_group("decisions").counter(f"{o}_{p}")
            for o in ("APPROVE", "REVIEW", "DECLINE")
            for p in ("MODEL", "RULES_ONLY")
        }

    def outputs(self, value: JobRecord) -> Iterator[Any]:
        """The decision and its trace, or the record's dead letter."""
        if not has_failed(value):
            try:
                decision, decision_json, trace_json = self._decide(value)
            except Exception as exc:  # noqa: BLE001 - no record's content may stop the job
                self._internal_errors.inc()
                mark_failed(value, STAGE, exc)
            else:
                self._outcomes[(decision["outcome"], decision["path"])].inc()
                yield Row(DECISION, decision["card_id"], decision_json)
                yield Row(TRACE, decision["decision_id"], trace_json)
                return
        key, dead_letter = internal_error_row(value, now_ms())
        yield Row(DEAD_LETTER, key, dead_letter)

    def _decide(self, value: JobRecord) -> tuple[dict[str, Any], bytes, bytes]:
        """The decision, and it and its trace serialised: all are built before either
        leaves, so a failure leaves neither."""
        event = value.event
        features = value.features
        model = value.model
        rule_results = evaluate_rules(self.rules, event, features)
        decided_at = now_ms()
        timings = value.timings
        timings["decided"] = decided_at
        decision = decide(
            event,
            rule_results,
            model,
            decline_at=self.thresholds.decline,
            review_at=self.thresholds.review,
            late=value.late,
            decided_at=decided_at,
        )
        trace = build_trace(
            decision=decision,
            source=value.source,
            event=event,
            views=self.views,
            features=features,
            as_of=value.as_of,
            rule_results=rule_results,
            rules_version=self.rules.version,
            model_request=value.model_request,
            model=model,
            thresholds={"decline": self.thresholds.decline, "review": self.thresholds.review},
            timings=timings,
            job=self.job_info,
        )
        return decision, orjson.dumps(decision), orjson.dumps(trace)


class DecideAndTrace(ProcessFunction):
    """``count_ladder``: no fallback-ladder operator runs before this one, so this one
    counts what it would have (operators/fallback_ladder.py, ``LadderMetrics``)."""

    def __init__(self, decider: Decider, count_ladder: bool) -> None:
        self.decider = decider
        self.count_ladder = count_ladder

    def open(self, runtime_context: RuntimeContext) -> None:
        self.decider.open(runtime_context)
        self._ladder = LadderMetrics(runtime_context) if self.count_ladder else None

    def process_element(self, value: JobRecord, ctx: ProcessFunction.Context
                        ) -> Iterator[Any]:
        if self._ladder is not None and not has_failed(value):
            self._ladder.without_ladder(value.model)
        yield from self.decider.outputs(value)
