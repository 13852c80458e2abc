"""One Python entry per batch of events instead of per event (issue 11), on a mini cluster.

The job's Python cost per event is dominated by PyFlink's crossings: each event enters
Python in the validate operator and again in the keyed operator, its record is pickled
across the shuffle, and each output element is a GIL acquire of its own
(docs/BENCHMARKS.md, the profiles). This bench asks how much of that goes away when the
JVM hands Python a batch: the same validation and the same ``ShardFeatures.apply`` per
event, in the same keyed context (the customer's shard), but the events of a shard
reach Python together, grouped in the JVM by a SQL window with ``ARRAY_AGG``, and leave
as one row per batch.

- ``per-event``: the job's feature path as it is today (source rows keyed by customer
  shard in SQL, then ``build_features``: validation and features in the keyed
  operator), one output element per event, into a discarding sink.
- ``per-batch``: the source rows as a table; a tumbling window of ``--batch-events``
  events (on a synthetic arrival time: one event a millisecond) groups each shard's
  events into one row; the keyed Python operator validates them and applies the
  features to each, in arrival order, and emits one row for the batch (the count of
  valid events, the number of feature values computed, and the Python time the batch
  took: in all, in ``ShardFeatures.apply``, and in the views' ``MapState`` reads and
  writes), which the client collects and sums.

Both validate and compute the features of every event with the job's own code and
RocksDB state; neither calls a model or builds decisions. Each run is its own process
(own JVM and mini cluster); run them alternately:

    .venv/bin/python -m bench.batched_crossings --shape per-event --events 50000
    .venv/bin/python -m bench.batched_crossings --shape per-batch --events 50000 \
        --batch-events 500
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pyflink.common import Row, Types
from pyflink.datastream import KeyedProcessFunction, RuntimeContext, StreamExecutionEnvironment
from pyflink.table import StreamTableEnvironment

from bench.feature_operators import discarding_sink
from decisioning.transaction import Rejection
from flink_jobs.decision_job import job_configuration
from flink_jobs.embedded_python import embedded_python_path
from flink_jobs.kafka_tables import keyed_rows
from flink_jobs.topology import build_features, shard_features
from operators.clock import now_ms
from operators.keyed_features import ShardFeatures
from operators.validation import accepted, source_fields
from rtd_core.config import RtdConfig, load_config
from rtd_core.sharding import shard_of
from simulator.generator import GeneratorSettings, generate

# valid events, feature values, Python µs: the batch, the features, the state calls
BATCH_ROW = Types.ROW([Types.INT(), Types.LONG(), Types.LONG(), Types.LONG(), Types.LONG()])


class _TimedStore:
    """A feature view's ``MapState`` with the time of its writes and reads counted."""

    def __init__(self, store: Any) -> None:
        self._store = store
        self.seconds = 0.0

    def put(self, key: Any, value: Any) -> None:
        t0 = time.perf_counter()
        self._store.put(key, value)
        self.seconds += time.perf_counter() - t0

    def get(self, key: Any) -> Any:
        t0 = time.perf_counter()
        value = self._store.get(key)
        self.seconds += time.perf_counter() - t0
        return value

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


class BatchFeatures(KeyedProcessFunction):
    """A shard's batch of raw events: validate each, then both views' features, in order."""

    def __init__(self, features: ShardFeatures, max_future_skew_ms: int,
                 work: str = "features") -> None:
        self.features = features
        self.max_future_skew_ms = max_future_skew_ms
        self.work = work

    def open(self, runtime_context: RuntimeContext) -> None:
        self.features.open(runtime_context)
        self._stores = []
        for view in self.features._views:
            store = _TimedStore(view.entities._store)
            view.entities._store = store
            self._stores.append(store)

    def process_element(self, value: Row, ctx: KeyedProcessFunction.Context
                        ) -> Iterator[Any]:
        t0 = time.perf_counter()
        shard, events = value[0], value[1]
        valid = 0
        feature_values = 0
        if self.work == "none":
            yield Row(len(events), 0, 0, 0, 0)
            return
        state_before = sum(s.seconds for s in self._stores)
        features_s = 0.0
        for row in events:
            # The validate operator's own steps (operators/validation.py).
            source, raw = source_fields(row)
            record = accepted(source, raw, self.max_future_skew_ms, now_ms())
            if isinstance(record, Rejection):
                continue
            t1 = time.perf_counter()
            if self.work == "features":
                self.features.apply(record, shard, ctx)
            features_s += time.perf_counter() - t1
            valid += 1
            feature_values += len(record.features)
        state_s = sum(s.seconds for s in self._stores) - state_before
        yield Row(valid, feature_values, int((time.perf_counter() - t0) * 1e6), int(features_s * 1e6),
                  int(state_s * 1e6))


def _write_events(events: int, shards: int, path: Path) -> int:
    """The simulated events as tab-separated lines (key, value JSON, shard, arrival tick),
    read back by Flink's own file source, so no Python runs before the operator under
    test (PyFlink's ``from_collection`` converts each element through Python)."""
    records = generate(GeneratorSettings(start_time_ms=1_700_000_000_000, seed=3,
                                         malformed_share=0.0), events)
    count = 0
    with path.open("w") as out:
        for r in records:
            if r.kind != "txn":
                continue
            value = r.value.decode()
            customer = json.loads(value)["customer_id"]
            out.write(f"{r.key.decode()}\t{value}\t{shard_of(customer, shards)}\t{count}\n")
            count += 1
    return count


