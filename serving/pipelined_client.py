"""The thread-mode model client: batched Predict calls, sent without waiting, polled.

PyFlink's thread mode has no ``AsyncFunction``, and a Python operator there can emit
only from its own ``process_element`` and ``on_timer`` calls, on the task's thread. So
this client has no event loop and no thread of its own:

- ``add(tag, inputs)`` queues a row; the queue goes out as one ``Predict`` at once when
  no call is in flight (an idle client does not wait), or when it holds
  ``max_batch_size`` rows;
- ``poll()`` sends a queue whose ``batch_window_ms`` has passed, or any queue once no
  call is in flight, and returns the rows of every call that has finished, without
  blocking;
- ``due_in()`` says when ``poll()`` next has work, so the operator can set a timer.

So rows batch up only while the model is busy: at a low rate each row goes out at once,
under load the rows that arrive during a call ride in the next one. Calls are gRPC
futures: the channel's own threads do the network I/O, so up to
``max_in_flight_batches`` calls overlap with the operator's other work. A batch that
would exceed that waits for the oldest call to finish first (backpressure).

Deadlines, fallback reasons and the circuit breaker are those of the async client
(``serving/predict_calls.py``): each row has ``timeout_ms`` from being queued, the call
carries the oldest row's remaining time as its gRPC deadline, and a failure becomes
``timeout``, ``unavailable`` or ``error`` for every row of its batch.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass

import grpc

from rtd.config import ServingConfig
from serving.predict_calls import (
    CHANNEL_OPTIONS,
    CircuitBreaker,
    ModelCallError,
    Prediction,
    Reason,
    breaker_for,
    classify_rpc_error,
    probe_unanswered,
    predict_request,
    read_scores,
)
from serving.tf_protos import prediction_service_pb2_grpc

# While calls are in flight, poll this often: a loopback Predict takes ~1-3 ms.
IN_FLIGHT_POLL_S = 0.001


@dataclass(frozen=True, slots=True)
class Finished:
    """One row's result: a prediction, or the error that sends it to the fallback ladder."""

    tag: Hashable
    prediction: Prediction | None
    error: ModelCallError | None


@dataclass(slots=True)
class _Queued:
    tag: Hashable
    inputs: Mapping[str, float]
    queued_at: float
    deadline: float


@dataclass(slots=True)
class _Call:
    rows: list[_Queued]
    future: grpc.Future
    sent_at: float
    probe: bool = False


