"""PipelinedPredictClient against an in-process fake PredictionService (real generated stubs,
a sync gRPC server on loopback). No TensorFlow, no Flink."""

from __future__ import annotations

import time
from typing import Any

import grpc
import pytest

from rtd.config import ServingConfig
from serving.pipelined_client import Finished, PipelinedPredictClient
from tests.unit.fake_predictions import fake_server, socket_port

pytestmark = pytest.mark.unit


def config(port: int, **overrides: Any) -> ServingConfig:
    values: dict[str, Any] = {"host": "127.0.0.1", "port": port, "timeout_ms": 1_000,
                              "batch_window_ms": 5.0, "max_batch_size": 64}
    values.update(overrides)
    return ServingConfig(**values)


def row(amount: float) -> dict[str, float]:
    return {"amount": amount, "card_txn_count_1m": 1.0}


def drive(client: PipelinedPredictClient, timeout_s: float = 5.0) -> list[Finished]:
    """What an operator's timer does: poll when due, until nothing is outstanding."""
    finished: list[Finished] = []
    deadline = time.monotonic() + timeout_s
    while client.outstanding and time.monotonic() < deadline:
        due = client.due_in()
        time.sleep(due or 0)
        finished += client.poll()
    return finished


def test_an_idle_client_sends_at_once_and_rows_batch_up_while_a_call_is_out() -> None:
    with fake_server() as (service, port):
        service.delay_s = 0.05
        client = PipelinedPredictClient(config(port, batch_window_ms=1_000))
        early = [f for i in range(10) for f in client.add(f"r{i}", row(float(i)))]
        assert early == [] and client.outstanding == 10
        assert client.calls_in_flight == 1  # r0 went out alone, at once
        assert 0 < (client.due_in() or 0) <= 0.001  # polling for the call in flight
        finished = drive(client)
        client.close()
    assert service.batch_sizes == [1, 9]  # r1..r9 waited for the model, not the window
    by_tag = {f.tag: f for f in finished}
    assert sorted(by_tag) == sorted(f"r{i}" for i in range(10))
    for i in range(10):
        prediction = by_tag[f"r{i}"].prediction
        assert prediction is not None and by_tag[f"r{i}"].error is None
        assert prediction.score == pytest.approx(i / 1000.0)
        assert prediction.model_version == 5
        assert prediction.batch_size == (1 if i == 0 else 9)
        assert prediction.latency_ms >= (50.0 if i == 0 else 100.0)
    assert client.due_in() is None and client.outstanding == 0


def test_a_queue_waits_for_its_window_while_the_model_is_busy() -> None:
    with fake_server() as (service, port):
        service.delay_s = 1.0
        client = PipelinedPredictClient(config(port, batch_window_ms=20, timeout_ms=3_000))
        client.add("first", row(1.0))
        client.add("second", row(2.0))
        assert client.poll() == [] and client.calls_in_flight == 1
        assert 0 < (client.due_in() or 0) <= 0.001
        time.sleep(0.03)  # the second row's window has passed: it goes out, model busy or not
        assert client.poll() == []
        assert client.calls_in_flight == 2 and client.outstanding == 2
        client.close()


def test_full_batches_go_out_at_once_and_calls_overlap_up_to_the_cap() -> None:
    with fake_server() as (service, port):
        service.delay_s = 0.2
        client = PipelinedPredictClient(config(port, max_batch_size=4, max_in_flight_batches=2,
                                               batch_window_ms=1_000))
        started = time.monotonic()
        for i in range(5):  # r0 alone (idle), then a full batch of four: both in flight
            assert client.add(i, row(1.0)) == []
        assert time.monotonic() - started < 0.1
        finished = []
        for i in range(5, 9):  # the next full batch must wait for the oldest call
            finished += client.add(i, row(1.0))
        assert time.monotonic() - started >= 0.2
        assert 0 in {f.tag for f in finished}
        rest = drive(client)
        client.close()
    assert sorted(f.tag for f in finished + rest) == list(range(9))
    assert sorted(service.batch_sizes) == [1, 4, 4]
    assert service.max_concurrent == 2


