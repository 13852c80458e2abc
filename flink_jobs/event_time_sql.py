"""The event time of a raw Kafka value, as a SQL expression the Kafka source evaluates.

Why in SQL: Flink generates watermarks per Kafka partition only inside the source, and
the Kafka table source does that for a ``WATERMARK FOR`` column of its DDL (the planner
pushes the watermark into the scan). A watermark assigned after the source would see
all partitions interleaved, and a backlog read one partition at a time would then push
it hours ahead of the others (docs/contract.md, "Event time and watermarks").

The expression reads ``event_time`` from the JSON value with Flink's JSON functions
(which return NULL on any parse error, deep nesting included) and accepts exactly the
two forms validation accepts (decisioning/transaction.py, same patterns): an epoch-ms
JSON integer, or an RFC 3339 string, converted by calendar arithmetic so that a date
such as February 30 is rejected rather than rolled over. The result is the event time
in ms, or NULL. A value with no event time, or one more than the future skew ahead of
the record's own timestamp, gets the epoch as its row time: it never moves a watermark.
"""

from __future__ import annotations

from decisioning.transaction import EPOCH_MS_PATTERN, RFC3339_PATTERN

# ``event_time`` as JSON text wrapped in an array: '[1700000000000]' for a number,
# '["2023-11-14T22:13:20Z"]' for a string, so the two types stay apart.
_JSON = "JSON_QUERY(CAST(`{value}` AS STRING), '$.event_time' WITH CONDITIONAL ARRAY WRAPPER)"
_INT = "^\\[(" + EPOCH_MS_PATTERN + ")\\]$"
_TEXT = '^\\["' + RFC3339_PATTERN + '"\\]$'


def _group(q: str, index: int) -> str:
    return f"REGEXP_EXTRACT({q}, '{_TEXT}', {index})"


def _int_group(q: str, index: int) -> str:
    return f"CAST({_group(q, index)} AS BIGINT)"


def _days_from_civil(y: str, m: str, d: str) -> str:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm),
    for years from 1969 on, where every intermediate value is non-negative."""
    yy = f"({y} - CASE WHEN {m} <= 2 THEN 1 ELSE 0 END)"
    era = f"({yy} / 400)"
    yoe = f"({yy} - {era} * 400)"
    mp = f"({m} + CASE WHEN {m} > 2 THEN -3 ELSE 9 END)"
    doy = f"((153 * {mp} + 2) / 5 + {d} - 1)"
    doe = f"({yoe} * 365 + {yoe} / 4 - {yoe} / 100 + {doy})"
    return f"({era} * 146097 + {doe} - 719468)"


def _rfc3339_ms(q: str) -> str:
    y, m, d, hh, mi, ss = (_int_group(q, i) for i in range(1, 7))
    fraction = f"CAST(RPAD(SUBSTRING(COALESCE({_group(q, 7)}, '0') FROM 1 FOR 3), 3, '0') AS BIGINT)"
    sign = f"CASE WHEN {_group(q, 8)} = '-' THEN -1 ELSE 1 END"
    oh = f"COALESCE({_int_group(q, 9)}, 0)"
    om = f"COALESCE({_int_group(q, 10)}, 0)"
    leap = f"((MOD({y}, 4) = 0 AND MOD({y}, 100) <> 0) OR MOD({y}, 400) = 0)"
    month_days = (f"CASE WHEN {m} = 2 THEN CASE WHEN {leap} THEN 29 ELSE 28 END "
                  f"WHEN {m} IN (4, 6, 9, 11) THEN 30 ELSE 31 END")
    valid = (f"{y} >= 1969 AND {m} BETWEEN 1 AND 12 AND {d} BETWEEN 1 AND {month_days} "
             f"AND {hh} <= 23 AND {mi} <= 59 AND {ss} <= 59 AND {oh} <= 23 AND {om} <= 59")
    millis = (f"({_days_from_civil(y, m, d)} * 86400000 + {hh} * 3600000 + {mi} * 60000"
              f" + {ss} * 1000 + {fraction} - {sign} * ({oh} * 3600000 + {om} * 60000))")
    return f"CASE WHEN {valid} AND {millis} >= 0 THEN {millis} END"


def event_time_ms_sql(value_column: str = "v") -> str:
    """SQL: the event time in epoch ms of the raw JSON value, or NULL."""
    q = _JSON.format(value=value_column)
    return (f"CASE WHEN REGEXP({q}, '{_INT}') THEN CAST(REGEXP_EXTRACT({q}, '{_INT}', 1) AS BIGINT)"
            f" WHEN REGEXP({q}, '{_TEXT}') THEN {_rfc3339_ms(q)} END")


def row_time_sql(max_future_skew_ms: int, value_column: str = "v",
                 record_time_column: str = "kafka_ts") -> str:
    """SQL: the TIMESTAMP_LTZ(3) the source's watermark is generated from: the event
    time, or the epoch (never moves a watermark) when there is none or it lies more than
    ``max_future_skew_ms`` ahead of the record's timestamp."""
    ms = event_time_ms_sql(value_column)
    return (f"CASE WHEN TO_TIMESTAMP_LTZ(({ms}) - {int(max_future_skew_ms)}, 3)"
            f" <= `{record_time_column}` THEN TO_TIMESTAMP_LTZ({ms}, 3)"
            f" ELSE TO_TIMESTAMP_LTZ(0, 3) END")
