"""The operators' watermark: Flink's behind the partition gate, or the shard's own."""

import pytest

from operators.shard_watermarks import NO_WATERMARK, PartitionGate, ShardWatermarks

pytestmark = pytest.mark.unit


class FakeState:
    """One keyed ValueState; ``key`` plays the operator's current key."""

    def __init__(self) -> None:
        self.values: dict[int, object] = {}
        self.key = 0
        self.writes = 0

    def value(self):
        return self.values.get(self.key)

    def update(self, value) -> None:
        self.values[self.key] = value
        self.writes += 1


def test_gate_opens_when_every_partition_has_delivered():
    gate = PartitionGate(3, idleness_ms=10_000, clock=lambda: 0.0)
    assert not gate.passes(0) and not gate.passes(0) and not gate.passes(2)
    assert gate.passes(1) and gate.passes(0)


def test_gate_opens_after_the_idleness_timeout_without_every_partition():
    now = [0.0]
    gate = PartitionGate(4, idleness_ms=10_000, clock=lambda: now[0])
    assert not gate.passes(0)
    now[0] = 10.0
    assert gate.passes(0)


def test_a_shard_watermark_needs_every_partition_and_survives_a_restore():
    state = FakeState()
    marks = ShardWatermarks(partitions=2, delay_ms=5_000, state=state)
    assert marks.watermark(7, NO_WATERMARK) == NO_WATERMARK
    marks.observe(7, 0, 100_000)
    assert marks.watermark(7, NO_WATERMARK) == NO_WATERMARK  # partition 1 unseen
    marks.observe(7, 1, 50_000)
    assert marks.watermark(7, NO_WATERMARK) == 45_000
    assert marks.watermark(7, 60_000) == 60_000  # Flink's, when higher
    marks.observe(7, 1, 40_000)  # out of order: no step back
    assert marks.watermark(7, NO_WATERMARK) == 45_000
    restored = ShardWatermarks(partitions=2, delay_ms=5_000, state=state)
    assert restored.watermark(7, NO_WATERMARK) == 45_000


def test_progress_is_saved_in_steps_not_per_record():
    state = FakeState()
    marks = ShardWatermarks(partitions=1, delay_ms=0, state=state)
    for t in range(0, 10_000, 10):
        marks.observe(3, 0, t)
    assert state.writes <= 11
    restored = ShardWatermarks(partitions=1, delay_ms=0, state=state)
    assert 9_990 - restored.watermark(3, NO_WATERMARK) < 1_000
