"""BlockingBatchClient against an in-process fake PredictionService (real generated stubs,
a sync gRPC server on loopback). No TensorFlow, no Flink."""

from __future__ import annotations

import threading
import time
from typing import Any

import grpc
import pytest

from rtd.config import ServingConfig
from serving.blocking_batch_client import BlockingBatchClient, Finished
from tests.unit.fake_predictions import SERVER_THREADS, fake_server, socket_port

pytestmark = pytest.mark.unit


def config(port: int, **overrides: Any) -> ServingConfig:
    values: dict[str, Any] = {"host": "127.0.0.1", "port": port, "timeout_ms": 1_000,
                              "batch_window_ms": 5.0, "max_batch_size": 64}
    values.update(overrides)
    return ServingConfig(**values)


def row(amount: float) -> dict[str, float]:
    return {"amount": amount, "card_txn_count_1m": 1.0}


def drive(client: BlockingBatchClient, timeout_s: float = 5.0) -> list[Finished]:
    """What an operator's timer does: poll when due, until nothing is queued."""
    finished: list[Finished] = []
    deadline = time.monotonic() + timeout_s
    while client.outstanding and time.monotonic() < deadline:
        time.sleep(client.due_in() or 0)
        finished += client.poll()
    return finished


def test_rows_within_the_window_share_one_call_and_come_back_with_their_tags() -> None:
    with fake_server() as (service, port):
        client = BlockingBatchClient(config(port))
        early = [f for i in range(10) for f in client.add(f"r{i}", row(float(i)))]
        assert early == [] and client.outstanding == 10
        assert client.poll() == []  # the window has not passed
        assert 0 < (client.due_in() or 0) <= 0.005
        finished = drive(client)
        client.close()
    assert service.batch_sizes == [10]
    by_tag = {f.tag: f for f in finished}
    assert sorted(by_tag) == sorted(f"r{i}" for i in range(10))
    for i in range(10):
        prediction = by_tag[f"r{i}"].prediction
        assert prediction is not None and by_tag[f"r{i}"].error is None
        assert prediction.score == pytest.approx(i / 1000.0)
        assert prediction.model_version == 5 and prediction.batch_size == 10
        assert prediction.latency_ms >= 5.0  # it waited for the window
    assert client.due_in() is None and client.outstanding == 0


def test_a_full_batch_is_sent_at_once_and_answers_on_return() -> None:
    with fake_server() as (service, port):
        client = BlockingBatchClient(config(port, max_batch_size=4, batch_window_ms=10_000))
        assert [client.add(i, row(1.0)) for i in range(3)] == [[], [], []]
        finished = client.add(3, row(1.0))
        assert sorted(f.tag for f in finished) == [0, 1, 2, 3]
        assert all(f.prediction is not None for f in finished)
        client.add(4, row(1.0))
        rest = client.flush()  # the end of an input: no waiting for the window
        client.close()
    assert [f.tag for f in rest] == [4]
    assert service.batch_sizes == [4, 1]


def test_no_python_thread_is_started_by_a_call() -> None:
    """Thread mode's embedded interpreter crashed with gRPC's channel-spin threads."""
    with fake_server() as (_service, port):
        client = BlockingBatchClient(config(port, batch_window_ms=0))
        client.add("warm-up", row(1.0))
        client.poll()
        before = {t.ident for t in threading.enumerate()}
        for i in range(20):
            client.add(i, row(1.0))
            assert len(client.poll()) == 1
        started = [t.name for t in threading.enumerate() if t.ident not in before
                   and not t.name.startswith(SERVER_THREADS)]
        client.close()
    assert not started


def test_a_slow_server_times_out_on_the_rows_deadline() -> None:
    with fake_server() as (service, port):
        service.delay_s = 1.0
        client = BlockingBatchClient(config(port, timeout_ms=100, batch_window_ms=0))
        started = time.monotonic()
        client.add("slow", row(1.0))
        finished = client.poll()
        elapsed = time.monotonic() - started
        client.close()
    assert [(f.tag, f.prediction, f.error and f.error.reason) for f in finished] == [
        ("slow", None, "timeout")]
    assert 0.09 < elapsed < 0.5
    assert client.breaker.state == "closed"  # slowness is not unavailability


