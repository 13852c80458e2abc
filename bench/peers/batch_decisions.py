"""One batch of input records to its output records: the batched service's pure core.

No Kafka and no gRPC here: records come in as ``InputRecord``s, the model is a callable
from rows to scores, and what leaves is a list of ``Output``s (topic, key, value) for
the caller to produce in one transaction. The code that decides is the job's:
validation (``decisioning/transaction.py``), features (``ViewComputer``), the model's
inputs (``model_inputs``), rules, decision and trace (as ``operators/decide.py`` builds
them) and the dead-letter record (``operators/failures.py``).

Event time: one watermark for the whole service, the largest event time seen minus the
watermark delay (the job keeps one per partition, gated until every partition has
delivered); an event behind it by more than the allowed lateness is decided and flagged
late, as in the job.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from bench.peers.entity_store import EntityCache, Progress
from decisioning.decision import ModelResult, decide
from decisioning.rules import RuleSet, evaluate_rules
from decisioning.trace import build_trace
from decisioning.transaction import Reason, Rejection, validate
from feature_views.definitions import ALL_VIEWS
from feature_views.window_state import ViewComputer
from operators.failures import dead_letter_row, error_text
from operators.scored_records import DETAIL_LIMIT, model_request
from rtd_core.config import RtdConfig
from serving.model_signature import model_inputs
from serving.predict_calls import ModelCallError

# rows -> (scores, model version, latency ms); raises ModelCallError when there is none.
Scorer = Callable[[Sequence[dict[str, float]]], tuple[list[float], int, float]]


def now_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True, slots=True)
class InputRecord:
    key: bytes | None
    value: bytes | None
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None


@dataclass(frozen=True, slots=True)
class Output:
    topic: str
    key: str | None
    value: bytes


def _text(data: bytes | None) -> str | None:
    return None if data is None else data.decode("utf-8", errors="replace")


def source_of(record: InputRecord) -> dict[str, Any]:
    return {"key": _text(record.key), "raw": _text(record.value), "topic": record.topic,
            "partition": record.partition, "offset": record.offset,
            "kafka_timestamp": record.timestamp_ms}


class BatchDecider:
    """Features, one model call, decisions, traces and dead letters for one batch."""

    def __init__(self, config: RtdConfig, rules: RuleSet, cache: EntityCache,
                 progress: Progress, job_info: dict[str, Any]) -> None:
        self.config = config
        self.rules = rules
        self.cache = cache
        self.progress = progress
        self.job_info = job_info
        self.computers = [(view, ViewComputer(view)) for view in ALL_VIEWS]
        topics = config.kafka.topics
        self.decisions_topic, self.traces_topic, self.dlq_topic = (
            topics.decisions, topics.traces, topics.dlq)
        self.thresholds = {"decline": config.thresholds.decline,
                           "review": config.thresholds.review}

    def _dead_letter(self, rejection: Rejection, source: dict[str, Any], stage: str) -> Output:
        row = dead_letter_row(rejection, source, now_ms(), stage=stage)
        return Output(self.dlq_topic, row[0], row[1])

    def _features(self, value: dict[str, Any]) -> None:
        """The views' features of the event, folded into state; sets ``late``."""
        job = self.config.job
        event = value["event"]
        t = event["event_time"]
        top = self.progress.max_event_time
        watermark = None if top is None else top - job.watermark_delay_ms
        value["late"] = watermark is not None and t < watermark - job.allowed_lateness_ms
        for view, computer in self.computers:
            state = self.cache.get(view.name, view.state_key(event))
            if watermark is not None:
                computer.prune(state, watermark, job.allowed_lateness_ms)
            value["features"].update(computer.apply(state, event))
            value["as_of"][view.name] = {"as_of_event_time": t, "watermark": watermark,
                                         "computed_at": now_ms()}
            value["timings"][view.name] = now_ms()
        if top is None or t > top:
            self.progress.max_event_time = t

    def fold(self, record: InputRecord) -> dict[str, Any] | Output:
        """Validate ``record`` and fold it into state: the record for scoring, or its
        dead letter. Also used alone, without outputs, to rebuild state on recovery."""
        received = now_ms()
        source = source_of(record)
        self.progress.offsets[record.partition] = record.offset + 1
        try:
            event = validate(record.value, record.timestamp_ms, self.config.job.max_future_skew_ms)
        except Exception as exc:  # noqa: BLE001 - no record's content may stop the service
            return self._dead_letter(Rejection(Reason.INTERNAL_ERROR, error_text(exc)),
                                     source, "validate")
        if isinstance(event, Rejection):
            return self._dead_letter(event, source, "validate")
        value: dict[str, Any] = {
            "source": source, "event": event, "features": {}, "as_of": {}, "late": False,
            "timings": {"received": received, "validated": now_ms()},
        }
        try:
            self._features(value)
            value["inputs"] = model_inputs(event, value["features"])
        except Exception as exc:  # noqa: BLE001
            return self._dead_letter(Rejection(Reason.INTERNAL_ERROR, error_text(exc)),
                                     source, "features")
        return value

    def decide_batch(self, records: Sequence[InputRecord], scorer: Scorer) -> list[Output]:
        outputs: list[Output] = []
        scored: list[dict[str, Any]] = []
        for record in records:
            result = self.fold(record)
            if isinstance(result, Output):
                outputs.append(result)
            else:
                scored.append(result)
        if scored:
            for value, model in zip(scored, self._score(scored, scorer), strict=True):
                outputs.extend(self._decide(value, model))
        return outputs

    def _score(self, values: list[dict[str, Any]], scorer: Scorer) -> list[ModelResult]:
        """One call for the whole batch; on failure the rules alone decide every row."""
        try:
            scores, version, latency_ms = scorer([v["inputs"] for v in values])
            results = [ModelResult(s, version, None, latency_ms=round(latency_ms, 3),
                                   batch_size=len(values)) for s in scores]
        except ModelCallError as exc:
            results = [ModelResult(None, None, exc.reason, detail=exc.detail[:DETAIL_LIMIT])
                       ] * len(values)
        except Exception as exc:  # noqa: BLE001 - a model problem must never stop decisions
            results = [ModelResult(None, None, "error", detail=error_text(exc)[:DETAIL_LIMIT])
                       ] * len(values)
        scored_at = now_ms()
        for value in values:
            value["timings"]["scored"] = scored_at
        return results

    def _decide(self, value: dict[str, Any], model: ModelResult) -> list[Output]:
        try:
            event, features = value["event"], value["features"]
            rule_results = evaluate_rules(self.rules, event, features)
            decided_at = value["timings"]["decided"] = now_ms()
            decision = decide(event, rule_results, model, decline_at=self.thresholds["decline"],
                              review_at=self.thresholds["review"], late=value["late"],
                              decided_at=decided_at)
            trace = build_trace(
                decision=decision, source=value["source"], event=event, views=ALL_VIEWS,
                features=features, as_of=value["as_of"], rule_results=rule_results,
                rules_version=self.rules.version,
                model_request=model_request(self.config.serving, value["inputs"]),
                model=model, thresholds=self.thresholds, timings=value["timings"],
                job=self.job_info,
            )
            return [Output(self.decisions_topic, decision["card_id"], orjson.dumps(decision)),
                    Output(self.traces_topic, decision["decision_id"], orjson.dumps(trace))]
        except Exception as exc:  # noqa: BLE001
            return [self._dead_letter(Rejection(Reason.INTERNAL_ERROR, error_text(exc)),
                                      value["source"], "decide")]
