"""The thread-mode model client: rows batched on the caller's thread, calls made by a
relay process (serving/predict_relay.py), answers collected without blocking.

PyFlink's thread mode has no ``AsyncFunction``, and a Python operator there can emit
only from its own ``process_element`` and ``on_timer`` calls, on the task's thread. It
also runs the job's Python inside the TaskManager JVM (PEMJA), where gRPC in-process is
a hazard twice over: its future calls start Python threads (with them the TaskManager
died in native code: a SIGSEGV under a timer callback, a fatal "GIL is released" at job
cancel), and a blocking call from the fused operator deadlocked on its first answer
(gRPC's ``PyGILState_Ensure`` found another thread state than the one PEMJA runs the
task with, and waited for the GIL its own thread held: seen with gdb, 2026-12-02). A
blocking call also keeps the task thread idle for a whole round trip, which caps the job
at about one batch per round trip. So no gRPC runs in the TaskManager: a batch leaves as
a serialised ``PredictRequest`` on the relay's pipe and the task thread goes on: it
computes other records' features, whose rows form the next batch, and picks up answers
whenever it comes back (``add``, ``poll``). So:

- ``add(tag, inputs)`` queues a row; a full batch (``max_batch_size``) is sent at once
  when fewer than ``max_in_flight`` calls are out, and when all are out ``add`` waits for
  the first answer: that wait is the job's back-pressure on a saturated model;
- ``poll()`` returns the rows of answered calls, and sends the queue once its first row
  has waited ``batch_window_ms``, ``min_call_interval_ms`` has passed since the last
  call started, and a call slot is free; when the first row has waited a tenth of its
  deadline and every slot is still taken, it waits for a slot (rows then wait
  upstream, in Flink's buffers, not against their deadline);
- ``due_in()`` says when ``poll()`` next has work, so the operator can set a timer;
- ``flush()`` sends everything and waits for every answer (the end of an input).

While calls are out, and for the interval between calls, rows pile up in the queue, so
rows per call grow with load up to ``max_batch_size``. ``max_in_flight`` 0 waits for
each call's answer right after sending it, as a blocking client would (kept to measure
against: docs/BENCHMARKS.md). Deadlines, fallback reasons and the circuit breaker are
those of the other clients (serving/predict_calls.py): each row has ``timeout_ms`` from
being queued, the call carries the oldest row's remaining time as its gRPC deadline, and
a call not answered by then (plus ``ANSWER_GRACE_S`` for the pipe) fails its rows as
``timeout``. A relay that exits fails its calls as ``unavailable`` and is started again
on the next send.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass

from rtd_core.config import ServingConfig
from serving.predict_calls import (
    CircuitBreaker,
    ModelCallError,
    Prediction,
    Reason,
    breaker_for,
    predict_request,
    probe_unanswered,
    read_scores,
)
from serving.predict_relay import ANSWERED
from serving.relay_pipe import Relay, RelayGone, rpc_error
from serving.tf_protos import predict_pb2

# How long past a call's gRPC deadline its answer may take to come through the pipe.
ANSWER_GRACE_S = 0.05
# The first calls' expected round trip, until calls have been timed.
INITIAL_CALL_S = 0.005
# Share of a row's deadline it may wait queued behind busy call slots before the caller
# waits for a slot rather than take more rows.
STARVED_SHARE = 0.1
# The shortest wait before looking again for an answer that is late.
MIN_RECHECK_S = 0.002


@dataclass(frozen=True, slots=True)
class Finished:
    """One row's result: a prediction, or the error that sends it to the fallback ladder."""

    tag: Hashable
    prediction: Prediction | None
    error: ModelCallError | None


@dataclass(slots=True)
class Queued:
    """A row waiting to be sent: its tag, inputs, when it was queued, its deadline."""

    tag: Hashable
    inputs: Mapping[str, float]
    queued_at: float
    deadline: float


@dataclass(slots=True)
class _Call:
    rows: list[Queued]
    started: float
    deadline: float
    probe: bool


