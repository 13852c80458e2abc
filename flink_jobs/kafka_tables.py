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

from pyflink.table import StreamTableEnvironment

from rtd.config import RtdConfig

SOURCE_TABLE = "rtd_transactions"
SINK_TABLES = {"decisions": "rtd_decisions", "traces": "rtd_decision_traces", "dlq": "rtd_dlq"}

_STARTUP = {
    "committed-or-earliest": "'scan.startup.mode' = 'group-offsets',"
    " 'properties.auto.offset.reset' = 'earliest'",
    "earliest": "'scan.startup.mode' = 'earliest-offset'",
    "latest": "'scan.startup.mode' = 'latest-offset'",
    # Bounded replays (rtd/replay) start at offsets they resolved themselves; the
    # offsets go in ``options`` as 'scan.startup.specific-offsets'.
    "specific-offsets": "'scan.startup.mode' = 'specific-offsets'",
}


def _quote(value: str) -> str:
    return value.replace("'", "''")


def source_ddl(config: RtdConfig, *, bounded_offsets: str | None = None,
               startup: str | None = None, options: Mapping[str, str] | None = None) -> str:
    """The `transactions` source table. The live job passes nothing; a bounded replay
    passes ``bounded_offsets`` (a 'scan.bounded.mode') and further connector
    ``options`` such as 'scan.bounded.specific-offsets'."""
    kafka = config.kafka
    extra = ""
    if bounded_offsets is not None:
        extra = f", 'scan.bounded.mode' = '{bounded_offsets}'"
    for key, value in (options or {}).items():
        extra += f",\n  '{_quote(key)}' = '{_quote(value)}'"
    return f"""
CREATE TEMPORARY TABLE {SOURCE_TABLE} (
  `k` BYTES,
  `v` BYTES,
  `topic` STRING METADATA VIRTUAL,
  `partition` INT METADATA VIRTUAL,
  `offset` BIGINT METADATA VIRTUAL,
  `kafka_ts` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp' VIRTUAL
) WITH (
  'connector' = 'kafka',
  'topic' = '{_quote(kafka.topics.transactions)}',
  'properties.bootstrap.servers' = '{_quote(kafka.bootstrap_servers)}',
  'properties.group.id' = '{_quote(kafka.consumer_group)}',
  'properties.isolation.level' = 'read_committed',
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
  'properties.transaction.timeout.ms' = '{kafka.transaction_timeout_ms}',
  'properties.compression.type' = '{_quote(kafka.compression_type)}',
  'key.format' = 'raw',
  'key.fields' = 'k',
  'value.format' = 'raw',
  'value.fields-include' = 'EXCEPT_KEY',
  'sink.delivery-guarantee' = 'exactly-once',
  'sink.transactional-id-prefix' = '{_quote(txn_prefix)}'
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
