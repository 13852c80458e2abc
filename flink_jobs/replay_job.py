"""The bounded replay job: `transactions` history -> one feature row per valid event.

It is the live job's own front half: ``keyed_source`` and ``build_features`` (validation
and features) from ``flink_jobs/``, the same operators, the same state layout, the same
watermarks, fed by the Kafka table source bounded to resolved offsets. Only what
comes after the features differs: instead of scoring and deciding, each record becomes
a flat row (``feature_views.rows``) that is batched and collected back to the client.

Why STREAMING and not BATCH execution: the contract's features count "events already
processed", and per card the live processing order is the Kafka partition order.
BATCH mode sorts each keyed operator's input by key and timestamp (measured: an
out-of-order event is then processed before the earlier-arriving later event), which
changes the values of every out-of-order event. STREAMING with a bounded source keeps
the partition order and finishes when the source reaches its end offsets.

Why batches: every element collected with ``execute_and_collect`` costs the client
two py4j round trips; one pickled list per ``batch_size`` rows makes that negligible.
The batcher flushes its rest on an event-time timer that fires on the final
watermark a finished bounded source emits.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from pyflink.common import Configuration, Row, Types
from pyflink.datastream import (
    DataStream,
    FlatMapFunction,
    KeyedProcessFunction,
    KeyedStream,
    RuntimeExecutionMode,
    StreamExecutionEnvironment,
)
from pyflink.table import StreamTableEnvironment

from decisioning.transaction import Reason
from feature_views.model import FeatureView
from feature_views.rows import row_values
from flink_jobs.decision_job import job_configuration
from flink_jobs.embedded_python import embedded_python_path
from flink_jobs.jvm_streams import side_output
from flink_jobs.kafka_tables import keyed_source, source_ddl
from flink_jobs.topology import build_features
from operators.failures import DEAD_LETTER_TAG, has_failed
from operators.records import JobRecord
from rtd_core.config import RtdConfig

ROW = "row"
DEAD = "dead"
# Long.MAX_VALUE: the watermark a finished bounded source emits, so this timer fires last.
END_OF_INPUT = 2**63 - 1
EXECUTION_MODES = ("process", "thread")
class ReplayRows(FlatMapFunction):
    """Feature record -> (ROW, row tuple); warm-up records (before ``rows_from``) only
    built state and are dropped here."""

    def __init__(self, views: Sequence[FeatureView], rows_from: Mapping[int, int]) -> None:
        self.views = tuple(views)
        self.rows_from = dict(rows_from)

    def flat_map(self, value: JobRecord) -> Iterator[tuple[str, Any]]:
        source = value.source
        if source["offset"] >= self.rows_from.get(source["partition"], 0):
            if has_failed(value):  # the live job dead-letters it as internal_error
                yield DEAD, Reason.INTERNAL_ERROR
            else:
                yield ROW, row_values(value.event, value.source, value.features, value.as_of,
                                      value.late, self.views)


class DeadLetterMarks(FlatMapFunction):
    """Dead letter (key, JSON) -> (DEAD, reason), for the summary's count."""

    def __init__(self, rows_from: Mapping[int, int]) -> None:
        self.rows_from = dict(rows_from)

    def flat_map(self, value: Row) -> Iterator[tuple[str, Any]]:
        doc = json.loads(value[1])
        if doc["offset"] >= self.rows_from.get(doc["partition"], 0):
            yield DEAD, doc["reason"]


