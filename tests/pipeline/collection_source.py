"""Collections as the job's raw input, with the watermarks the Kafka source would give.

In the job, watermarks are generated inside the Kafka source, per partition, from the
row time its DDL computes (flink_jobs/event_time_sql.py). A collection is one ordered
stream, i.e. one partition: this assigner applies the same rule to it (event time of a
value that has one, within the future skew of its record timestamp; otherwise the epoch,
which never moves the watermark) so pipeline tests see lateness and expiry as the job
does. Only tests use a Python assigner; the job has none.

As in the job, where each Kafka partition is read by one source subtask that keys its
rows by customer shard, each partition's rows stay on one channel: a collection source has
parallelism 1, and a rebalance to parallel operators would reorder a card's events.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson
from pyflink.common import Duration, Row, Types, WatermarkStrategy
from pyflink.common.watermark_strategy import TimestampAssigner
from pyflink.datastream import KeyedStream, StreamExecutionEnvironment

from decisioning.transaction import DEFAULT_MAX_FUTURE_SKEW_MS, Rejection, validate
from rtd_core.config import JobConfig
from rtd_core.sharding import shard_of
from tests.builders import encode

RAW_ROW = Types.ROW([Types.PRIMITIVE_ARRAY(Types.BYTE()), Types.PRIMITIVE_ARRAY(Types.BYTE()),
                     Types.STRING(), Types.INT(), Types.LONG(), Types.LONG(),
                     Types.LONG()])


class PayloadEventTime(TimestampAssigner):
    def extract_timestamp(self, value: Row, record_timestamp: int) -> int:
        result = validate(value[1], value[5], DEFAULT_MAX_FUTURE_SKEW_MS)
        return 0 if isinstance(result, Rejection) else int(result["event_time"])


def raw_rows(events: Iterable[dict[str, Any]], partition: int = 0, first_offset: int = 0,
             record_time: int | None = None) -> list[Row]:
    return [Row(e["card_id"].encode(), encode(e), "transactions", partition, first_offset + i,
                record_time, None) for i, e in enumerate(events)]


def customer_shard(row: Row, shards: int) -> int:
    """The key the job's source computes in SQL (flink_jobs/kafka_tables.py,
    ``routing_sql``): the shard of the payload's customer id, else of the partition."""
    try:
        customer = orjson.loads(row[1]).get("customer_id")
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        customer = None
    if isinstance(customer, (int, float)) and not isinstance(customer, bool):
        customer = str(customer)
    if isinstance(customer, str):
        return shard_of(customer, shards)
    return row[3] % shards


def collection_source(env: StreamExecutionEnvironment, rows: list[Row],
                      delay_ms: int = 5_000,
                      shards: int = JobConfig().state_shards) -> KeyedStream:
    """``rows`` with the source's watermarks, keyed as the source keys them."""
    strategy = WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_millis(delay_ms)) \
        .with_timestamp_assigner(PayloadEventTime())
    stream = env.from_collection(rows, type_info=RAW_ROW)
    if env.get_parallelism() > 1:
        stream = stream.key_by(lambda r: r[3], key_type=Types.INT()) \
            .map(lambda r: r, output_type=RAW_ROW)
    return stream.assign_timestamps_and_watermarks(strategy) \
        .key_by(lambda r: customer_shard(r, shards), key_type=Types.INT())
