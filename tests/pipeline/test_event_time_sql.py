"""The source's SQL row time agrees with validation on every valid event time.

Watermarks are generated in the Kafka source from a SQL expression
(flink_jobs/event_time_sql.py); features use the event time validation parses
(decisioning/transaction.py). If the two disagreed, a valid event would move the
watermark to another time than its own. Both are run here over the same payloads: Flink
evaluates the expression, and for every time validation accepts the result must be
validation's. The SQL is compact on purpose and lenient about the calendar; the values
validation rejects that it still reads as a time are pinned below, so that a change in
either shows.
"""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone

import pytest
from pyflink.table import DataTypes, EnvironmentSettings, TableEnvironment

from decisioning.transaction import parse_event_time
from flink_jobs.event_time_sql import event_time_ms_sql, row_time_sql
from simulator.generator import format_rfc3339

pytestmark = pytest.mark.pipeline

FIXED = [
    1_700_000_000_000, 0, 123_456_789_012_345_678, 1_234_567_890_123_456_789, -5, 1.5, True,
    None, "1733000000000", "2023-11-14T22:13:20.250Z", "2023-11-14T23:13:20+01:00",
    "1970-01-01T00:00:01.001Z", "2024-02-29T00:00:00Z", "2023-02-29T00:00:00Z",
    "2023-02-30T00:00:00Z", "2023-13-01T00:00:00Z", "2023-11-14T24:00:00Z",
    "2023-11-14T23:59:60Z", "2023-11-14t23:13:20.123456789-05:30", "2023-11-14 23:13:20z",
    "1970-01-01T00:30:00+01:00", "1969-12-31T23:59:59Z", "1969-12-31T23:00:00-02:00",
    "2023-11-14T23:13:20+24:00", "2023-11-14T23:13:20", " 2023-11-14T23:13:20Z",
    "2023-11-14T23:13:20.Z", "2100-01-01T00:00:00Z", "9999-12-31T23:59:59.999+00:00",
    "2000-03-01T00:00:00.1Z", "2023-11-14T23:13:20+05", "2023-W46-2T10:00:00Z",
]
# Rejected by validation, read as a time by the SQL (a string of digits as epoch ms, the
# calendar rolled over, the epoch's eve): dead letters that may move a watermark only
# within the future bound, and never below the epoch (row_time_sql).
LENIENT = {"1733000000000", "2023-02-29T00:00:00Z", "2023-02-30T00:00:00Z",
           "2023-13-01T00:00:00Z", "2023-11-14T24:00:00Z", "2023-11-14T23:59:60Z",
           "1970-01-01T00:30:00+01:00", "1969-12-31T23:59:59Z", "2023-11-14T23:13:20+24:00"}


def random_times(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        ms = rng.randint(0, 4_102_444_800_000)
        offset = timedelta(minutes=rng.randint(-23 * 60, 23 * 60))
        moment = datetime.fromtimestamp(ms / 1000, timezone(offset))
        text = moment.strftime("%Y-%m-%dT%H:%M:%S")
        if rng.random() < 0.7:
            text += "." + f"{ms % 1000:03d}"[: rng.randint(1, 3)]
        z = moment.strftime("%z")
        out.append(text + (z[:3] + ":" + z[3:] if rng.random() < 0.8 else "Z" if not ms % 7
                           else z[:3] + ":" + z[3:]))
    out += [format_rfc3339(rng.randint(0, 4_102_444_800_000)) for _ in range(count // 4)]
    return out


@pytest.fixture(scope="module")
def table_env() -> TableEnvironment:
    t_env = TableEnvironment.create(EnvironmentSettings.in_batch_mode())
    t_env.get_config().set("table.local-time-zone", "UTC")  # as the jobs set it
    return t_env


def evaluate(t_env: TableEnvironment, payloads: list[bytes], record_ms: int,
             skew_ms: int) -> dict[int, tuple[int | None, int]]:
    table = t_env.from_elements(
        [(i, bytearray(p), record_ms) for i, p in enumerate(payloads)],
        DataTypes.ROW([DataTypes.FIELD("i", DataTypes.INT()),
                       DataTypes.FIELD("v", DataTypes.BYTES()),
                       DataTypes.FIELD("r", DataTypes.BIGINT())]))
    t_env.create_temporary_view("payloads", table)
    try:
        row_time = row_time_sql(skew_ms, record_time_column="kafka_ts")
        query = (f"SELECT i, {event_time_ms_sql()}, "
                 f"TIMESTAMPDIFF(SECOND, TO_TIMESTAMP_LTZ(0, 3), {row_time}) "
                 f"FROM (SELECT i, v, TO_TIMESTAMP_LTZ(r, 3) AS kafka_ts FROM payloads)")
        with t_env.execute_sql(query).collect() as rows:
            return {row[0]: (row[1], row[2]) for row in rows}
    finally:
        t_env.drop_temporary_view("payloads")


def test_sql_event_time_equals_validation_for_every_valid_form(table_env):
    values = FIXED + random_times(400, seed=3)
    payloads = [json.dumps({"event_time": v}).encode() for v in values]
    got = evaluate(table_env, payloads, record_ms=5_000_000_000_000, skew_ms=300_000)
    mismatches = []
    for i, value in enumerate(values):
        expected = None if isinstance(value, float) else parse_event_time(value)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 10**18:
            expected = None  # no long holds it; validation then rejects it as in the future
        if got[i][0] != expected and not (expected is None and value in LENIENT):
            mismatches.append((value, expected, got[i][0]))
    assert mismatches == [], "\n".join(map(repr, mismatches))
    assert sum(1 for v in got.values() if v[0] is not None) > 300


def test_row_time_ignores_times_beyond_the_future_skew_and_unparseable_payloads(table_env):
    record_ms = 1_700_000_000_000
    times = [record_ms - 3_600_000, record_ms + 299_000, record_ms + 301_000, 4_102_444_800_000]
    payloads = [json.dumps({"event_time": t}).encode() for t in times]
    payloads += [b"{not json", b'{"a":' * 3000 + b"1" + b"}" * 3000, b"\xef\xbb\xbf{}",
                 b'{"event_time": %d, "event_time": %d}' % (record_ms - 1000, record_ms - 2000)]
    got = evaluate(table_env, payloads, record_ms=record_ms, skew_ms=300_000)
    # seconds, as UNIX_TIMESTAMP gives them; 0: the epoch, which never moves a watermark
    row_time_s = [got[i][1] for i in range(len(payloads))]
    assert row_time_s == [(record_ms - 3_600_000) // 1000, (record_ms + 299_000) // 1000,
                          0, 0, 0, 0, 0, (record_ms - 2000) // 1000]
    # duplicate keys: the last counts, as in validation
    assert got[len(payloads) - 1][0] == record_ms - 2000
