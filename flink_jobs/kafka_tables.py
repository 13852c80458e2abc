"""Kafka ends of the job, declared as Flink tables.

Why tables: PyFlink's DataStream ``KafkaSource`` only offers value-only deserializers,
and its ``KafkaSink`` serialises the whole element as the key. The Kafka table
connector gives the source record's key, topic, partition, offset and timestamp as
metadata columns (the trace and the dead letters need them), and writes a chosen
column as the record key. Underneath it is the same ``KafkaSource``/``KafkaSink``,
here with ``DeliveryGuarantee.EXACTLY_ONCE`` and one transactional id prefix per sink.
"""

from __future__ import annotations

from collections.abc import Mapping

from pyflink.common import Types
from pyflink.datastream import KeyedStream
from pyflink.table import StreamTableEnvironment

from flink_jobs.event_time_sql import row_time_sql
from flink_jobs.jvm_streams import keyed_by_first_field
from rtd_core.config import KafkaConfig, RtdConfig
from rtd_core.security import kafka_client_properties, kafka_java_properties
from rtd_core.sharding import shard_of_md5_sql

SOURCE_TABLE = "rtd_transactions"
# The source's columns that the job reads (the row-time column only drives watermarks).
SOURCE_COLUMNS = ("k", "v", "topic", "partition", "offset", "kafka_ts")
# The row the keyed Python operator receives: those columns, then ``read_at``, when the
# source task read the record (epoch ms, Flink's processing time before the shuffle).
# Times cross as epoch ms (BIGINT): a TIMESTAMP_LTZ crosses into thread mode's Python as
# a proxy of a java.time.Instant, whose every attribute is a JNI call (2.6% of the keyed
# operator's GIL time went to reading it; docs/BENCHMARKS.md).
SOURCE_ROW = Types.ROW_NAMED([*SOURCE_COLUMNS, "read_at"], [
    Types.PRIMITIVE_ARRAY(Types.BYTE()), Types.PRIMITIVE_ARRAY(Types.BYTE()), Types.STRING(),
    Types.INT(), Types.LONG(), Types.LONG(), Types.LONG()])
_SOURCE_ROW_SQL = ("ROW<`k` BYTES, `v` BYTES, `topic` STRING, `partition` INT, `offset` BIGINT,"
                   " `kafka_ts` BIGINT, `read_at` BIGINT>")


def epoch_ms_sql(timestamp: str) -> str:
    """SQL: the epoch ms of a TIMESTAMP_LTZ expression (NULL stays NULL)."""
    return (f"EXTRACT(EPOCH FROM {timestamp}) * 1000"
            f" + MOD(EXTRACT(MILLISECOND FROM {timestamp}), 1000)")


# CURRENT_TIMESTAMP: streaming SQL evaluates it once per record (the code generator
# reuses it within the record); batch SQL, once per query.
READ_AT_SQL = epoch_ms_sql("CURRENT_TIMESTAMP")
SINK_TABLES = {"decisions": "rtd_decisions", "traces": "rtd_decision_traces", "dlq": "rtd_dlq"}

_STARTUP = {
    "committed-or-earliest": "'scan.startup.mode' = 'group-offsets',"
    " 'properties.auto.offset.reset' = 'earliest'",
    "earliest": "'scan.startup.mode' = 'earliest-offset'",
    "latest": "'scan.startup.mode' = 'latest-offset'",
    # Bounded replays (replay) start at offsets they resolved themselves; the
    # offsets go in ``options`` as 'scan.startup.specific-offsets'.
    "specific-offsets": "'scan.startup.mode' = 'specific-offsets'",
}


def _quote(value: str) -> str:
    return value.replace("'", "''")


def _interval(ms: int) -> str:
    return f"INTERVAL '{ms // 1000}.{ms % 1000:03d}' SECOND(3)"


