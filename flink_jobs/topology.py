"""The decision topology, built from injected ends (style: flink-training).

``build_topology`` takes the raw record stream and returns the three output streams;
production wires Kafka tables to both ends, tests may wire collections.

raw (per-partition event-time watermarks and the key, the customer's shard, both
     computed in the Kafka source's SQL: flink_jobs/kafka_tables.py)
    -> keyed by the customer's shard: validation, card and customer features, batched
       model scoring and decide + trace, in one operator (operators/customer_shard.py)

One shuffle and one Python operator per event: the source task runs no Python, and a
card belongs to one customer, so both feature views' state lives under the customer's
shard (operators/keyed_features.py), and scoring and deciding happen where the features
are. A decision and its trace leave Python as one record, which the JVM splits for the
two sinks; side outputs are read in the JVM (flink_jobs/jvm_streams.py). Two variants
add stages:
- the last-score rung of the fallback ladder, opt-in (``serving.last_score_max_age_ms``
  > 0): its state is per card, so scored records are keyed again by the card's shard
  (operators/fallback_ladder.py) before a decide operator;
- process mode (``job.execution_mode``, job-wide in PyFlink): PyFlink's async operator
  scores (operators/scoring.py) between the feature operator and the decide operator.

Validation's dead letters leave the keyed operator by a side output. A record a later
stage fails on is marked and passed on; the decide stage sends it to the dead letters
with reason internal_error (operators/failures.py).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from pyflink.common import Time, Types
from pyflink.datastream import AsyncDataStream, DataStream, KeyedStream

from decisioning.rules import RuleSet
from feature_views.definitions import ALL_VIEWS, CARD_FEATURES, CUSTOMER_FEATURES, FEATURE_NAMES
from feature_views.model import FeatureView
from flink_jobs.jvm_streams import projected, side_output
from operators.customer_shard import CustomerShardFunction
from operators.decide import (
    DECISION_FIELDS,
    DECISION_OUTPUT,
    TRACE_FIELDS,
    DecideAndTrace,
    Decider,
)
from operators.failures import DEAD_LETTER_TAG
from operators.fallback_ladder import FallbackLadderFunction
from operators.keyed_features import ShardFeatures
from operators.scoring import ScoreWithModel
from operators.validation import Validation
from rtd_core.config import RtdConfig
from rtd_core.sharding import shard_of

RECORDS = Types.PICKLED_BYTE_ARRAY()


@dataclass(frozen=True)
class Outputs:
    """All three must be read (the job sinks each): PyFlink fails a record sent to a
    side output that nothing reads (the dead letters). ``decisions``: (card_id, decision
    JSON); ``traces``: (decision_id, trace JSON); ``dead_letters``: (key, JSON)."""

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


def validation(config: RtdConfig,
               customer_view: FeatureView = CUSTOMER_FEATURES) -> Validation:
    return Validation(config.job.max_future_skew_ms, customer_view.entity_key,
                      config.job.state_shards)


def build_features(
    raw: KeyedStream,
    config: RtdConfig,
    views: tuple[FeatureView, FeatureView] = (CARD_FEATURES, CUSTOMER_FEATURES),
) -> DataStream:
    """Validation and the feature operator alone: the part the live job and the replay
    share, so both compute features with the same code and state. ``raw``: source rows
    keyed by their customer's shard (flink_jobs/kafka_tables.py, ``keyed_source``).
    ``views``: the card view (its state scoped to the customer; flags late events) and
    the customer view, whose entity key is the shard's; any declared features are
    computed, no operator code names them. Watermarks come with ``raw`` from the
    source, per Kafka partition. Dead letters: ``side_output(result, DEAD_LETTER_TAG)``."""
    return raw.process(CustomerShardFunction(validation(config, views[1]),
                                             shard_features(config, views)),
                       output_type=RECORDS) \
        .uid("customer-shard-features").name("Validation and features (card + customer)")


def build_topology(raw: KeyedStream, config: RtdConfig, rules: RuleSet) -> Outputs:
    """``raw``: source rows keyed by their customer's shard (``keyed_source``)."""
    rules.check_inputs(FEATURE_NAMES)
    decider = Decider(rules, config.thresholds, ALL_VIEWS, job_info(config, rules))
    last_score_rung = config.serving.last_score_max_age_ms > 0

    dead_letters: list[DataStream] = []
    if config.job.execution_mode == "thread":
        shard_function = CustomerShardFunction(
            validation(config), shard_features(config), config.serving,
            None if last_score_rung else decider)
        if not last_score_rung:
            decisions = raw.process(shard_function, output_type=DECISION_OUTPUT) \
                .uid("decide-by-customer").name("Validation, features, scoring, decision")
            return _outputs(decisions, [], config.flink.sinks_in_own_task)
        scored = raw.process(shard_function, output_type=RECORDS) \
            .uid("score-by-customer").name("Validation, features and scoring")
        dead_letters.append(side_output(scored, DEAD_LETTER_TAG))
    else:
        features = build_features(raw, config)
        dead_letters.append(side_output(features, DEAD_LETTER_TAG))
        scored = AsyncDataStream.unordered_wait(
            features,
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
        DecideAndTrace(decider, count_ladder=not last_score_rung), output_type=DECISION_OUTPUT,
    ).uid("decide-and-trace").name("Decide and trace")
    return _outputs(decisions, dead_letters, config.flink.sinks_in_own_task)


def _outputs(decided: DataStream, upstream_dead_letters: list[DataStream],
             own_task: bool) -> Outputs:
    """The decide stage's outputs, each decision and its trace split in the JVM; its dead
    letters with those of the stages before it."""
    dead_letters = side_output(decided, DEAD_LETTER_TAG)
    if upstream_dead_letters:
        dead_letters = dead_letters.union(*upstream_dead_letters)
    decisions = projected(decided, DECISION_FIELDS)
    traces = projected(decided, TRACE_FIELDS)
    if own_task:
        decisions, traces = decisions.start_new_chain(), traces.start_new_chain()
    return Outputs(decisions=decisions, traces=traces, dead_letters=dead_letters)
