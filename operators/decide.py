"""Decision and trace for each scored record: one output record, two sinks.

``Decider`` is the decide stage's core, used by the customer-shard operator, which
decides where it scores (operators/customer_shard.py), and by ``DecideAndTrace``, the
stage's own operator after the opt-in last-score rung (operators/fallback_ladder.py) or
PyFlink's async scorer (process mode).

A decision and its trace leave Python together, as one ``DECISION_OUTPUT`` tuple that
the JVM splits for the two sinks (flink_jobs/topology.py): a trace sent by a side
output was one more conversion and JNI call per event (6.7% of the keyed operator's GIL
samples went to side outputs; docs/BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
from pyflink.common import Types
from pyflink.datastream import ProcessFunction, RuntimeContext

from decisioning.decision import decide
from decisioning.rules import RuleSet, evaluate_rules
from decisioning.trace import build_trace
from feature_views.model import FeatureView
from operators.clock import now_ms
from operators.failures import (
    DEAD_LETTER_TAG,
    has_failed,
    internal_error_row,
    mark_failed,
)
from operators.fallback_ladder import LadderMetrics
from operators.records import JobRecord
from rtd_core.config import ThresholdsConfig

# (decisions' key: card_id, the decision's JSON, traces' key: decision_id, the trace's
# JSON). A Tuple, not a Row: the JVM projects a Tuple's fields with no code of its own.
DECISION_OUTPUT = Types.TUPLE([Types.STRING(), Types.PRIMITIVE_ARRAY(Types.BYTE()),
                               Types.STRING(), Types.PRIMITIVE_ARRAY(Types.BYTE())])
DECISION_FIELDS = (0, 1)
TRACE_FIELDS = (2, 3)
STAGE = "decide"


class Decider:
    """Main output: ``DECISION_OUTPUT``. Side output: the dead letter of a record a stage
    failed on."""

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
                yield decision["card_id"], decision_json, decision["decision_id"], trace_json
                return
        # Records any stage failed on (operators/failures.py), as dead letters.
        yield DEAD_LETTER_TAG, internal_error_row(value, now_ms())

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