def event_time_options(config: RtdConfig) -> dict[str, str]:
    """Per-partition event time (contract: "Event time is tracked per Kafka partition").

    The planner pushes the DDL's watermark into the Kafka source, which then keeps one
    bounded-out-of-orderness generator per partition and emits their minimum. A
    partition without data for the idleness timeout drops out of that minimum until it
    has data again. Alignment pauses a partition whose watermark runs more than the
    maximum drift ahead of the slowest, between fetches (Kafka returns whole record
    batches, so it cannot split a batch a producer wrote): that keeps a backlog's
    cross-partition processing order, which customer features see, nearer event time.
    """
    job = config.job
    options = {}
    if job.idleness_ms > 0:
        options["scan.watermark.idle-timeout"] = f"{job.idleness_ms} ms"
    if job.watermark_alignment_max_drift_ms > 0:
        options["scan.watermark.alignment.group"] = f"{job.name}-transactions"
        options["scan.watermark.alignment.max-drift"] = \
            f"{job.watermark_alignment_max_drift_ms} ms"
        options["scan.watermark.alignment.update-interval"] = \
            f"{job.watermark_alignment_update_ms} ms"
    return options


def _security_options(kafka: KafkaConfig) -> str:
    """The connector's Kafka client security properties (kafka.security), as DDL options
    each followed by a comma; none for PLAINTEXT. The JAAS config holds the password
    (docs/operations.md: where it travels)."""
    return "".join(f"\n  'properties.{_quote(k)}' = '{_quote(v)}',"
                   for k, v in kafka_java_properties(kafka, shaded=True).items())


def source_ddl(config: RtdConfig, *, bounded_offsets: str | None = None,
               startup: str | None = None, options: Mapping[str, str] | None = None) -> str:
    """The `transactions` source table. The live job passes nothing; a bounded replay
    passes ``bounded_offsets`` (a 'scan.bounded.mode') and further connector
    ``options`` such as 'scan.bounded.specific-offsets'. Both get the same per-partition
    watermarks, so a replay flags and prunes exactly as the live job does."""
    kafka = config.kafka
    job = config.job
    extra = ""
    options = {**event_time_options(config), **(options or {})}
    if bounded_offsets is not None:
        extra = f", 'scan.bounded.mode' = '{bounded_offsets}'"
    for key, value in options.items():
        extra += f",\n  '{_quote(key)}' = '{_quote(value)}'"
    return f"""
CREATE TEMPORARY TABLE {SOURCE_TABLE} (
  `k` BYTES,
  `v` BYTES,
  `topic` STRING METADATA VIRTUAL,
  `partition` INT METADATA VIRTUAL,
  `offset` BIGINT METADATA VIRTUAL,
  `kafka_ts` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL,
  `event_ts` AS {row_time_sql(job.max_future_skew_ms)},
  WATERMARK FOR `event_ts` AS `event_ts` - {_interval(job.watermark_delay_ms)}
) WITH (
  'connector' = 'kafka',
  'topic' = '{_quote(kafka.topics.transactions)}',
  'properties.bootstrap.servers' = '{_quote(kafka.bootstrap_servers)}',
  'properties.group.id' = '{_quote(kafka.consumer_group)}',{_security_options(kafka)}
  'properties.isolation.level' = 'read_committed',
  'properties.max.partition.fetch.bytes' = '{kafka.source_max_partition_fetch_bytes}',
  {_STARTUP[startup or config.job.start_from]},
  'key.format' = 'raw',
  'key.fields' = 'k',
  'value.format' = 'raw',
  'value.fields-include' = 'EXCEPT_KEY'{extra}
)"""


def sink_ddl(config: RtdConfig, table: str, topic: str, txn_prefix: str) -> str:
    kafka = config.kafka
    return f"""
CREATE TEMPORARY TABLE {table} (
  `k` STRING,
  `v` BYTES
) WITH (
  'connector' = 'kafka',
  'topic' = '{_quote(topic)}',
  'properties.bootstrap.servers' = '{_quote(kafka.bootstrap_servers)}',
  'properties.transaction.timeout.ms' = '{kafka.transaction_timeout_ms}',{_security_options(kafka)}
  'properties.compression.type' = '{_quote(kafka.compression_type)}',
  'properties.linger.ms' = '{kafka.sink_linger_ms}',
  'properties.batch.size' = '{kafka.sink_batch_bytes}',
  'key.format' = 'raw',
  'key.fields' = 'k',
  'value.format' = 'raw',
  'value.fields-include' = 'EXCEPT_KEY',
  'sink.delivery-guarantee' = 'exactly-once',
  'sink.transactional-id-prefix' = '{_quote(txn_prefix)}',
  'sink.transaction-naming-strategy' = '{kafka.transaction_naming.upper()}'
)"""