class PipelinedBatchClient:
    def __init__(
        self,
        config: ServingConfig,
        *,
        breaker: CircuitBreaker | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_call: Callable[[float, int, Reason | None], None] | None = None,
    ) -> None:
        """``on_call(latency_ms, rows, outcome)`` hears of every call made."""
        self.config = config
        self.breaker = breaker or breaker_for(config, clock)
        self._clock = clock
        self._on_call = on_call
        self._timeout_s = config.timeout_ms / 1000.0
        self._window_s = config.batch_window_ms / 1000.0
        self._interval_s = config.min_call_interval_ms / 1000.0
        self._last_send = -float("inf")
        self._max_batch = config.max_batch_size
        self._blocking = config.max_in_flight == 0
        self._max_in_flight = max(1, config.max_in_flight)
        self._queue: list[Queued] = []
        self._input_names: tuple[str, ...] | None = None
        self._in_flight: dict[int, _Call] = {}
        self._next_call = 0
        self._relay: Relay | None = None
        self._call_s = INITIAL_CALL_S  # a moving average of answered calls' round trips
        # A call ran out of time at the server, and no call has come back otherwise since.
        # Then waiting for a call slot would hold every record upstream for a deadline
        # per call: a model slower than its deadline would slow the job to the calls'
        # pace (seen in the model-chaos drill: 70 decisions/s and a p99 of 5.5 s at 200
        # events/s). While it holds, rows wait in the queue instead, and fall back once
        # their own deadline has passed. A call the client gave up on itself (its answer
        # later than the deadline plus ANSWER_GRACE_S, a starved relay or pipe) neither
        # sets nor clears it: that says more about this machine than about the server,
        # and clearing it there would let the caller wait a deadline per batch again in
        # the middle of a latency spike. (Not what held the model-chaos spike's p99 at
        # about 1 s: run 2144-0e2fe5 had no such call, docs/RELIABILITY.md.)
        self._timing_out = False
        self._start_relay()

    def _start_relay(self) -> None:
        """Started at once, so its start-up counts against no row's deadline; after it
        exits, the next send starts another."""
        try:
            self._relay = Relay(self.config, self._max_in_flight)
        except RelayGone:
            self._relay = None

    @property
    def outstanding(self) -> int:
        """Rows queued or out: each will come back from ``add``/``poll``/``flush``."""
        return len(self._queue) + sum(len(c.rows) for c in self._in_flight.values())

    def add(self, tag: Hashable, inputs: Mapping[str, float]) -> list[Finished]:
        """Queue one row; returns the rows answered meanwhile (or this row, if refused)."""
        names = tuple(sorted(inputs))
        if self._input_names is None:
            self._input_names = names
        elif names != self._input_names:
            error = ModelCallError("error", f"input names {names} differ from {self._input_names}")
            return [Finished(tag, None, error)]
        if not self.breaker.admits_row():
            return [Finished(tag, None, ModelCallError("unavailable", "circuit breaker open"))]
        now = self._clock()
        self._queue.append(Queued(tag, inputs, now, now + self._timeout_s))
        if len(self._queue) < self._max_batch:
            return []
        finished = self._collect(0.0)
        # saturated: wait for a slot (back-pressure), unless the calls out time out
        while len(self._in_flight) >= self._max_in_flight and not self._timing_out:
            finished += self._collect(self._wait_for_answer())
        if len(self._in_flight) >= self._max_in_flight:
            return finished  # the queue goes out when a slot frees, or expires first
        return finished + self._send()

    def poll(self) -> list[Finished]:
        """Answers that came in; sends the queue once its first row has waited the
        batching window and a call slot is free."""
        finished = self._collect(0.0)
        if (self._queue and len(self._in_flight) >= self._max_in_flight and not self._timing_out
                and self._clock() - self._queue[0].queued_at >= self._timeout_s * STARVED_SHARE):
            # The model is the bottleneck: rather than let queued rows run out of time
            # behind the calls out, wait for a slot (back-pressure, as a blocking call).
            while len(self._in_flight) >= self._max_in_flight:
                finished += self._collect(self._wait_for_answer())
        while (self._queue and len(self._in_flight) < self._max_in_flight
               and (len(self._queue) >= self._max_batch
                    or self._clock() >= self._partial_due())):
            finished += self._send()
        return finished

    def _partial_due(self) -> float:
        """When the queue may go out short of a full batch: once its first row has waited
        the batching window, and ``min_call_interval_ms`` after the last call started.
        Below 1,000 / interval rows a second that adds little; above it, rows per call
        grow with load, and the model server's cost per call (most of its cost at these
        sizes, docs/BENCHMARKS.md) stays flat while the job's load grows."""
        return max(self._queue[0].queued_at + self._window_s, self._last_send + self._interval_s)

    def due_in(self) -> float | None:
        """Seconds until ``poll()`` has work; None when no row is queued or out.

        For a call out: its expected answer (the moving average of round trips), and once
        that has passed, half the time it has been out, at least ``MIN_RECHECK_S``: a
        late answer is looked for a few times, not every millisecond (each look is a
        timer, a Python entry)."""
        now = self._clock()
        waits = []
        if self._queue and len(self._in_flight) < self._max_in_flight:
            waits.append(self._partial_due() - now)
        if self._in_flight:
            first = min(c.started for c in self._in_flight.values())
            expected = first + self._call_s - now
            waits.append(expected if expected > 0
                         else max(MIN_RECHECK_S, (now - first) / 2))
        if not waits:
            return None if not self._queue else self._call_s
        return max(0.0, min(waits))

    def wait(self, max_s: float) -> list[Finished]:
        """Answers, waiting up to ``max_s`` for the first (the caller has nothing else
        to do)."""
        if not self._in_flight:
            return []
        return self._collect(min(max_s, self._wait_for_answer()))

    def flush(self) -> list[Finished]:
        """Send everything queued and wait for every answer (the end of an input)."""
        finished: list[Finished] = []
        while self._queue or self._in_flight:
            while self._queue and len(self._in_flight) < self._max_in_flight:
                finished += self._send()
            if self._in_flight:
                finished += self._collect(self._wait_for_answer())
        return finished

    def close(self) -> None:
        self._queue.clear()
        self._in_flight.clear()
        if self._relay is not None:
            self._relay.close()
            self._relay = None

    def _wait_for_answer(self) -> float:
        """How long to block for the next answer: until the first call's deadline."""
        first = min(c.deadline for c in self._in_flight.values())
        return max(0.0005, first + ANSWER_GRACE_S - self._clock())

    def _send(self) -> list[Finished]:
        batch = self._queue[: self._max_batch]
        del self._queue[: self._max_batch]
        started = self._clock()
        self._last_send = started
        remaining = min(r.deadline for r in batch) - started
        if remaining <= 0:
            error = ModelCallError("timeout", "deadline passed while queued")
            return [Finished(r.tag, None, error) for r in batch]
        probe = self.breaker.probing
        self.breaker.batch_sent()
        try:
            request = predict_request(self.config, self._input_names or (),
                                      [r.inputs for r in batch]).SerializeToString()
            if self._relay is None:
                self._relay = Relay(self.config, self._max_in_flight)
            call_id = self._next_call
            self._next_call += 1
            self._relay.send(call_id, remaining, probe, request)
        except RelayGone as exc:
            self._relay_gone()
            return self._failed(_Call(batch, started, started + remaining, probe),
                                ModelCallError("unavailable", str(exc)))
        except Exception as exc:  # noqa: BLE001 - a bug or bad row: its rows fall back
            return self._failed(_Call(batch, started, started + remaining, probe),
                                ModelCallError("error", f"{type(exc).__name__}: {exc}"))
        self._in_flight[call_id] = _Call(batch, started, started + remaining, probe)
        if self._blocking:  # idle until the answer, as a blocking call would be
            finished: list[Finished] = []
            while self._in_flight:
                finished += self._collect(self._wait_for_answer())
            return finished
        return []

    def _collect(self, wait_s: float) -> list[Finished]:
        finished: list[Finished] = []
        if not self._in_flight:
            return finished
        relay = self._relay
        assert relay is not None
        try:
            answers = relay.answers(wait_s)
        except RelayGone as exc:
            self._relay_gone()
            for call in list(self._in_flight.values()):
                finished += self._failed(call, ModelCallError("unavailable", str(exc)))
            self._in_flight.clear()
            return finished
        for call_id, status, payload in answers:
            call = self._in_flight.pop(call_id, None)
            if call is None:  # answered after its deadline: its rows already fell back
                continue
            finished += self._answered(call, status, payload)
        now = self._clock()
        for call_id in [i for i, c in self._in_flight.items()
                        if now > c.deadline + ANSWER_GRACE_S]:
            call = self._in_flight.pop(call_id)
            finished += self._failed(call, ModelCallError(
                "timeout", "no answer within the call's deadline"))
        return finished

    def _answered(self, call: _Call, status: int, payload: bytes) -> list[Finished]:
        if status != ANSWERED:
            error = rpc_error(payload)
            finished = self._failed(call, error)
            # The server itself ran out of the call's deadline (gRPC's DEADLINE_EXCEEDED
            # through the relay), not a starved relay or pipe on a loaded machine.
            self._timing_out = error.reason == "timeout"
            return finished
        try:
            scores, version = read_scores(predict_pb2.PredictResponse.FromString(payload),
                                          len(call.rows))
        except ModelCallError as exc:
            return self._failed(call, exc)
        except Exception as exc:  # noqa: BLE001 - a bad response: rows fall back
            return self._failed(call, ModelCallError("error", f"{type(exc).__name__}: {exc}"))
        finished_at = self._clock()
        took = finished_at - call.started
        self._call_s = 0.8 * self._call_s + 0.2 * took
        self._account(took, len(call.rows), None)
        rows = len(call.rows)
        return [Finished(row.tag, Prediction(score, version,
                                             (finished_at - row.queued_at) * 1000.0, rows),
                         None)
                for row, score in zip(call.rows, scores, strict=True)]

    def _failed(self, call: _Call, error: ModelCallError) -> list[Finished]:
        if call.probe and error.reason == "timeout":
            error = probe_unanswered(error)
        self._account(self._clock() - call.started, len(call.rows), error.reason)
        # One instance per row: the detail is the same, the objects are not shared.
        return [Finished(row.tag, None, ModelCallError(error.reason, error.detail))
                for row in call.rows]

    def _account(self, took_s: float, rows: int, outcome: Reason | None) -> None:
        self.breaker.record(outcome)
        if outcome != "timeout":
            self._timing_out = False  # the server answered, or is not there at all
        if self._on_call is not None:
            self._on_call(took_s * 1000.0, rows, outcome)

    def _relay_gone(self) -> None:
        if self._relay is not None:
            try:
                self._relay.close()
            finally:
                self._relay = None
