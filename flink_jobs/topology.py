"""The decision topology, built from injected ends (style: flink-training).

``build_topology`` takes the raw record stream and returns the three output streams;
production wires Kafka tables to both ends, tests may wire collections.

raw (per-partition event-time watermarks, generated in the Kafka source:
     flink_jobs/kafka_tables.py) -> validate (dead letters to a side output)
    -> key by the customer's shard: card and customer features, batched model
       scoring and decide + trace, in one operator (operators/customer_shard.py)

One shuffle per event: a card belongs to one customer, so both feature views' state
lives under the customer's shard (operators/keyed_features.py), and scoring and deciding
happen where the features are. Two variants add stages:
- the last-score rung of the fallback ladder, opt-in (``serving.last_score_max_age_ms``
  > 0): its state is per card, so scored records are keyed again by the card's shard
  (operators/fallback_ladder.py) before a decide operator;
- process mode (``job.execution_mode``, job-wide in PyFlink): PyFlink's async operator
  scores (operators/scoring.py) between the feature operator and the decide operator.

A record any stage fails on is marked and passed on; the decide stage sends it to the
dead letters with reason internal_error (operators/failures.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from pyflink.common import Time, Types
from pyflink.datastream import AsyncDataStream, DataStream

from decisioning.rules import RuleSet
from feature_views.definitions import ALL_VIEWS, CARD_FEATURES, CUSTOMER_FEATURES, FEATURE_NAMES
from feature_views.model import FeatureView
from operators.customer_shard import CustomerShardFunction
from operators.decide import INTERNAL_ERROR_TAG, TRACE_TAG, DecideAndTrace, Decider
from operators.fallback_ladder import FallbackLadderFunction
from operators.keyed_features import ShardFeatures, shard_of
from operators.scoring import ScoreWithModel
from operators.validation import DLQ_TAG, KEY_VALUE_ROW, ValidateEvents
from rtd_core.config import RtdConfig

RECORDS = Types.PICKLED_BYTE_ARRAY()


@dataclass(frozen=True)
class Outputs:
    decisions: DataStream
    traces: DataStream
    dead_letters: DataStream


def job_info(config: RtdConfig, rules: RuleSet) -> dict[str, Any]:
    """The code and config version every trace carries."""
    digest = hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]
    return {
        "name": config.job.name,
        "code_version": config.job.code_version,
        "config_digest": digest,
        "rules_version": rules.version,
        "feature_views": {v.name: v.version for v in ALL_VIEWS},
    }


def shard_features(
    config: RtdConfig,
    views: tuple[FeatureView, FeatureView] = (CARD_FEATURES, CUSTOMER_FEATURES),
) -> ShardFeatures:
    job = config.job
    return ShardFeatures(views, job.allowed_lateness_ms, partitions=config.kafka.partitions,
                         delay_ms=job.watermark_delay_ms, idleness_ms=job.idleness_ms,
                         capacity=job.working_set_entities, key_capacity=job.working_set_keys,
                         history_capacity=job.working_set_history)


def by_customer_shard(validated: DataStream, config: RtdConfig,
                      views: tuple[FeatureView, FeatureView]) -> Any:
    customer_key = views[1].entity_key
    shards = config.job.state_shards
    return validated.key_by(lambda r: shard_of(r.event[customer_key], shards),
                            key_type=Types.INT())


def build_features(
    validated: DataStream,
    config: RtdConfig,
    views: tuple[FeatureView, FeatureView] = (CARD_FEATURES, CUSTOMER_FEATURES),
) -> DataStream:
    """The feature operator alone: the part the live job and the replay share, so both
    compute features with the same code and state. ``views``: the card view (its state
    scoped to the customer; flags late events) and the customer view, whose entity key
    is the shard's; any declared features are computed, no operator code names them.
    Watermarks come with ``validated`` from the source, per Kafka partition
    (flink_jobs/kafka_tables.py)."""
    return by_customer_shard(validated, config, views) \
        .process(CustomerShardFunction(shard_features(config, views)), output_type=RECORDS) \
        .uid("customer-shard-features").name("Features (card + customer)")


def validate_events(raw: DataStream, config: RtdConfig) -> tuple[DataStream, DataStream]:
    """Valid records, and dead letters (key, value) rows."""
    validated = raw.process(ValidateEvents(config.job.max_future_skew_ms),
                            output_type=Types.PICKLED_BYTE_ARRAY()) \
        .uid("validate-events").name("Validate events")
    return validated, validated.get_side_output(DLQ_TAG)


def build_topology(raw: DataStream, config: RtdConfig, rules: RuleSet) -> Outputs:
    rules.check_inputs(FEATURE_NAMES)
    validated, rejected = validate_events(raw, config)
    decider = Decider(rules, config.thresholds, ALL_VIEWS, job_info(config, rules))
    last_score_rung = config.serving.last_score_max_age_ms > 0
    views = (CARD_FEATURES, CUSTOMER_FEATURES)

    decisions: DataStream
    if config.job.execution_mode == "thread":
        keyed = by_customer_shard(validated, config, views)
        if not last_score_rung:
            decisions = keyed.process(
                CustomerShardFunction(shard_features(config), config.serving, decider),
                output_type=KEY_VALUE_ROW,
            ).uid("decide-by-customer").name("Features, scoring, decision")
            return _outputs(decisions, rejected)
        scored = keyed.process(CustomerShardFunction(shard_features(config), config.serving),
                               output_type=RECORDS) \
            .uid("score-by-customer").name("Features and scoring")
    else:
        scored = AsyncDataStream.unordered_wait(
            build_features(validated, config),
            ScoreWithModel(config.serving),
            Time.milliseconds(config.job.async_operator_timeout_ms),
            capacity=config.serving.async_capacity,
            output_type=RECORDS,
        ).uid("model-scoring").name("Model scoring (async, batched)")

    if last_score_rung:
        # The card's last live score is state per card: keyed by the card's shard.
        shards = config.job.state_shards
        scored = scored.key_by(lambda r: shard_of(r.event["card_id"], shards),
                               key_type=Types.INT()) \
            .process(FallbackLadderFunction(config.serving.last_score_max_age_ms,
                                            config.job.allowed_lateness_ms),
                     output_type=RECORDS) \
            .uid("fallback-ladder").name("Fallback ladder (last score per card)")
    decisions = scored.process(
        DecideAndTrace(decider, count_ladder=not last_score_rung), output_type=KEY_VALUE_ROW,
    ).uid("decide-and-trace").name("Decide and trace")
    return _outputs(decisions, rejected)


def _outputs(decisions: DataStream, rejected: DataStream) -> Outputs:
    traces = decisions.get_side_output(TRACE_TAG)
    dead_letters = rejected.union(decisions.get_side_output(INTERNAL_ERROR_TAG))
    return Outputs(decisions=decisions, traces=traces, dead_letters=dead_letters)