def register_kafka_tables(t_env: StreamTableEnvironment, config: RtdConfig) -> None:
    topics = config.kafka.topics
    name = config.job.name
    t_env.execute_sql(source_ddl(config))
    t_env.execute_sql(sink_ddl(config, SINK_TABLES["decisions"], topics.decisions,
                               f"{name}-decisions"))
    t_env.execute_sql(sink_ddl(config, SINK_TABLES["traces"], topics.traces,
                               f"{name}-traces"))
    t_env.execute_sql(sink_ddl(config, SINK_TABLES["dlq"], topics.dlq, f"{name}-dlq"))


def with_topic_partitions(config: RtdConfig) -> RtdConfig:
    """``config`` with ``kafka.partitions`` set to the transactions topic's actual
    partition count, which the feature operators' partition gate needs
    (operators/keyed_features.py); the configured count if the broker cannot tell."""
    from confluent_kafka.admin import AdminClient

    topic = config.kafka.topics.transactions
    try:
        admin = AdminClient(kafka_client_properties(config.kafka))
        found = len(admin.list_topics(topic, timeout=10).topics[topic].partitions)
    except Exception as exc:  # noqa: BLE001 - fall back to the configured count
        print(f"partition count of {topic} unknown ({exc}); using kafka.partitions = "
              f"{config.kafka.partitions}")
        return config
    if found < 1:
        return config
    kafka = config.kafka.model_copy(update={"partitions": found})
    return config.model_copy(update={"kafka": kafka})


def routing_sql(shards: int, customer_field: str = "customer_id") -> str:
    """SQL: the source rows keyed by the shard of their customer (rtd_core/sharding.py),
    read from the raw JSON value by Flink's JSON functions, which give NULL on any parse
    error. A value with no readable customer (a dead letter to be) takes its partition's
    shard, so a poison burst spreads as the partitions do; validation, in the keyed
    operator, checks that a valid event came to its customer's shard.

    The customer id's MD5 comes from a one-element UNNEST, so the JSON is parsed and
    hashed once a record: the planner would inline a subquery's column, and the code
    generator evaluates a repeated call once per occurrence (seven, one per hex digit;
    measured in docs/BENCHMARKS.md)."""
    customer = f"JSON_VALUE(CAST(`v` AS STRING), '$.{customer_field}')"
    columns = ", ".join(epoch_ms_sql(f"`{c}`") if c == "kafka_ts" else f"`{c}`"
                        for c in SOURCE_COLUMNS)
    return (f"SELECT COALESCE({shard_of_md5_sql('`digest`', shards)},"
            f" MOD(`partition`, {int(shards)})) AS shard,"
            f" CAST(ROW({columns}, {READ_AT_SQL}) AS {_SOURCE_ROW_SQL}) AS rec"
            f" FROM {SOURCE_TABLE} CROSS JOIN UNNEST(ARRAY[MD5({customer})]) AS d(`digest`)")


def keyed_source(t_env: StreamTableEnvironment, shards: int,
                 customer_field: str = "customer_id") -> KeyedStream:
    """The registered source, keyed by customer shard without a Python operator: the key
    is computed in the source's SQL. The row-time column stays in the source, where it
    drives the per-partition watermarks."""
    return keyed_rows(t_env, routing_sql(shards, customer_field))


def keyed_rows(t_env: StreamTableEnvironment, query: str) -> KeyedStream:
    """The rows of ``query`` (``shard`` INT, ``rec`` a ROW of ``SOURCE_ROW``'s types),
    keyed by ``shard`` in the JVM; the keyed Python operator gets ``rec`` as
    ``SOURCE_ROW``. ``to_append_stream`` because it gives the row type the keyed Python
    operator needs (flink_jobs/jvm_streams.py)."""
    keyed = Types.ROW_NAMED(["shard", "rec"], [Types.INT(), SOURCE_ROW])
    return keyed_by_first_field(t_env.to_append_stream(t_env.sql_query(query), keyed),
                                SOURCE_ROW)
