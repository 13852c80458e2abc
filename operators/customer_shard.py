"""The job's keyed operator: validation, features, model scoring and the decision of a
record, keyed by the shard of its customer, which the Kafka source computes in SQL
(flink_jobs/kafka_tables.py); so an event enters Python once, here, between the source
and the sinks (flink_jobs/topology.py).

Three uses, one class:
- ``scoring`` None: validation and features only (the replay, and process mode, where
  PyFlink's async operator scores next: operators/scoring.py);
- ``scoring`` set, ``decider`` None: features and score, for the opt-in last-score rung
  keyed by card (operators/fallback_ladder.py) and the decide operator after it;
- both set (thread mode's default): features, score and decision, which leaves with
  its trace as one record (operators/decide.py).
In every use, dead letters (rejected by validation, or a stage failed on the record)
leave by the ``DEAD_LETTER_TAG`` side output.

Scoring. Rows go to a batching model client shared by the subtask's shards
(serving/pipelined_batch_client.py): a batch is sent when it holds ``max_batch_size``
rows, or its first row has waited ``batch_window_ms`` and the last call started
``min_call_interval_ms`` before; while a call is in flight the task thread goes on with
other records, whose rows form the next batch; so rows per call grow with load. A
thread-mode operator can emit only from its own ``process_element`` and ``on_timer``,
and a record's keyed state can be changed only in its shard's keyed context; so each
answer waits for its shard: the next record of that shard, or a processing-time timer
the shard sets while it has rows out (``_arm``).

Exactly once: a record waits in memory for its answer, but also in its shard's keyed
``MapState`` (sequence number -> record) from the moment its features are computed until
it is emitted. A checkpoint therefore holds every record taken from upstream but not yet
passed on; after a restore the shard's first call (a record, or one of its checkpointed
timers) queues them to be scored again, with the features they had. Processing-time
timers do not fire when the input ends (a bounded source, or stop-with-savepoint
--drain), so each shard also has an event-time timer at the end of time: the final
watermark fires it, and the subtask then sends and waits for everything it holds.

Failures are the client's: the row's ``timeout_ms`` deadline (``timeout``), an
unreachable server or open circuit breaker (``unavailable``), anything else (``error``);
the record then leaves without a score and the rules decide (or the last-score rung).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pyflink.common import Row, Types
from pyflink.datastream import KeyedProcessFunction, RuntimeContext, TimeDomain
from pyflink.datastream.state import MapStateDescriptor

from operators.decide import Decider
from operators.failures import DEAD_LETTER_TAG, has_failed, mark_failed
from operators.fallback_ladder import LadderMetrics
from operators.keyed_features import ShardFeatures
from operators.records import JobRecord
from operators.scored_records import fell_back, model_request, scored
from operators.scoring_metrics import ScoringMetrics
from operators.validation import Validation
from rtd_core.config import ServingConfig
from serving.model_signature import model_inputs
from serving.pipelined_batch_client import Finished, PipelinedBatchClient

PENDING_STATE = "customer-shard-pending-v1"
FEATURES_STAGE = "features"
# The longest a timer waits for an answer when the input is idle.
IDLE_WAIT_S = 0.02
# The input counts as idle when no record came in since the last timer and none for
# this long. No record between two timers alone (until 2026-12-02) took a backlog for
# idle: the shards' timers fire back to back, with no record between them, so the task
# thread waited up to IDLE_WAIT_S at timer after timer while records queued upstream.
# In the model-chaos drill's latency spike, where no answer comes within that wait, the
# job fell to about 380 decisions/s at 450/s offered.
IDLE_GAP_S = 0.002
# Long.MAX_VALUE: the watermark that ends an input fires this timer.
END_OF_INPUT = 2**63 - 1


@dataclass
class _Shard:
    """One shard's records out for scoring, and its answers not yet emitted."""

    records: dict[int, JobRecord] = field(default_factory=dict)  # seq -> record
    ready: list[Finished] = field(default_factory=list)
    timer_at: int | None = None  # the processing-time timer set for this shard