def test_a_row_whose_deadline_passed_while_queued_is_not_sent() -> None:
    with fake_server() as (service, port):
        client = BlockingBatchClient(config(port, timeout_ms=20, batch_window_ms=50))
        client.add("stale", row(1.0))
        time.sleep(0.06)
        finished = client.poll()
        client.close()
    assert [(f.tag, f.error and f.error.reason) for f in finished] == [("stale", "timeout")]
    assert service.batch_sizes == []


def test_an_unreachable_server_opens_the_breaker_and_then_refuses_rows_at_once() -> None:
    with socket_port() as port:
        client = BlockingBatchClient(config(port, timeout_ms=500, batch_window_ms=0,
                                            breaker_failure_threshold=2, breaker_reset_s=30))
        reasons = []
        for i in range(2):
            client.add(i, row(1.0))
            reasons += [f.error.reason for f in client.poll() if f.error]
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
    client = BlockingBatchClient(config(port, timeout_ms=400, batch_window_ms=0,
                                        breaker_failure_threshold=1, breaker_reset_s=0.2))
    client.add("down", row(1.0))
    assert [f.error.reason for f in client.poll() if f.error] == ["unavailable"]
    assert client.breaker.state == "open"
    time.sleep(0.25)
    client.add("probe-while-down", row(1.0))  # waits for a connection that never comes
    probe = client.poll()
    assert [(f.tag, f.error and f.error.reason) for f in probe] == [
        ("probe-while-down", "unavailable")]  # unanswered: still unavailable
    assert client.breaker.state == "open"
    with fake_server(port) as (_service, _port):
        time.sleep(0.25)
        client.add("probe-healed", row(3.0))
        healed = client.poll()
        client.add("after", row(4.0))
        after = client.poll()
        client.close()
    assert [(f.tag, f.prediction is not None) for f in healed] == [("probe-healed", True)]
    assert [(f.tag, f.prediction is not None) for f in after] == [("after", True)]
    assert client.breaker.state == "closed"


def test_server_errors_are_errors_and_do_not_open_the_breaker() -> None:
    with fake_server() as (service, port):
        service.fail_code = grpc.StatusCode.INVALID_ARGUMENT
        client = BlockingBatchClient(config(port, batch_window_ms=0,
                                            breaker_failure_threshold=1))
        client.add("a", row(1.0))
        client.add("b", row(2.0))
        finished = client.poll()
        client.close()
    assert sorted((f.tag, f.error.reason) for f in finished if f.error) == [
        ("a", "error"), ("b", "error")]
    assert "INVALID_ARGUMENT" in finished[0].error.detail  # type: ignore[union-attr]
    assert client.breaker.state == "closed"


def test_rows_with_other_input_names_are_refused_as_errors() -> None:
    with fake_server() as (_service, port):
        client = BlockingBatchClient(config(port))
        client.add("ok", row(1.0))
        refused = client.add("odd", {"amount": 1.0})
        rest = client.flush()
        client.close()
    assert [(f.tag, f.error and f.error.reason) for f in refused] == [("odd", "error")]
    assert [(f.tag, f.prediction is not None) for f in rest] == [("ok", True)]


def test_on_call_hears_every_call() -> None:
    calls: list[tuple[float, int, str | None]] = []
    with fake_server() as (_service, port):
        client = BlockingBatchClient(config(port, max_batch_size=3),
                                     on_call=lambda ms, n, o: calls.append((ms, n, o)))
        for i in range(5):
            client.add(i, row(1.0))
        client.flush()
        client.close()
    assert [(n, o) for _, n, o in calls] == [(3, None), (2, None)]
    assert all(ms >= 0 for ms, _, _ in calls)
