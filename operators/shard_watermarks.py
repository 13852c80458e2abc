"""The watermark a feature operator works with: Flink's, made safe at (re)start.

Two lower bounds of the contract's watermark (the minimum over active partitions of each
partition's highest event time minus the out-of-orderness), the higher of which is used:

- Flink's, from the Kafka source, behind a ``PartitionGate``. The source registers a
  partition's watermark output only when it first emits a record of that partition, so
  until every partition has delivered one, its minimum leaves the others out (measured:
  after a backlog fetch, the last partition's records all found a watermark hours
  ahead). The gate holds it back until a record of each of the topic's partitions has
  come by since (re)start, or the idleness timeout has passed (a partition without data
  drops out, as in the contract).
- The shard's own: per shard, the highest event time it has processed from each
  partition, kept in keyed state. Once a shard has seen every partition, the minimum of
  those minus the delay is a lower bound too (a shard sees only some of a partition's
  events), and it survives a restore, which Flink's watermark does not (it is not
  checkpointed, and starts from nothing while the gate above is shut).
"""

from __future__ import annotations

import time
from typing import Any

NO_WATERMARK = -(2**63)
# A shard's progress is saved when its watermark moved this much, or it saw a new
# partition: a steady stream writes it rarely, and a restore loses at most this much.
SAVE_STEP_MS = 1_000


class PartitionGate:
    """Whether Flink's watermark covers every partition yet, since (re)start."""

    def __init__(self, partitions: int, idleness_ms: int,
                 clock: Any = time.monotonic) -> None:
        self.partitions = partitions
        self.idleness_s = idleness_ms / 1000.0
        self._clock = clock
        self._seen: set[int] = set()
        self._opened_at = clock()
        self.open = False

    def passes(self, partition: int) -> bool:
        if self.open:
            return True
        self._seen.add(partition)
        if len(self._seen) >= self.partitions or (
                self.idleness_s > 0 and self._clock() - self._opened_at >= self.idleness_s):
            self.open = True
        return self.open


class _Progress:
    __slots__ = ("latest", "saved_floor", "watermark")

    def __init__(self, latest: dict[int, int]) -> None:
        self.latest = latest  # partition -> highest event time processed
        self.watermark = NO_WATERMARK
        self.saved_floor = NO_WATERMARK


class ShardWatermarks:
    """``watermark`` before a record, ``observe`` after it. ``state``: the operator's
    keyed ValueState (a pickled {partition: event time}) for the current shard."""

    def __init__(self, partitions: int, delay_ms: int, state: Any) -> None:
        self.partitions = partitions
        self.delay_ms = delay_ms
        self._state = state
        self._shards: dict[int, _Progress] = {}

    def _progress(self, shard: int) -> _Progress:
        progress = self._shards.get(shard)
        if progress is None:
            saved = self._state.value()
            progress = _Progress(dict(saved) if saved else {})
            self._floor(progress)
            progress.saved_floor = progress.watermark
            self._shards[shard] = progress
        return progress

    def _floor(self, progress: _Progress) -> None:
        if len(progress.latest) >= self.partitions:
            progress.watermark = min(progress.latest.values()) - self.delay_ms

    def watermark(self, shard: int, flink_watermark: int) -> int:
        return max(flink_watermark, self._progress(shard).watermark)

    def observe(self, shard: int, partition: int, event_time: int) -> None:
        progress = self._progress(shard)
        latest = progress.latest.get(partition)
        if latest is not None and event_time <= latest:
            return
        progress.latest[partition] = event_time
        self._floor(progress)
        if latest is None or progress.watermark - progress.saved_floor >= SAVE_STEP_MS:
            self._state.update(dict(progress.latest))
            progress.saved_floor = progress.watermark