def _source_table(t_env: StreamTableEnvironment, path: Path) -> None:
    # A synthetic arrival time, one event a millisecond, so a window of N ms holds N
    # events; the live job would window on processing time instead.
    t_env.execute_sql(f"""
        CREATE TEMPORARY TABLE raw_events (
            k STRING, v STRING, shard INT, tick BIGINT,
            arrival AS TO_TIMESTAMP_LTZ(tick, 3),
            proctime AS PROCTIME(),
            WATERMARK FOR arrival AS arrival
        ) WITH ('connector' = 'filesystem', 'path' = 'file://{path}', 'format' = 'csv',
                'csv.field-delimiter' = U&'\\0009', 'csv.disable-quote-character' = 'true')""")


def run_per_event(env: StreamExecutionEnvironment, t_env: StreamTableEnvironment,
                  config: RtdConfig) -> None:
    raw = keyed_rows(t_env, """
        SELECT shard, ROW(CAST(k AS BYTES), CAST(v AS BYTES), CAST('transactions' AS STRING),
                          0, tick, CAST(NULL AS BIGINT), CAST(NULL AS BIGINT)) AS rec
        FROM raw_events""")
    build_features(raw, config) \
        .map(lambda r: 1, output_type=Types.INT()).add_sink(discarding_sink())


def run_per_batch(t_env: StreamTableEnvironment, config: RtdConfig, batch_events: int,
                  work: str, window: str = "arrival") -> Any:
    """``window``: ``arrival``, the synthetic arrival time (``batch_events`` events a
    window), or ``proctime``, processing time (``batch_events`` milliseconds a window), which
    the live job would need; Flink does not fire processing-time windows when a bounded
    input ends, so that run comes up short of the events sent."""
    batches = t_env.sql_query(f"""
        SELECT shard, ARRAY_AGG(ROW(CAST(k AS BYTES), CAST(v AS BYTES), 'transactions',
                                    0, tick, CAST(NULL AS BIGINT))) AS events
        FROM TABLE(TUMBLE(TABLE raw_events, DESCRIPTOR({window}),
                          INTERVAL '{batch_events // 1000}.{batch_events % 1000:03d}'
                          SECOND(3)))
        GROUP BY shard, window_start, window_end""")
    return t_env.to_data_stream(batches) \
        .key_by(lambda b: b[0], key_type=Types.INT()) \
        .process(BatchFeatures(shard_features(config), config.job.max_future_skew_ms,
                               work),
                 output_type=BATCH_ROW) \
        .uid("batch-features").name("Features of a batch")


def run(shape: str, events: int, batch_events: int, overrides: dict,
        work: str = "features", window: str = "arrival") -> dict:
    config = load_config(None, **overrides)
    conf = job_configuration(config)
    conf.set_string("python.executable", sys.executable)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(config.flink.parallelism)
    t_env = StreamTableEnvironment.create(env)
    t_env.get_config().set("table.local-time-zone", "UTC")
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "events.tsv"
        sent = _write_events(events, config.job.state_shards, path)
        _source_table(t_env, path)
        started = time.perf_counter()
        batches = processed = feature_values = python_s = None
        if shape == "per-event":
            run_per_event(env, t_env, config)
            env.execute(f"batched-crossings-{shape}")
        else:
            # The batches' rows come back to count the events they hold: a batch lost
            # in the window would show as fewer events processed than sent.
            with run_per_batch(t_env, config, batch_events, work,
                                         window).execute_and_collect(
                    f"batched-crossings-{shape}") as results:
                rows = [tuple(r) for r in results]
            batches = len(rows)
            processed, feature_values, *micros = (sum(c) for c in zip(*rows, strict=True))
            python_s = dict(zip(("batch", "features", "state"),
                                (round(us / 1e6, 2) for us in micros), strict=True))
        elapsed = time.perf_counter() - started
    return {"shape": shape, "events": sent, "processed": processed,
            "batches": batches, "feature_values": feature_values, "python_s": python_s,
            "seconds": round(elapsed, 2),
            "events_per_s": round(sent / elapsed, 1),
            "batch_events": batch_events if shape == "per-batch" else 1,
            "shards": config.job.state_shards, "work": work, "window": window,
            "override": overrides}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--shape", choices=("per-event", "per-batch"), required=True)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--batch-events", type=int, default=500,
                        help="events per window, over all shards")
    parser.add_argument("--override", default="{}")
    parser.add_argument("--work", choices=("features", "validate", "none"), default="features",
                        help="per-batch: what the Python operator does with each event")
    parser.add_argument("--window", choices=("arrival", "proctime"), default="arrival",
                        help="per-batch: window on a synthetic arrival time (one event a "
                             "ms) or on processing time")
    args = parser.parse_args()
    embedded_python_path()  # before the first PyFlink call: thread mode needs it
    print(json.dumps(run(args.shape, args.events, args.batch_events,
                         json.loads(args.override), args.work, args.window)))


if __name__ == "__main__":
    main()