class CustomerShardFunction(KeyedProcessFunction):
    def __init__(self, validation: Validation, features: ShardFeatures,
                 scoring: ServingConfig | None = None, decider: Decider | None = None) -> None:
        self.validation = validation
        self.features = features
        self.scoring = scoring
        self.decider = decider

    def open(self, runtime_context: RuntimeContext) -> None:
        self.validation.open(runtime_context)
        self.features.open(runtime_context)
        errors = runtime_context.get_metrics_group().add_group("rtd").add_group(
            "internal_errors")
        self._feature_errors = errors.counter(FEATURES_STAGE)
        self._client: PipelinedBatchClient | None = None
        self._last_element_s = time.monotonic()
        self._elements = self._elements_at_timer = 0  # records seen; as at the last timer
        if self.scoring is None:
            return
        self._pending = runtime_context.get_map_state(
            MapStateDescriptor(PENDING_STATE, Types.LONG(), Types.PICKLED_BYTE_ARRAY()))
        self._shards: dict[int, _Shard] = {}
        # Unique over restarts: a restored shard's sequence numbers are all older.
        self._next_seq = time.time_ns() // 1000
        # Thread mode: figures pushed into JVM counters (operators/metric_values.py).
        self._metrics = ScoringMetrics(runtime_context.get_metrics_group(),
                                       lambda: self._breaker_open(), push=True)
        self._client = PipelinedBatchClient(self.scoring, on_call=self._metrics.on_call)
        if self.decider is not None:
            self.decider.open(runtime_context)
            self._ladder_metrics = LadderMetrics(runtime_context)

    def _breaker_open(self) -> bool:
        return self._client is not None and self._client.breaker.state != "closed"

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def process_element(self, value: Row, ctx: KeyedProcessFunction.Context
                        ) -> Iterator[Any]:
        shard = ctx.get_current_key()
        self._elements += 1
        self._last_element_s = time.monotonic()
        record = self.validation.check(value, shard)
        if isinstance(record, JobRecord):
            try:
                self.features.apply(record, shard, ctx)
            except Exception as exc:  # noqa: BLE001 - no record's content may stop the job
                self._feature_errors.inc()
                mark_failed(record, FEATURES_STAGE, exc)
        else:  # rejected: its dead letter
            yield DEAD_LETTER_TAG, record
        client = self._client
        if client is None:  # validation and features only
            if isinstance(record, JobRecord):
                yield record
            return
        state = self._shard(shard, ctx)
        if isinstance(record, JobRecord):
            yield from self._admit(record, state, shard, client)
        self._route(client.poll())
        yield from self._emit(state)
        self._arm(state, ctx)

    def _admit(self, record: JobRecord, state: _Shard, shard: int,
               client: PipelinedBatchClient) -> Iterator[Any]:
        """The record out for scoring, or straight out when no model call can take it."""
        if has_failed(record):
            yield from self._out(record)
            return
        try:
            inputs = model_inputs(record.event, record.features)
        except Exception as exc:  # noqa: BLE001 - a bad record must not stop decisions
            record.model_request = model_request(self.scoring, {})  # type: ignore[arg-type]
            self._metrics.row_fell_back("error")
            yield from self._out(fell_back(record, "error", f"{type(exc).__name__}: {exc}"))
            return
        record.model_request = model_request(self.scoring, inputs)  # type: ignore[arg-type]
        seq = self._next_seq
        self._next_seq += 1
        state.records[seq] = record
        self._pending.put(seq, record)
        self._route(client.add((shard, seq), inputs))

    def on_timer(self, timestamp: int, ctx: KeyedProcessFunction.OnTimerContext
                 ) -> Iterator[Any]:
        client = self._client
        event_time = ctx.time_domain() == TimeDomain.EVENT_TIME
        if event_time and timestamp != END_OF_INPUT:
            self.features.expire(timestamp, ctx.get_current_key())
            return
        if client is None:
            return
        state = self._shard(ctx.get_current_key(), ctx)
        if event_time:  # END_OF_INPUT: the input ended, everything out now
            self._route(client.flush())
            yield from self._emit(state)
            return
        if state.timer_at is not None and timestamp >= state.timer_at:
            state.timer_at = None
        self._route(client.poll())
        idle = (self._elements == self._elements_at_timer
                and time.monotonic() - self._last_element_s >= IDLE_GAP_S)
        self._elements_at_timer = self._elements
        if idle and state.records and not state.ready:
            # No record has come in for a while: the task thread has nothing else to
            # do, so it waits for the answer here rather than at a later timer.
            self._route(client.wait(IDLE_WAIT_S))
        yield from self._emit(state)
        self._arm(state, ctx)

    def _shard(self, shard: int, ctx: Any) -> _Shard:
        """The shard's in-memory state; on its first use after (re)start, the records a
        checkpoint left waiting are queued again."""
        state = self._shards.get(shard)
        if state is not None:
            return state
        state = self._shards[shard] = _Shard()
        client = self._client
        assert client is not None
        for seq, record in sorted(self._pending.items()):
            state.records[seq] = record
            self._next_seq = max(self._next_seq, seq + 1)
            request = record.model_request
            assert request is not None, "a record is pending only once its request is built"
            self._route(client.add((shard, seq), request["inputs"]))
        ctx.timer_service().register_event_time_timer(END_OF_INPUT)
        return state

    def _route(self, finished: list[Finished]) -> None:
        for result in finished:
            shard, _seq = result.tag  # type: ignore[misc]
            self._shards[shard].ready.append(result)

    def _emit(self, state: _Shard) -> Iterator[Any]:
        if not state.ready:
            return
        ready, state.ready = state.ready, []
        for result in ready:
            _shard, seq = result.tag  # type: ignore[misc]
            value = state.records.pop(seq)
            self._pending.remove(seq)
            if result.prediction is not None:
                self._metrics.row_scored(result.prediction.latency_ms)
                value = scored(value, result.prediction)
            else:
                error = result.error
                reason, detail = (error.reason, error.detail) if error else ("error", "no result")
                self._metrics.row_fell_back(reason)
                value = fell_back(value, reason, detail)
            yield from self._out(value)

    def _out(self, value: JobRecord) -> Iterator[Any]:
        if self.decider is None:
            yield value
            return
        if not has_failed(value):
            self._ladder_metrics.without_ladder(value.model)
        yield from self.decider.outputs(value)

    def _arm(self, state: _Shard, ctx: Any) -> None:
        """While the shard has rows out, a processing-time timer for when its answers
        are due: the client's next send, or its calls' expected answer."""
        if not state.records or state.timer_at is not None:
            return
        client = self._client
        assert client is not None
        due_s = client.due_in()
        timers = ctx.timer_service()
        at = timers.current_processing_time() + max(1, math.ceil((due_s or 0.001) * 1000))
        timers.register_processing_time_timer(at)
        state.timer_at = at
