"""The shard of keyed state an entity belongs to, the same in Python and in Flink SQL.

The live job keys its one Python operator by the shard of the event's customer, and the
key is computed in the Kafka source's SQL (flink_jobs/kafka_tables.py): the source task
then runs no Python at all, so validation, features, scoring and deciding share one
task thread and one crossing into Python per event, with nothing pickled on the way. The
Python operators that key by a shard themselves (the opt-in last-score rung, by card) and
the operator's routing check (operators/validation.py) use ``shard_of``; ``shard_sql``
is its SQL twin, and tests/pipeline/test_shard_sql.py holds the two to the same value.

Why MD5: Flink SQL has no CRC or integer hash of a string that Python can reproduce,
but it has ``MD5`` (hex of the UTF-8 bytes), and the first hex digits of a digest are
uniform. Not for security.
"""

from __future__ import annotations

import hashlib

# Seven hex digits (28 bits) fit Flink's INT, so the SQL sum never overflows.
HASH_HEX_DIGITS = 7
_HEX = "0123456789abcdef"


def shard_of(entity_key: str, shards: int) -> int:
    digest = hashlib.md5(entity_key.encode("utf-8"), usedforsecurity=False).hexdigest()
    return int(digest[:HASH_HEX_DIGITS], 16) % shards


def shard_sql(text: str, shards: int) -> str:
    """SQL: ``shard_of`` of the STRING expression ``text`` (NULL where it is NULL)."""
    return shard_of_md5_sql(f"MD5({text})", shards)


def shard_of_md5_sql(digest: str, shards: int) -> str:
    """SQL: the shard of an entity from ``digest``, the SQL expression of its key's MD5
    (hex). ``digest`` appears once for each hex digit, and Flink's code generator
    evaluates each occurrence anew: pass a column, not a call, where it runs per record."""
    digits = " + ".join(
        f"(POSITION(SUBSTRING({digest} FROM {i + 1} FOR 1) IN '{_HEX}') - 1)"
        f" * {16 ** (HASH_HEX_DIGITS - 1 - i)}"
        for i in range(HASH_HEX_DIGITS))
    return f"MOD({digits}, {int(shards)})"