class PipelinedPredictClient:
    def __init__(
        self,
        config: ServingConfig,
        *,
        channel: grpc.Channel | None = None,
        breaker: CircuitBreaker | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_call: Callable[[float, int, Reason | None], None] | None = None,
    ) -> None:
        """``channel`` and ``breaker`` may be shared by several clients of one operator.
        ``on_call(latency_ms, rows, outcome)`` hears of every finished call."""
        self.config = config
        self._owns_channel = channel is None
        self._channel = channel or grpc.insecure_channel(config.target, options=CHANNEL_OPTIONS)
        self._stub = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self.breaker = breaker or breaker_for(config, clock)
        self._clock = clock
        self._on_call = on_call
        self._timeout_s = config.timeout_ms / 1000.0
        self._window_s = config.batch_window_ms / 1000.0
        self._max_batch = config.max_batch_size
        self._max_in_flight = config.max_in_flight_batches
        self._queue: list[_Queued] = []
        self._in_flight: deque[_Call] = deque()
        self._input_names: tuple[str, ...] | None = None

    @property
    def calls_in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def outstanding(self) -> int:
        """Rows queued or in flight: each will come back from ``add``/``poll``/``wait_all``."""
        return len(self._queue) + sum(len(call.rows) for call in self._in_flight)

    def add(self, tag: Hashable, inputs: Mapping[str, float]) -> list[Finished]:
        """Queue one row; returns whatever finished meanwhile (this row, if refused)."""
        names = tuple(sorted(inputs))
        if self._input_names is None:
            self._input_names = names
        elif names != self._input_names:
            error = ModelCallError("error", f"input names {names} differ from {self._input_names}")
            return [Finished(tag, None, error), *self._collect()]
        if not self.breaker.admits_row():
            return [Finished(tag, None, ModelCallError("unavailable", "circuit breaker open")),
                    *self._collect()]
        now = self._clock()
        self._queue.append(_Queued(tag, inputs, now, now + self._timeout_s))
        finished = self._collect()
        if len(self._queue) >= self._max_batch or not self._in_flight:
            finished += self._send()
        return finished

    def poll(self) -> list[Finished]:
        """Collect finished calls; send the queue if its window has passed or the model
        is idle."""
        finished = self._collect()
        if self._queue and (not self._in_flight or
                            self._clock() - self._queue[0].queued_at >= self._window_s):
            finished += self._send()
        return finished

    def due_in(self) -> float | None:
        """Seconds until ``poll()`` has work; None when nothing is outstanding."""
        if self._in_flight:
            due = IN_FLIGHT_POLL_S
            if self._queue:
                due = min(due, self._window_left())
            return due
        if self._queue:
            return self._window_left()
        return None

    def wait_all(self) -> list[Finished]:
        """Send everything and block until every call has finished (deadlines bound it)."""
        finished: list[Finished] = []
        while self._queue:
            finished += self._send()
        while self._in_flight:
            finished += self._finish(self._in_flight.popleft())
        return finished

    def close(self) -> None:
        for call in self._in_flight:
            call.future.cancel()
        self._in_flight.clear()
        self._queue.clear()
        if self._owns_channel:
            self._channel.close()

    # -- internals --------------------------------------------------------------------
    def _window_left(self) -> float:
        return max(0.0, self._queue[0].queued_at + self._window_s - self._clock())

    def _send(self) -> list[Finished]:
        batch = self._queue[: self._max_batch]
        del self._queue[: self._max_batch]
        now = self._clock()
        finished = [Finished(r.tag, None, ModelCallError("timeout", "deadline passed while queued"))
                    for r in batch if r.deadline <= now]
        batch = [r for r in batch if r.deadline > now]
        if not batch:
            return finished
        while len(self._in_flight) >= self._max_in_flight:  # backpressure
            finished += self._finish(self._in_flight.popleft())
            now = self._clock()
        remaining = min(r.deadline for r in batch) - now
        if remaining <= 0:
            error = ModelCallError("timeout", "deadline passed while queued")
            return finished + [Finished(r.tag, None, error) for r in batch]
        probe = self.breaker.probing
        self.breaker.batch_sent()
        try:
            request = predict_request(self.config, self._input_names or (),
                                      [r.inputs for r in batch])
            future = self._stub.Predict.future(request, timeout=remaining,
                                               wait_for_ready=probe)
        except Exception as exc:  # noqa: BLE001 - a bad row must not stop decisions
            error = ModelCallError("error", f"{type(exc).__name__}: {exc}")
            return finished + [Finished(r.tag, None, error) for r in batch]
        self._in_flight.append(_Call(batch, future, now, probe))
        return finished

    def _collect(self) -> list[Finished]:
        finished: list[Finished] = []
        if any(call.future.done() for call in self._in_flight):
            waiting: deque[_Call] = deque()
            for call in self._in_flight:
                if call.future.done():
                    finished += self._finish(call)
                else:
                    waiting.append(call)
            self._in_flight = waiting
        return finished

    def _finish(self, call: _Call) -> list[Finished]:
        """The rows of one call, blocking until it is done if it is not yet."""
        outcome: Reason | None = None
        try:
            response = call.future.result()
            scores, version = read_scores(response, len(call.rows))
        except grpc.RpcError as exc:
            error = classify_rpc_error(exc)
            if call.probe and error.reason == "timeout":
                error = probe_unanswered(error)
        except ModelCallError as exc:
            error = exc
        except Exception as exc:  # noqa: BLE001 - a bug or bad response: rows fall back
            error = ModelCallError("error", f"{type(exc).__name__}: {exc}")
        else:
            finished_at = self._clock()
            self._account(call, finished_at, None)
            size = len(call.rows)
            return [Finished(row.tag, Prediction(score, version,
                                                 (finished_at - row.queued_at) * 1000.0, size),
                             None)
                    for row, score in zip(call.rows, scores, strict=True)]
        outcome = error.reason
        self._account(call, self._clock(), outcome)
        # One instance per row: the detail is the same, the objects are not shared.
        return [Finished(row.tag, None, ModelCallError(error.reason, error.detail))
                for row in call.rows]

    def _account(self, call: _Call, finished_at: float, outcome: Reason | None) -> None:
        self.breaker.record(outcome)
        if self._on_call is not None:
            self._on_call((finished_at - call.sent_at) * 1000.0, len(call.rows), outcome)
