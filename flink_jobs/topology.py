"""The decision topology, built from injected ends (style: flink-training).

``build_topology`` takes the raw record stream and returns the three output streams;
production wires Kafka tables to both ends, tests may wire collections.

raw (per-partition event-time watermarks, generated in the Kafka source:
     flink_jobs/kafka_tables.py) -> validate (dead letters to a side output)
    -> key by card_id: card features -> key by customer_id: customer features
    -> batched model scoring -> key by card_id: fallback ladder (the card's last
       score when the live call failed) -> decide + trace

A record any stage fails on is marked and passed on; the decide stage sends it to the
dead letters with reason internal_error (operators/failures.py).

Model scoring depends on the job's execution mode (``job.execution_mode``, job-wide in
PyFlink): in thread mode a keyed operator per lane with a durable queue
(operators/batched_scoring.py), in process mode PyFlink's async operator
(operators/scoring.py). Both batch concurrent records into one Predict call.
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
from operators.batched_scoring import BatchedScoring, lane_of
from operators.decide import INTERNAL_ERROR_TAG, TRACE_TAG, DecideAndTrace
from operators.fallback_ladder import FallbackLadderFunction
from operators.keyed_features import FeatureViewFunction, shard_of
from operators.scoring import ScoreWithModel
from operators.validation import DLQ_TAG, KEY_VALUE_ROW, ValidateEvents
from rtd.config import RtdConfig


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


def build_features(
    validated: DataStream,
    config: RtdConfig,
    views: tuple[FeatureView, FeatureView] = (CARD_FEATURES, CUSTOMER_FEATURES),
) -> DataStream:
    """The keyed feature operators: the part the live job and the replay share, so both
    compute features with the same code and state. ``views``: the card view (keyed by
    its entity key, flags late events) and the customer view; any declared features are
    computed, no operator code names them. Watermarks come with ``validated`` from the
    source, per Kafka partition (flink_jobs/kafka_tables.py)."""
    card_view, customer_view = views
    job = config.job
    records = Types.PICKLED_BYTE_ARRAY()
    shards = job.state_shards
    partitions = config.kafka.partitions
    card_key, customer_key = card_view.entity_key, customer_view.entity_key
    card = validated.key_by(lambda r: shard_of(r["event"][card_key], shards), key_type=Types.INT()) \
        .process(FeatureViewFunction(card_view, job.allowed_lateness_ms,
                                     stage="card_features", flags_late=True,
                                     partitions=partitions, delay_ms=job.watermark_delay_ms,
                                     idleness_ms=job.idleness_ms),
                 output_type=records) \
        .uid("card-features").name("Card features")

    return card.key_by(lambda r: shard_of(r["event"][customer_key], shards),
                       key_type=Types.INT()) \
        .process(FeatureViewFunction(customer_view, job.allowed_lateness_ms,
                                     stage="customer_features", flags_late=False,
                                     partitions=partitions, delay_ms=job.watermark_delay_ms,
                                     idleness_ms=job.idleness_ms),
                 output_type=records) \
        .uid("customer-features").name("Customer features")


def validate_events(raw: DataStream, config: RtdConfig) -> tuple[DataStream, DataStream]:
    """Valid records, and dead letters (key, value) rows."""
    validated = raw.process(ValidateEvents(config.job.max_future_skew_ms),
                            output_type=Types.PICKLED_BYTE_ARRAY()) \
        .uid("validate-events").name("Validate events")
    return validated, validated.get_side_output(DLQ_TAG)


def score(features: DataStream, config: RtdConfig) -> DataStream:
    """Records with their ``model`` result (a live score or a fallback reason)."""
    records = Types.PICKLED_BYTE_ARRAY()
    if config.job.execution_mode == "thread":
        parallelism = config.flink.parallelism
        return features.key_by(lambda r: lane_of(r["event"]["card_id"], parallelism),
                               key_type=Types.INT()) \
            .process(BatchedScoring(config.serving), output_type=records) \
            .uid("model-scoring-batched").name("Model scoring (batched)")
    return AsyncDataStream.unordered_wait(
        features,
        ScoreWithModel(config.serving),
        Time.milliseconds(config.job.async_operator_timeout_ms),
        capacity=config.serving.async_capacity,
        output_type=records,
    ).uid("model-scoring").name("Model scoring (async, batched)")


def build_topology(raw: DataStream, config: RtdConfig, rules: RuleSet) -> Outputs:
    rules.check_inputs(FEATURE_NAMES)
    validated, rejected = validate_events(raw, config)
    customer = build_features(validated, config)

    scored = score(customer, config)

    # Keyed by the card's shard, like the feature operators (see keyed_features.py).
    shards = config.job.state_shards
    laddered = scored.key_by(lambda r: shard_of(r["event"]["card_id"], shards),
                             key_type=Types.INT()) \
        .process(FallbackLadderFunction(config.serving.last_score_max_age_ms,
                                        config.job.allowed_lateness_ms),
                 output_type=Types.PICKLED_BYTE_ARRAY()) \
        .uid("fallback-ladder").name("Fallback ladder (last score per card)")

    decisions = laddered.process(
        DecideAndTrace(rules, config.thresholds, ALL_VIEWS, job_info(config, rules)),
        output_type=KEY_VALUE_ROW,
    ).uid("decide-and-trace").name("Decide and trace")
    traces = decisions.get_side_output(TRACE_TAG)
    dead_letters = rejected.union(decisions.get_side_output(INTERNAL_ERROR_TAG))
    return Outputs(decisions=decisions, traces=traces, dead_letters=dead_letters)