class RowBatcher(KeyedProcessFunction):
    """Lists of up to ``batch_size`` tagged items. The buffer lives in memory, not in
    Flink state: a replay runs without checkpoints and is re-run whole on failure."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self._buffer: list[tuple[str, Any]] = []
        self._timer_set = False

    def open(self, runtime_context: Any) -> None:
        self._buffer = []
        self._timer_set = False

    def process_element(self, value: tuple[str, Any], ctx: KeyedProcessFunction.Context
                        ) -> Iterator[list[tuple[str, Any]]]:
        if not self._timer_set:
            ctx.timer_service().register_event_time_timer(END_OF_INPUT)
            self._timer_set = True
        self._buffer.append(value)
        if len(self._buffer) >= self.batch_size:
            batch, self._buffer = self._buffer, []
            yield batch

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext
                 ) -> Iterator[list[tuple[str, Any]]]:
        if self._buffer:
            batch, self._buffer = self._buffer, []
            yield batch


def build_replay(raw: KeyedStream, config: RtdConfig,
                 views: tuple[FeatureView, FeatureView], rows_from: Mapping[int, int],
                 batch_size: int) -> DataStream:
    """Raw (key, value, topic, partition, offset, timestamp) rows keyed by customer shard
    -> batches of tagged rows and dead-letter marks. Injected source, as
    ``build_topology``."""
    records = Types.PICKLED_BYTE_ARRAY()
    features = build_features(raw, config, views)
    dead_letters = side_output(features, DEAD_LETTER_TAG)
    rows = features.flat_map(ReplayRows(views, rows_from), output_type=records) \
        .uid("replay-rows").name("Replay rows")
    marks = dead_letters.flat_map(DeadLetterMarks(rows_from), output_type=records) \
        .uid("replay-dead-letters").name("Replay dead letters")
    return rows.union(marks).key_by(lambda _: 0, key_type=Types.INT()) \
        .process(RowBatcher(batch_size), output_type=records) \
        .uid("replay-batches").name("Row batches")


def replay_configuration(config: RtdConfig, *, bundle_size: int, bundle_time_ms: int,
                         execution_mode: str = "process") -> Configuration:
    """The live job's Python execution settings (same state caches), with larger bundles
    and heap state: a bounded job keeps no checkpoints. ``process`` is the live job's
    mode; ``thread`` (no AsyncFunction here, so it is allowed) runs the Python
    operators inside the JVM."""
    if execution_mode not in EXECUTION_MODES:
        raise ValueError(f"execution mode {execution_mode!r} not in {EXECUTION_MODES}")
    conf = job_configuration(config)
    conf.set_string("python.execution-mode", execution_mode)
    conf.set_string("python.executable", sys.executable)
    conf.set_string("python.fn-execution.bundle.size", str(bundle_size))
    conf.set_string("python.fn-execution.bundle.time", str(bundle_time_ms))
    conf.set_string("python.map-state.write-cache-size", str(bundle_size * 4))
    conf.set_string("state.backend.type", "hashmap")
    conf.set_string("pipeline.name", f"{config.job.name}-replay")
    return conf


def create_replay_environment(config: RtdConfig, *, parallelism: int, bundle_size: int,
                              bundle_time_ms: int, connector_jars: Sequence[str] = (),
                              execution_mode: str = "process"
                              ) -> tuple[StreamExecutionEnvironment, StreamTableEnvironment]:
    if execution_mode == "thread":
        embedded_python_path()
    conf = replay_configuration(config, bundle_size=bundle_size, bundle_time_ms=bundle_time_ms,
                                execution_mode=execution_mode)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_runtime_mode(RuntimeExecutionMode.STREAMING)
    if connector_jars:
        env.add_jars(*connector_jars)
    env.set_parallelism(parallelism)
    t_env = StreamTableEnvironment.create(env)
    # The source's row time (flink_jobs/event_time_sql.py) reads RFC 3339 times as UTC.
    t_env.get_config().set("table.local-time-zone", "UTC")
    return env, t_env


def kafka_replay_source(t_env: StreamTableEnvironment, config: RtdConfig,
                        source_options: Mapping[str, str], group_id: str,
                        customer_field: str = "customer_id") -> KeyedStream:
    """The live source table, bounded to [read_from, read_to) and under its own group
    id, so the replay never touches the live job's committed offsets; keyed as the live
    job keys it."""
    kafka = config.kafka.model_copy(update={"consumer_group": group_id})
    replay_config = config.model_copy(update={"kafka": kafka})
    t_env.execute_sql(source_ddl(replay_config, bounded_offsets="specific-offsets",
                                 startup="specific-offsets", options=source_options))
    return keyed_source(t_env, config.job.state_shards, customer_field)
