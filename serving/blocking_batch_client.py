"""The thread-mode model client: rows batched on the caller's thread, one blocking Predict
per batch, no thread of its own.

PyFlink's thread mode has no ``AsyncFunction``, and a Python operator there can emit
only from its own ``process_element`` and ``on_timer`` calls, on the task's thread. It
also runs every job's Python inside the TaskManager JVM (PEMJA), where Python threads
of our own are a hazard: gRPC's future-based calls start a channel-spin thread per
burst of calls, and with them the TaskManager died twice in native code (a SIGSEGV in
``PyObject_IsTrue`` under a timer callback, a fatal "GIL is released" error at job
cancel). So this client makes plain blocking calls, which gRPC runs on the calling
thread, and batches by time instead of by overlap:

- ``add(tag, inputs)`` queues a row, and sends the queue at once when it holds
  ``max_batch_size`` rows;
- ``poll()`` sends the queue once its first row has waited ``batch_window_ms``;
- ``due_in()`` says when ``poll()`` next has work, so the operator can set a timer.

A send blocks the task thread for one round trip (the GIL is released meanwhile, so
the job's other operators go on); records that arrive meanwhile wait in Flink's network
buffers and join the next batch. Each call returns its rows' results at once.

Deadlines, fallback reasons and the circuit breaker are those of the async client
(``serving/predict_calls.py``): each row has ``timeout_ms`` from being queued, the call
carries the oldest row's remaining time as its gRPC deadline, and a failure becomes
``timeout``, ``unavailable`` or ``error`` for every row of its batch. A slow model
therefore bounds this client's rate at about ``max_batch_size / timeout_ms``.
"""

from __future__ import annotations

import time
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
    predict_request,
    probe_unanswered,
    read_scores,
)
from serving.tf_protos import prediction_service_pb2_grpc


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


class BlockingBatchClient:
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
        ``on_call(latency_ms, rows, outcome)`` hears of every call made."""
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
        self._queue: list[Queued] = []
        self._input_names: tuple[str, ...] | None = None

    @property
    def outstanding(self) -> int:
        """Rows queued: each will come back from ``add``/``poll``/``flush``."""
        return len(self._queue)

    def add(self, tag: Hashable, inputs: Mapping[str, float]) -> list[Finished]:
        """Queue one row; returns the rows of a batch this completed (or this row, if
        it was refused)."""
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
        if len(self._queue) >= self._max_batch:
            return self._send()
        return []

    def poll(self) -> list[Finished]:
        """Send the queue if its first row has waited the batching window."""
        if self._queue and self._clock() - self._queue[0].queued_at >= self._window_s:
            return self._send()
        return []

    def due_in(self) -> float | None:
        """Seconds until ``poll()`` has work; None when nothing is queued."""
        if not self._queue:
            return None
        return max(0.0, self._queue[0].queued_at + self._window_s - self._clock())

    def flush(self) -> list[Finished]:
        """Send everything queued now (the end of an input)."""
        finished: list[Finished] = []
        while self._queue:
            finished += self._send()
        return finished

    def close(self) -> None:
        self._queue.clear()
        if self._owns_channel:
            self._channel.close()

    def _send(self) -> list[Finished]:
        batch = self._queue[: self._max_batch]
        del self._queue[: self._max_batch]
        started = self._clock()
        remaining = min(r.deadline for r in batch) - started
        if remaining <= 0:
            error = ModelCallError("timeout", "deadline passed while queued")
            return [Finished(r.tag, None, error) for r in batch]
        probe = self.breaker.probing
        self.breaker.batch_sent()
        try:
            request = predict_request(self.config, self._input_names or (),
                                      [r.inputs for r in batch])
            response = self._stub.Predict(request, timeout=remaining, wait_for_ready=probe)
            scores, version = read_scores(response, len(batch))
        except grpc.RpcError as exc:
            error = classify_rpc_error(exc)
            if probe and error.reason == "timeout":
                error = probe_unanswered(error)
        except ModelCallError as exc:
            error = exc
        except Exception as exc:  # noqa: BLE001 - a bug or bad response: rows fall back
            error = ModelCallError("error", f"{type(exc).__name__}: {exc}")
        else:
            finished_at = self._clock()
            self._account(started, finished_at, len(batch), None)
            return [Finished(row.tag, Prediction(score, version,
                                                 (finished_at - row.queued_at) * 1000.0,
                                                 len(batch)), None)
                    for row, score in zip(batch, scores, strict=True)]
        self._account(started, self._clock(), len(batch), error.reason)
        # One instance per row: the detail is the same, the objects are not shared.
        return [Finished(row.tag, None, ModelCallError(error.reason, error.detail))
                for row in batch]

    def _account(self, started: float, finished_at: float, rows: int,
                 outcome: Reason | None) -> None:
        self.breaker.record(outcome)
        if self._on_call is not None:
            self._on_call((finished_at - started) * 1000.0, rows, outcome)
