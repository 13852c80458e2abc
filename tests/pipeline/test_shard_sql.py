"""The source's SQL key is the shard validation expects, and a payload read otherwise is
caught.

The job keys its rows by customer shard in the Kafka source's SQL
(flink_jobs/kafka_tables.py, ``routing_sql``), so no Python runs before the keyed
operator; the keyed operator's validation checks each valid event against
``shard_of`` (rtd_core/sharding.py). Here Flink evaluates the SQL over payloads with
customer ids of every kind (escapes, non-ASCII, quotes, duplicate keys), and the keyed
operator runs behind it on a payload Flink's JSON reader cannot parse but validation
accepts.
"""

from __future__ import annotations

import json
import random
import sys
import time

import orjson
import pytest
from pyflink.common import Types
from pyflink.datastream import StreamExecutionEnvironment
from pyflink.table import StreamTableEnvironment

from flink_jobs.decision_job import job_configuration
from flink_jobs.jvm_streams import side_output
from flink_jobs.kafka_tables import SOURCE_TABLE, keyed_source, routing_sql
from flink_jobs.topology import build_features
from operators.failures import DEAD_LETTER_TAG
from rtd_core.config import load_config
from rtd_core.sharding import shard_of
from tests.builders import T0, encode, txn

pytestmark = pytest.mark.pipeline

SHARDS = 32
ALPHABETS = ["abcxyz0123456789-_", "\"\\/\b\f\n\r\t", "éüßøñ中文字", "😀🚀\U0010fffd", "\x00\x1f\x7f"]


def customer_ids(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    ids = []
    for _ in range(count):
        letters = "".join(rng.sample(ALPHABETS, rng.randint(1, len(ALPHABETS))))
        ids.append("".join(rng.choice(letters) for _ in range(rng.randint(1, 40))))
    return ids


def payloads() -> list[tuple[bytes, str | None]]:
    """(value, the customer id validation reads, None where it has none)."""
    out: list[tuple[bytes, str | None]] = []
    for i, customer in enumerate(customer_ids(400, seed=7)):
        event = {"customer_id": customer, "event_id": f"e{i}"}
        # Both of JSON's ways to write a string: orjson's literal UTF-8, and \u escapes.
        value = orjson.dumps(event) if i % 2 else json.dumps(event).encode()
        out.append((value, customer))
    out += [
        (b'{"customer_id": "first", "customer_id": "last"}', "last"),
        (b'{"nested": {"customer_id": "inner"}, "customer_id": "outer"}', "outer"),
        (b'{"customer_id": "\\ud83d\\ude00 pair"}', "\U0001f600 pair"),
        (b'{"customer_id": 12}', None),
        (b'{"customer_id": null}', None),
        (b'not json', None),
        (b'{"a":' * 3000 + b'1' + b'}' * 3000, None),
    ]
    return out


# The records' Kafka timestamp: a millisecond part, to see it cross whole.
RECORD_TIME = T0 + 123


def source_view(t_env: StreamTableEnvironment, values: list[bytes]) -> None:
    rows = ", ".join(f"(X'{v.hex()}', {i % 4}, {i})" for i, v in enumerate(values))
    t_env.execute_sql(f"""
        CREATE TEMPORARY VIEW {SOURCE_TABLE} AS
        SELECT CAST(NULL AS BYTES) AS k, CAST(v AS BYTES) AS v,
               CAST('transactions' AS STRING) AS topic, p AS `partition`,
               CAST(o AS BIGINT) AS `offset`, TO_TIMESTAMP_LTZ({RECORD_TIME}, 3) AS kafka_ts
        FROM (VALUES {rows}) AS t(v, p, o)""")


@pytest.fixture(scope="module")
def stream_env() -> tuple[StreamExecutionEnvironment, StreamTableEnvironment]:
    config = load_config(None, flink={"parallelism": 1, "bundle_time_ms": 5},
                         kafka={"partitions": 4})
    conf = job_configuration(config)
    conf.set_string("python.executable", sys.executable)
    env = StreamExecutionEnvironment.get_execution_environment(conf)
    env.set_parallelism(1)
    t_env = StreamTableEnvironment.create(env)
    return env, t_env


def test_sql_shard_is_shard_of_the_customer_validation_reads(stream_env):
    _env, t_env = stream_env
    cases = payloads()
    source_view(t_env, [v for v, _ in cases])
    before = int(time.time() * 1000)
    try:
        query = (f"SELECT `rec`.`offset`, shard, `rec`.`read_at`, `rec`.`kafka_ts`"
                 f" FROM ({routing_sql(SHARDS)})")
        with t_env.sql_query(query).execute().collect() as results:
            rows = [tuple(row) for row in results]
    finally:
        t_env.execute_sql(f"DROP TEMPORARY VIEW {SOURCE_TABLE}")
    after = int(time.time() * 1000)
    got = {offset: shard for offset, shard, _, _ in rows}
    assert len(got) == len(cases) == len(rows)
    # the source's read time, in epoch ms, is the trace's received_at
    assert all(before <= read_at <= after for _, _, read_at, _ in rows), (before, after)
    # the record's Kafka timestamp crosses as epoch ms too, to the millisecond
    assert {kafka_ts for *_, kafka_ts in rows} == {RECORD_TIME}
    for offset, (value, customer) in enumerate(cases):
        if customer is not None:
            assert got[offset] == shard_of(customer, SHARDS), (value, customer)
        elif b"12" not in value:  # no readable customer: the partition's shard
            assert got[offset] == offset % 4 % SHARDS, value
    assert len({got[i] for i, (_, c) in enumerate(cases) if c is not None}) == SHARDS


def test_an_event_flink_reads_otherwise_is_a_dead_letter_not_a_decision(stream_env):
    _env, t_env = stream_env
    config = load_config(None, flink={"parallelism": 1}, kafka={"partitions": 4},
                         job={"state_shards": SHARDS})
    plain = txn("card-1", 10.0, at=T0 - 1_000, customer="cust-1")
    # A number of 1,500 digits: orjson reads it (as 0.0), Jackson's limits refuse it,
    # so Flink's JSON_VALUE gives NULL and the row takes its partition's shard.
    odd = txn("card-2", 10.0, at=T0 - 1_000, customer="cust-2")
    odd_value = encode(odd)[:-1] + b', "pad": 0.' + b"0" * 1_500 + b"1}"
    assert orjson.loads(odd_value)["customer_id"] == "cust-2"
    partition_of_odd = 1
    assert shard_of("cust-2", SHARDS) != partition_of_odd, "pick another partition"
    source_view(t_env, [encode(plain), odd_value])  # partitions 0 and 1
    try:
        features = build_features(keyed_source(t_env, SHARDS), config)
        kinds = Types.TUPLE([Types.STRING(), Types.STRING()])
        out = features.map(lambda r: ("features", r.event["event_id"]), output_type=kinds) \
            .union(side_output(features, DEAD_LETTER_TAG)
                   .map(lambda r: ("dead", r[1].decode()), output_type=kinds))
        results = list(out.execute_and_collect())
    finally:
        t_env.execute_sql(f"DROP TEMPORARY VIEW {SOURCE_TABLE}")
    assert [v for k, v in results if k == "features"] == [plain["event_id"]]
    dead = [json.loads(v) for k, v in results if k == "dead"]
    assert len(dead) == 1
    assert (dead[0]["reason"], dead[0]["stage"], dead[0]["offset"]) == (
        "internal_error", "route", 1)
    assert "cust-2" in dead[0]["detail"]
