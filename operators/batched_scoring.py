"""Thread-mode model scoring: batched Predict calls from a keyed operator, durable queue.

PyFlink's ``AsyncFunction`` runs only in process mode (docs/operations.md), and a thread
mode operator can emit only from its own ``process_element``/``on_timer`` calls. So
here the stream is keyed by *lane* (one key per subtask, operators/lanes.py), and each
lane's records go through a ``BlockingBatchClient`` (serving/blocking_batch_client.py):
a record is queued and sent in one blocking Predict with the others once
``max_batch_size`` rows are queued or the first has waited ``batch_window_ms``, from
``process_element`` or from a processing-time timer set for the window's end. Records
that arrive during a call wait in Flink's network buffers and ride in the next batch.

Exactly once: a record waits in memory for its answer, but also in keyed ``MapState``
(sequence number -> record) from the moment it arrives until it is emitted. A
checkpoint therefore holds every record that was taken from upstream but not yet passed
on; after a restore the lane's first call reloads them and scores them again, so each
event still gets exactly one committed decision. A processing-time timer is registered
whenever anything is queued, and timers are checkpointed with the state, so a restored
lane is woken even if no new record arrives. Processing-time timers do not fire when
the input ends (a bounded source, or stop-with-savepoint --drain), so each lane also
has an event-time timer at the end of time: the final watermark fires it, and the lane
then sends everything it holds.

Failures are the async client's: the row's ``timeout_ms`` deadline (``timeout``), an
unreachable server or open circuit breaker (``unavailable``), anything else
(``error``); the record then leaves without a score and the fallback ladder decides.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pyflink.common import Types
from pyflink.datastream import KeyedProcessFunction, RuntimeContext, TimeDomain
from pyflink.datastream.state import MapStateDescriptor

from operators.failures import has_failed
from operators.keyed_features import shard_of
from operators.lanes import lane_keys
from operators.scored_records import fell_back, model_request, scored
from operators.scoring_metrics import ScoringMetrics
from rtd.config import ServingConfig
from rtd.security import serving_channel
from serving.blocking_batch_client import BlockingBatchClient, Finished
from serving.model_signature import model_inputs
from serving.predict_calls import CHANNEL_OPTIONS, breaker_for

PENDING_STATE = "model-scoring-pending-v1"
# Long.MAX_VALUE: the watermark that ends an input fires this timer.
END_OF_INPUT = 2**63 - 1


def lane_of(card_id: str, parallelism: int) -> int:
    """The lane (scoring key) of a card's records: spreads cards over one key per subtask."""
    lanes = lane_keys(parallelism)
    return lanes[shard_of(card_id, len(lanes))]


@dataclass
class _Lane:
    client: BlockingBatchClient
    records: dict[int, dict[str, Any]] = field(default_factory=dict)  # seq -> waiting record
    next_seq: int = 0
    timer_at: int | None = None  # the earliest processing-time timer set for this lane
    end_timer_set: bool = False


class BatchedScoring(KeyedProcessFunction):
    def __init__(self, serving: ServingConfig) -> None:
        self.serving = serving
        self._lanes: dict[int, _Lane] = {}

    def open(self, runtime_context: RuntimeContext) -> None:
        self._pending = runtime_context.get_map_state(
            MapStateDescriptor(PENDING_STATE, Types.LONG(), Types.PICKLED_BYTE_ARRAY()))
        self._channel = serving_channel(self.serving, CHANNEL_OPTIONS)
        self._breaker = breaker_for(self.serving, time.monotonic)
        self._lanes = {}
        # Thread mode: figures pushed into JVM counters (a Python gauge would be called
        # on Flink's metrics thread: operators/metric_values.py).
        self._metrics = ScoringMetrics(runtime_context.get_metrics_group(),
                                       lambda: self._breaker.state != "closed", push=True)

    def close(self) -> None:
        for lane in self._lanes.values():
            lane.client.close()
        self._lanes = {}
        self._channel.close()

    def _lane(self, key: int) -> tuple[_Lane, list[Finished]]:
        """The lane's in-memory state; on its first use after (re)start, the records a
        checkpoint left waiting are queued again."""
        lane = self._lanes.get(key)
        if lane is not None:
            return lane, []
        lane = _Lane(BlockingBatchClient(self.serving, channel=self._channel,
                                            breaker=self._breaker,
                                            on_call=self._metrics.on_call))
        self._lanes[key] = lane
        finished: list[Finished] = []
        for seq, record in sorted(self._pending.items()):
            lane.records[seq] = record
            lane.next_seq = seq + 1
            finished += lane.client.add(seq, record["model_request"]["inputs"])
        return lane, finished

    def process_element(self, value: dict[str, Any], ctx: KeyedProcessFunction.Context
                        ) -> Iterator[dict[str, Any]]:
        if has_failed(value):  # an earlier stage failed on it: on to the dead letters
            yield value
            return
        lane, finished = self._lane(ctx.get_current_key())
        if not lane.end_timer_set:
            ctx.timer_service().register_event_time_timer(END_OF_INPUT)
            lane.end_timer_set = True
        try:
            inputs = model_inputs(value["event"], value["features"])
        except Exception as exc:  # noqa: BLE001 - a bad record must not stop decisions
            value["model_request"] = model_request(self.serving, {})
            self._metrics.row_fell_back("error")
            yield fell_back(value, "error", f"{type(exc).__name__}: {exc}")
        else:
            value["model_request"] = model_request(self.serving, inputs)
            seq = lane.next_seq
            lane.next_seq += 1
            lane.records[seq] = value
            self._pending.put(seq, value)
            finished += lane.client.add(seq, inputs)
        yield from self._emit(lane, finished)
        self._arm(lane, ctx)

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext
                 ) -> Iterator[dict[str, Any]]:
        lane, finished = self._lane(ctx.get_current_key())
        if ctx.time_domain() == TimeDomain.EVENT_TIME:  # END_OF_INPUT: the input ended
            yield from self._emit(lane, finished + lane.client.flush())
            return
        if lane.timer_at is not None and timestamp >= lane.timer_at:
            lane.timer_at = None
        yield from self._emit(lane, finished + lane.client.poll())
        self._arm(lane, ctx)

    def _emit(self, lane: _Lane, finished: list[Finished]) -> Iterator[dict[str, Any]]:
        for result in finished:
            seq = int(result.tag)  # type: ignore[call-overload]
            value = lane.records.pop(seq)
            self._pending.remove(seq)
            if result.prediction is not None:
                self._metrics.row_scored(result.prediction.latency_ms)
                yield scored(value, result.prediction)
            else:
                error = result.error
                reason, detail = (error.reason, error.detail) if error else ("error", "no result")
                self._metrics.row_fell_back(reason)
                yield fell_back(value, reason, detail)

    def _arm(self, lane: _Lane, ctx: Any) -> None:
        """Set a processing-time timer for when the lane's client next has work."""
        due_s = lane.client.due_in()
        if due_s is None:
            return
        timers = ctx.timer_service()
        at = timers.current_processing_time() + max(1, math.ceil(due_s * 1000))
        if lane.timer_at is None or at < lane.timer_at:
            timers.register_processing_time_timer(at)
            lane.timer_at = at
