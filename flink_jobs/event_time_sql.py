"""The event time of a raw Kafka value, as a SQL expression the Kafka source evaluates.

Why in SQL: Flink generates watermarks per Kafka partition only inside the source, and
the Kafka table source does that for a ``WATERMARK FOR`` column of its DDL (the planner
pushes the watermark into the scan). A watermark assigned after the source would see
all partitions interleaved, and a backlog read one partition at a time would then push
it hours ahead of the others (docs/contract.md, "Event time and watermarks").

The expression reads ``event_time`` from the JSON value with Flink's JSON functions
(which return NULL on any parse error, deep nesting included) and accepts the two forms
validation accepts (decisioning/transaction.py, same patterns): an epoch-ms integer, or an
RFC 3339 string. For every time validation accepts it gives the same epoch ms
(tests/pipeline/test_event_time_sql.py); a few that validation rejects it still reads as
a time (see below). A value with no event time, one before the epoch, or one more than
the future skew ahead of the record's own timestamp gets the epoch as its row time: it
never moves a watermark.
"""

from __future__ import annotations

from decisioning.transaction import EPOCH_MS_PATTERN, RFC3339_PATTERN

# Why compact: the planner generates the source's watermark generator from this
# expression as one method. An earlier exact version (calendar arithmetic on every
# regex group) made that method too large for the JIT: the source then spent about 7 ms
# per record (measured with `rtd bench`: 122 decisions/s). So the string branch leaves
# the calendar to UNIX_TIMESTAMP, which is lenient (February 30 becomes March 2): such a
# value is a dead letter for validation and can move a watermark only as far as its
# time, within the future bound, like any malformed record (docs/contract.md).
_VALUE = "JSON_VALUE(CAST(`{value}` AS STRING), '$.event_time')"
_INT = "^(" + EPOCH_MS_PATTERN + ")$"
_TEXT = "^" + RFC3339_PATTERN + "$"


def _rfc3339_ms(j: str) -> str:
    seconds = (f"UNIX_TIMESTAMP(CONCAT(SUBSTRING({j} FROM 1 FOR 10), ' ', "
               f"SUBSTRING({j} FROM 12 FOR 8)), 'yyyy-MM-dd HH:mm:ss')")
    fraction = (f"TRY_CAST(RPAD(COALESCE(REGEXP_EXTRACT({j}, '^.{{19}}\\.([0-9]{{1,3}})', 1), "
                f"'0'), 3, '0') AS BIGINT)")
    # TRY_CAST throughout: a CAST that fails raises, and no record may stop the job.
    sign_hours = f"TRY_CAST(REGEXP_EXTRACT({j}, '([+-][0-9]{{2}}):[0-9]{{2}}$', 1) AS BIGINT)"
    sign_minutes = (f"TRY_CAST(CONCAT(SUBSTRING({j} FROM CHAR_LENGTH({j}) - 5 FOR 1), "
                    f"SUBSTRING({j} FROM CHAR_LENGTH({j}) - 1 FOR 2)) AS BIGINT)")
    offset = f"COALESCE({sign_hours} * 3600000 + {sign_minutes} * 60000, 0)"
    millis = f"({seconds} * 1000 + {fraction} - {offset})"
    # Only this branch can fall before the epoch (an offset east of UTC on 1970-01-01).
    return f"CASE WHEN {millis} >= 0 THEN {millis} END"


def event_time_ms_sql(value_column: str = "v") -> str:
    """SQL: the event time in epoch ms of the raw JSON value, or NULL. The session time
    zone must be UTC (``table.local-time-zone``, set by the job) for UNIX_TIMESTAMP."""
    j = _VALUE.format(value=value_column)
    return (f"CASE WHEN REGEXP({j}, '{_INT}') THEN TRY_CAST({j} AS BIGINT)"
            f" WHEN REGEXP({j}, '{_TEXT}') THEN {_rfc3339_ms(j)} END")


def row_time_sql(max_future_skew_ms: int, value_column: str = "v",
                 record_time_column: str = "kafka_ts") -> str:
    """SQL: the TIMESTAMP_LTZ(3) the source's watermark is generated from: the event
    time, or the epoch (never moves a watermark) when there is none, it is before the
    epoch, or it lies more than ``max_future_skew_ms`` ahead of the record's timestamp."""
    ms = event_time_ms_sql(value_column)
    return (f"CASE WHEN TO_TIMESTAMP_LTZ(({ms}) - {int(max_future_skew_ms)}, 3)"
            f" <= `{record_time_column}` THEN TO_TIMESTAMP_LTZ({ms}, 3)"
            f" ELSE TO_TIMESTAMP_LTZ(0, 3) END")