def test_a_slow_server_times_out_on_the_rows_deadline_without_blocking_add() -> None:
    with fake_server() as (service, port):
        service.delay_s = 1.0
        client = PipelinedPredictClient(config(port, timeout_ms=100, batch_window_ms=0))
        started = time.monotonic()
        assert client.add("slow", row(1.0)) == []
        assert time.monotonic() - started < 0.05
        finished = drive(client)
        elapsed = time.monotonic() - started
        client.close()
    assert [(f.tag, f.prediction, f.error and f.error.reason) for f in finished] == [
        ("slow", None, "timeout")]
    assert 0.09 < elapsed < 0.5
    assert client.breaker.state == "closed"  # slowness is not unavailability


def test_an_unreachable_server_opens_the_breaker_and_then_refuses_rows_at_once() -> None:
    with socket_port() as port:
        client = PipelinedPredictClient(config(port, timeout_ms=500, batch_window_ms=0,
                                               breaker_failure_threshold=2,
                                               breaker_reset_s=30))
        reasons = []
        for i in range(2):
            client.add(i, row(1.0))
            reasons += [f.error.reason for f in drive(client) if f.error]
        assert reasons == ["unavailable", "unavailable"]
        assert client.breaker.state == "open"
        started = time.monotonic()
        refused = client.add("late", row(1.0))
        assert time.monotonic() - started < 0.01
        client.close()
    assert [(f.tag, f.error and f.error.reason, f.error and f.error.detail) for f in refused] == [
        ("late", "unavailable", "circuit breaker open")]


def test_the_probe_waits_for_a_connection_and_a_healed_server_closes_the_breaker() -> None:
    with socket_port() as port:
        pass  # free again: nobody listens until the server below starts
    client = PipelinedPredictClient(config(port, timeout_ms=400, batch_window_ms=0,
                                           breaker_failure_threshold=1, breaker_reset_s=0.2))
    client.add("down", row(1.0))
    assert [f.error.reason for f in drive(client) if f.error] == ["unavailable"]
    assert client.breaker.state == "open"
    time.sleep(0.25)
    client.add("probe-while-down", row(1.0))  # waits for a connection that never comes
    probe = drive(client)
    assert [(f.tag, f.error and f.error.reason) for f in probe] == [
        ("probe-while-down", "unavailable")]  # never connected: not a "timeout"
    assert client.breaker.state == "open"
    with fake_server(port) as (_service, _port):
        time.sleep(0.25)
        client.add("probe-healed", row(3.0))
        healed = drive(client)
        after = client.add("after", row(4.0)) + drive(client)
        client.close()
    assert [(f.tag, f.prediction is not None) for f in healed] == [("probe-healed", True)]
    assert [(f.tag, f.prediction is not None) for f in after] == [("after", True)]
    assert client.breaker.state == "closed"


def test_server_errors_are_errors_and_do_not_open_the_breaker() -> None:
    with fake_server() as (service, port):
        service.fail_code = grpc.StatusCode.INVALID_ARGUMENT
        client = PipelinedPredictClient(config(port, batch_window_ms=0,
                                               breaker_failure_threshold=1))
        client.add("a", row(1.0))
        client.add("b", row(2.0))
        finished = drive(client)
        client.close()
    assert sorted((f.tag, f.error.reason) for f in finished if f.error) == [
        ("a", "error"), ("b", "error")]
    assert "INVALID_ARGUMENT" in finished[0].error.detail  # type: ignore[union-attr]
    assert client.breaker.state == "closed"


def test_rows_with_other_input_names_are_refused_as_errors() -> None:
    with fake_server() as (_service, port):
        client = PipelinedPredictClient(config(port))
        client.add("ok", row(1.0))
        refused = client.add("odd", {"amount": 1.0})
        rest = client.wait_all()
        client.close()
    assert [(f.tag, f.error and f.error.reason) for f in refused] == [("odd", "error")]
    assert [(f.tag, f.prediction is not None) for f in rest] == [("ok", True)]


def test_on_call_hears_every_finished_call() -> None:
    calls: list[tuple[float, int, str | None]] = []
    with fake_server() as (service, port):
        service.delay_s = 0.05
        client = PipelinedPredictClient(config(port, max_batch_size=3),
                                        on_call=lambda ms, n, o: calls.append((ms, n, o)))
        for i in range(5):  # r0 alone; r1-r3 a full batch; r4 left queued
            client.add(i, row(1.0))
        client.wait_all()
        client.close()
    assert [(n, o) for _, n, o in calls] == [(1, None), (3, None), (1, None)]
    assert all(ms >= 0 for ms, _, _ in calls)
