"""What both model clients share: one batched TF Serving ``Predict`` call and its failures.

The async client (``serving/batching_client.py``, for PyFlink's process mode) and the
pipelined batch client (``serving/pipelined_batch_client.py``, for thread mode) differ
only in how they wait. The request they send, how they read the answer, how a gRPC
status becomes a fallback reason and when the circuit breaker opens are here, once.

The request is plain TF Serving API (``model_spec`` name / signature / optional
version, ``output_filter=["score"]``, one float tensor per input), and the answering
version is read from the response's ``model_spec``, so both clients work against the
``tensorflow/serving`` image as is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import grpc

from rtd_core.config import ServingConfig
from serving.model_signature import SCORE_OUTPUT
from serving.predict_relay import CHANNEL_OPTIONS  # noqa: F401 - the clients import it here
from serving.tf_protos import make_tensor, predict_pb2, tensor_to_floats

Reason = Literal["timeout", "unavailable", "error"]
REASONS: tuple[Reason, ...] = ("timeout", "unavailable", "error")



class ModelCallError(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason: Reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Prediction:
    score: float
    model_version: int
    latency_ms: float  # from the row being queued to its result, batching wait included
    batch_size: int  # rows in the Predict call this row rode in


def predict_request(serving: ServingConfig, input_names: Sequence[str],
                    rows: Sequence[Mapping[str, float]]) -> predict_pb2.PredictRequest:
    """One ``PredictRequest`` for ``rows``: a [len(rows)] float tensor per input name."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = serving.model_name
    request.model_spec.signature_name = serving.signature_name
    if serving.model_version is not None:
        request.model_spec.version.value = serving.model_version
    request.output_filter.append(SCORE_OUTPUT)
    for name in input_names:
        request.inputs[name].CopyFrom(make_tensor([row[name] for row in rows]))
    return request


def read_scores(response: predict_pb2.PredictResponse, rows: int) -> tuple[list[float], int]:
    """(scores, answering model version); ``ModelCallError("error")`` if malformed."""
    scores = tensor_to_floats(response.outputs[SCORE_OUTPUT])
    if len(scores) != rows:
        raise ModelCallError("error", f"{len(scores)} scores for {rows} rows")
    if not response.model_spec.HasField("version"):
        raise ModelCallError("error", "response carries no model_spec.version")
    return scores, int(response.model_spec.version.value)


def classify_rpc_error(exc: grpc.RpcError) -> ModelCallError:
    """A failed call's gRPC status as a fallback reason (sync and aio errors alike)."""
    code = exc.code() if hasattr(exc, "code") else None
    details = exc.details() if hasattr(exc, "details") else str(exc)
    detail = f"{getattr(code, 'name', code)}: {details}"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return ModelCallError("timeout", detail)
    if code == grpc.StatusCode.UNAVAILABLE:
        return ModelCallError("unavailable", detail)
    return ModelCallError("error", detail)


def probe_unanswered(error: ModelCallError) -> ModelCallError:
    """A half-open probe's timeout, as the unavailability it most likely still is. (Not
    told apart by watching the channel: a connectivity subscription runs a polling
    thread per channel, and in thread mode Python threads of our own are a hazard: see
    serving/pipelined_batch_client.py.)"""
    return ModelCallError("unavailable", f"probe unanswered within its deadline: "
                          f"the server is still not serving ({error.detail})")


BreakerState = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Consecutive-unavailable breaker with a single-batch half-open probe.

    After ``failure_threshold`` consecutive unavailable calls it opens: rows fail at
    once, without waiting on the network, for ``reset_s``; then one batch is let through
    as a probe, and its success closes the breaker again. Clients send the probe with
    gRPC's ``wait_for_ready``: after an outage the channel may still be backing off
    between reconnection attempts, and a probe that failed fast then would keep a healed
    server's breaker open for another ``reset_s``. A probe that gets no answer within its
    deadline counts as ``unavailable`` (``probe_unanswered``): it was sent because the
    server could not be reached, and waiting for a connection is most of what it did."""

    def __init__(self, failure_threshold: int, reset_s: float, clock: Callable[[], float]) -> None:
        self.failure_threshold = max(1, failure_threshold)
        self.reset_s = reset_s
        self._clock = clock
        self.state: BreakerState = "closed"
        self._consecutive = 0
        self._opened_at = 0.0
        self._probe_sent = False

    def admits_row(self) -> bool:
        """Whether a new row may be queued; an expired open breaker turns half-open here."""
        if self.state == "open" and self._clock() - self._opened_at >= self.reset_s:
            self.state, self._probe_sent = "half_open", False
        if self.state == "half_open":
            return not self._probe_sent  # rows join the probe batch until it is sent
        return self.state == "closed"

    @property
    def probing(self) -> bool:
        """The next batch sent is the half-open probe."""
        return self.state == "half_open" and not self._probe_sent

    def batch_sent(self) -> None:
        if self.state == "half_open":
            self._probe_sent = True

    def record(self, outcome: Reason | None) -> bool:
        """Account one finished call (None: success); True when this opened the breaker."""
        if outcome is None or outcome == "error":  # the server answered: it is reachable
            self.state, self._consecutive = "closed", 0
            return False
        if outcome == "unavailable":
            self._consecutive += 1
        if self.state == "half_open" or (
            self.state == "closed" and self._consecutive >= self.failure_threshold
        ):
            self.state, self._opened_at = "open", self._clock()
            return True
        return False


def breaker_for(serving: ServingConfig, clock: Callable[[], float]) -> CircuitBreaker:
    return CircuitBreaker(serving.breaker_failure_threshold, serving.breaker_reset_s, clock)
