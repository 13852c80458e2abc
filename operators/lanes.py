"""Which integer keys land on which parallel subtask: Flink's key-group assignment.

The thread-mode scoring operator batches the records of one key at a time (keyed
state and timers belong to a key), so it wants exactly one key per subtask: a
*lane*. Flink places a key in key group ``murmurHash(key.hashCode()) % max_parallelism``
and that key group on subtask ``key_group * parallelism // max_parallelism``
(``KeyGroupRangeAssignment`` and ``MathUtils.murmurHash`` in flink-core). PyFlink's
``key_by(..., key_type=Types.INT())`` keys by a one-field ``Row`` holding the int, whose
``hashCode`` (``RowUtils.deepHashCodeRow``: kind 0, then ``Arrays.deepHashCode`` of
the field array wrapped once more) is ``62 + value``. This is the same arithmetic in
Python, with Java's 32-bit overflow, so lanes can be chosen one per subtask;
tests/pipeline/test_lane_keys.py checks it against a real Flink job.
"""

from __future__ import annotations

from functools import cache

# Pinned by the job (env.set_max_parallelism): Flink's default for parallelism <= 85.
MAX_PARALLELISM = 128
# hashCode of PyFlink's key Row(value) for an INT key: 62 + value (see above).
_ROW_OF_INT_HASH_BASE = 62
_MASK = 0xFFFFFFFF


def _int32(value: int) -> int:
    value &= _MASK
    return value - (1 << 32) if value & 0x80000000 else value


def _rotl(value: int, bits: int) -> int:
    value &= _MASK
    return ((value << bits) | (value >> (32 - bits))) & _MASK


def _bit_mix(value: int) -> int:
    value &= _MASK
    value ^= value >> 16
    value = (value * 0x85EBCA6B) & _MASK
    value ^= value >> 13
    value = (value * 0xC2B2AE35) & _MASK
    value ^= value >> 16
    return value


def murmur_hash(code: int) -> int:
    """``org.apache.flink.util.MathUtils.murmurHash(int)``: non-negative."""
    code = (code * 0xCC9E2D51) & _MASK
    code = _rotl(code, 15)
    code = (code * 0x1B873593) & _MASK
    code = _rotl(code, 13)
    code = (code * 5 + 0xE6546B64) & _MASK
    code ^= 4
    mixed = _int32(_bit_mix(code))
    if mixed >= 0:
        return mixed
    return -mixed if mixed != -(2**31) else 0


def subtask_of(key: int, parallelism: int, max_parallelism: int = MAX_PARALLELISM) -> int:
    """The subtask index a PyFlink ``INT`` key is processed on."""
    key_group = murmur_hash(_int32(_ROW_OF_INT_HASH_BASE + key)) % max_parallelism
    return key_group * parallelism // max_parallelism


@cache
def lane_keys(parallelism: int, max_parallelism: int = MAX_PARALLELISM) -> tuple[int, ...]:
    """The smallest non-negative key for each subtask index 0..parallelism-1."""
    if not 1 <= parallelism <= max_parallelism:
        raise ValueError(f"parallelism {parallelism} not in 1..{max_parallelism}")
    lanes: dict[int, int] = {}
    key = 0
    while len(lanes) < parallelism:
        lanes.setdefault(subtask_of(key, parallelism, max_parallelism), key)
        key += 1
    return tuple(lanes[i] for i in range(parallelism))
