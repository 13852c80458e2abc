"""PipelinedBatchClient against an in-process fake PredictionService (real generated
stubs, a sync gRPC server on loopback), through its real relay process. No Flink."""

from __future__ import annotations

import threading
import time
from typing import Any

import grpc
import pytest

from rtd_core.config import ServingConfig
from serving.pipelined_batch_client import Finished, PipelinedBatchClient
from tests.unit.fake_predictions import SERVER_THREADS, fake_server, socket_port

pytestmark = pytest.mark.unit


def config(port: int, **overrides: Any) -> ServingConfig:
    values: dict[str, Any] = {"host": "127.0.0.1", "port": port, "timeout_ms": 2_000,
                              "batch_window_ms": 0.0, "max_batch_size": 64,
                              "max_in_flight": 1, "min_call_interval_ms": 0.0}
    values.update(overrides)
    return ServingConfig(**values)


def row(amount: float) -> dict[str, float]:
    return {"amount": amount, "card_txn_count_1m": 1.0}


def drive(client: PipelinedBatchClient, timeout_s: float = 10.0) -> list[Finished]:
    """What an operator's timers do: poll when due, until nothing is queued or out."""
    finished: list[Finished] = []
    deadline = time.monotonic() + timeout_s
    while client.outstanding and time.monotonic() < deadline:
        time.sleep(client.due_in() or 0)
        finished += client.poll()
    return finished


def test_rows_come_back_with_their_tags_and_scores() -> None:
    with fake_server() as (service, port):
        client = PipelinedBatchClient(config(port, batch_window_ms=5.0))
        assert [f for i in range(10) for f in client.add(f"r{i}", row(float(i)))] == []
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
    assert client.due_in() is None and client.outstanding == 0


def test_the_caller_goes_on_while_a_call_is_out_and_rows_pile_into_the_next_call() -> None:
    """Rows per call grow with load: what arrives during a call rides in the next."""
    with fake_server() as (service, port):
        service.delay_s = 0.3
        client = PipelinedBatchClient(config(port))
        assert client.add("first", row(1.0)) == []
        assert client.poll() == []  # sent; its answer cannot be back yet
        for i in range(30):
            assert client.add(i, row(2.0)) == []
            assert client.poll() == []  # the one call slot is taken: these wait
        assert client.outstanding == 31
        finished = drive(client)
        client.close()
    assert service.batch_sizes == [1, 30]
    assert service.max_concurrent == 1
    assert sorted(map(str, (f.tag for f in finished))) == sorted(
        ["first", *map(str, range(30))])
    assert all(f.prediction is not None for f in finished)


def test_a_short_call_waits_the_interval_since_the_last_so_rows_gather() -> None:
    """Rows per call grow with load with a slot free too: a call short of a full batch
    starts ``min_call_interval_ms`` after the last one at the soonest."""
    now = [0.0]
    with fake_server() as (service, port):
        client = PipelinedBatchClient(config(port, max_in_flight=2, min_call_interval_ms=300.0),
                                      clock=lambda: now[0])
        finished = client.add("a", row(1.0)) + client.poll()  # the first goes at once
        now[0] = 0.1
        finished += client.add("b", row(2.0)) + client.poll()
        assert client.due_in() is not None
        finished += client.add("c", row(3.0)) + client.poll()
        assert client.outstanding == 3
        now[0] = 0.3001
        finished += client.poll()  # b and c, together
        finished += client.flush()
        client.close()
    assert sorted(service.batch_sizes) == [1, 2]  # two calls out at once: either first
    assert sorted(f.tag for f in finished) == ["a", "b", "c"]
    assert all(f.prediction is not None for f in finished)


def test_a_full_batch_with_every_slot_taken_waits_for_an_answer() -> None:
    """Back-pressure: the queue never holds more than a batch beyond the calls out."""
    with fake_server() as (service, port):
        client = PipelinedBatchClient(config(port, max_batch_size=4, max_in_flight=2,
                                             batch_window_ms=10_000))
        service.delay_s = 0.05
        finished = [f for i in range(12) for f in client.add(i, row(1.0))]
        finished += client.flush()
        client.close()
    assert service.batch_sizes == [4, 4, 4]
    assert sorted(f.tag for f in finished) == list(range(12))  # type: ignore[type-var]


def test_no_python_thread_is_started_in_the_calling_process() -> None:
    """Thread mode's embedded interpreter crashed with gRPC's channel-spin threads: the
    calls are made by the relay process."""
    with fake_server() as (_service, port):
        client = PipelinedBatchClient(config(port))
        before = {t.ident for t in threading.enumerate()}
        for i in range(20):
            client.add(i, row(1.0))
            client.poll()
        assert len(drive(client)) == 20
        started = [t.name for t in threading.enumerate() if t.ident not in before
                   and not t.name.startswith(SERVER_THREADS)]
        client.close()
    assert not started


def test_a_slow_server_times_out_on_the_rows_deadline() -> None:
    with fake_server() as (service, port):
        service.delay_s = 1.0
        client = PipelinedBatchClient(config(port, timeout_ms=100))
        client.add("slow", row(1.0))
        finished = drive(client)
        client.close()
    assert [(f.tag, f.prediction, f.error and f.error.reason) for f in finished] == [
        ("slow", None, "timeout")]
    assert client.breaker.state == "closed"  # slowness is not unavailability


def test_an_unreachable_server_opens_the_breaker_and_then_refuses_rows_at_once() -> None:
    with socket_port() as port:
        client = PipelinedBatchClient(config(port, timeout_ms=500,
                                             breaker_failure_threshold=2, breaker_reset_s=30))
        reasons = []
        for i in range(2):
            client.add(i, row(1.0))
            reasons += [f.error.reason for f in drive(client) if f.error]
        assert reasons == ["unavailable", "unavailable"]
        assert client.breaker.state == "open"
        refused = client.add("late", row(1.0))
        client.close()
    assert [(f.tag, f.error and f.error.reason, f.error and f.error.detail) for f in refused] == [
        ("late", "unavailable", "circuit breaker open")]


def test_server_errors_are_errors_and_do_not_open_the_breaker() -> None:
    with fake_server() as (service, port):
        service.fail_code = grpc.StatusCode.INVALID_ARGUMENT
        client = PipelinedBatchClient(config(port, batch_window_ms=1.0,
                                             breaker_failure_threshold=1))
        client.add("a", row(1.0))
        client.add("b", row(2.0))
        finished = drive(client)
        client.close()
    assert sorted((f.tag, f.error.reason) for f in finished if f.error) == [
        ("a", "error"), ("b", "error")]
    assert "INVALID_ARGUMENT" in finished[0].error.detail  # type: ignore[union-attr]
    assert client.breaker.state == "closed"


def test_a_relay_that_dies_fails_its_calls_as_unavailable_and_is_started_again() -> None:
    with fake_server() as (service, port):
        service.delay_s = 0.3
        client = PipelinedBatchClient(config(port))
        client.add("lost", row(1.0))
        client.poll()
        relay = client._relay
        assert relay is not None
        relay.process.kill()
        lost = drive(client)
        service.delay_s = 0.0
        client.add("after", row(2.0))
        after = drive(client)
        client.close()
    assert [(f.tag, f.error and f.error.reason) for f in lost] == [("lost", "unavailable")]
    assert [(f.tag, f.prediction is not None) for f in after] == [("after", True)]


def test_on_call_hears_every_call_with_its_rows() -> None:
    calls: list[tuple[float, int, str | None]] = []
    with fake_server() as (_service, port):
        client = PipelinedBatchClient(config(port, max_batch_size=3, batch_window_ms=10_000),
                                      on_call=lambda ms, n, o: calls.append((ms, n, o)))
        for i in range(5):
            client.add(i, row(1.0))
        client.flush()
        client.close()
    assert [(n, o) for _, n, o in calls] == [(3, None), (2, None)]
    assert all(ms >= 0 for ms, _, _ in calls)


def test_max_in_flight_0_waits_for_each_answer_like_a_blocking_call() -> None:
    with fake_server() as (service, port):
        service.delay_s = 0.05
        client = PipelinedBatchClient(config(port, max_in_flight=0))
        client.add("a", row(1.0))
        answered = client.poll()  # sent and waited for
        client.add("b", row(2.0))
        client.add("c", row(3.0))
        rest = client.poll()
        client.close()
    assert [(f.tag, f.prediction is not None) for f in answered] == [("a", True)]
    assert sorted(f.tag for f in rest) == ["b", "c"]  # type: ignore[type-var]
    assert sorted(service.batch_sizes) == [1, 2]  # two calls out at once: either first


def test_rows_starved_behind_busy_slots_make_the_caller_wait_instead_of_timing_out() -> None:
    """A slow model back-pressures the caller: queued rows do not run out of time."""
    with fake_server() as (service, port):
        service.delay_s = 0.15
        client = PipelinedBatchClient(config(port, timeout_ms=400, max_batch_size=64))
        client.add("first", row(1.0))
        client.poll()  # the one slot is taken for 150 ms
        client.add("queued", row(2.0))
        time.sleep(0.05)  # past a tenth of its 400 ms deadline, behind the busy slot
        finished = client.poll()  # waits for the slot, then sends "queued"
        finished += drive(client)
        client.close()
    assert sorted((f.tag, f.prediction is not None) for f in finished) == [  # type: ignore[type-var]
        ("first", True), ("queued", True)]
    assert service.batch_sizes == [1, 1]


def test_a_model_slower_than_its_deadline_does_not_hold_the_caller() -> None:
    """Once calls time out, rows wait in the queue and fall back on their own deadline:
    waiting for a slot would hold the caller for a timed-out call per batch."""
    with fake_server() as (service, port):
        service.delay_s = 2.0
        client = PipelinedBatchClient(config(port, timeout_ms=500, max_batch_size=4,
                                             max_in_flight=1))
        client.add("first", row(1.0))
        client.poll()  # out; it will time out
        finished = drive(client, timeout_s=5.0)
        assert [f.error and f.error.reason for f in finished] == ["timeout"]
        client.add("second", row(1.0))
        client.poll()  # the slot is taken again, by a call that will time out
        returned = []
        for i in range(12):  # three full batches behind the busy slot
            returned += client.add(i, row(2.0))
            returned += client.poll()
        # Had the caller waited for the slot, it would have waited for "second" to
        # time out, and got it back here.
        assert returned == [] and client.outstanding == 13
        finished = drive(client, timeout_s=5.0)
        client.close()
    assert sorted(map(str, (f.tag for f in finished))) == sorted(
        ["second", *map(str, range(12))])
    assert all(f.prediction is None and f.error and f.error.reason == "timeout"
               for f in finished)


def test_rows_expiring_unsent_do_not_make_the_caller_wait_for_a_timed_out_model() -> None:
    """Rows that ran out of time in the queue are not a call: they say nothing of the
    server, so the caller goes on not waiting behind calls that time out (had it waited,
    every full batch would hold the task thread for a call's deadline)."""
    with fake_server() as (service, port):
        service.delay_s = 2.0
        client = PipelinedBatchClient(config(port, timeout_ms=300, max_batch_size=4,
                                             max_in_flight=1))
        client.add("first", row(1.0))
        client.poll()
        assert [f.error and f.error.reason for f in drive(client, timeout_s=5.0)] == [
            "timeout"]
        client.add("second", row(1.0))
        client.poll()  # out, and it will time out
        for i in range(4):  # a full batch behind the busy slot: queued, not waited for
            assert client.add(f"queued-{i}", row(2.0)) == []
        time.sleep(0.45)  # "second" timed out at the server, the queued rows expired
        expired = client.poll()
        assert sorted(map(str, (f.tag for f in expired))) == [
            "queued-0", "queued-1", "queued-2", "queued-3", "second"]
        client.add("third", row(1.0))
        client.poll()  # out, and it will time out
        returned = []
        for i in range(4):
            returned += client.add(i, row(2.0))
        # Had the expired rows cleared what the timed-out "second" taught, the full
        # batch would have waited for "third" to time out and got it back here.
        assert returned == [] and client.outstanding == 5
        finished = drive(client, timeout_s=5.0)
        client.close()
    assert sorted(map(str, (f.tag for f in finished))) == ["0", "1", "2", "3", "third"]
    assert all(f.error and f.error.reason == "timeout" for f in expired + finished)


def test_a_call_the_client_gave_up_on_itself_does_not_end_a_latency_spike() -> None:
    """Only an answer says the server is back: a call dropped for an answer later than
    its deadline plus the pipe's grace (a starved relay on a loaded machine) leaves the
    caller not waiting behind calls that time out."""
    skew = [0.0]  # how far the client's clock runs ahead: its answers look late

    def clock() -> float:
        return time.monotonic() + skew[0]

    with fake_server() as (service, port):
        service.delay_s = 2.0
        client = PipelinedBatchClient(config(port, timeout_ms=300, max_batch_size=4,
                                             max_in_flight=1), clock=clock)
        client.add("first", row(1.0))
        client.poll()
        assert [f.error and f.error.reason for f in drive(client, timeout_s=5.0)] == [
            "timeout"]  # at the server: the caller stops waiting for slots
        client.add("second", row(1.0))
        client.poll()  # out
        skew[0] = 1.0  # long past its deadline before the relay says anything
        given_up = client.poll()
        assert [(f.tag, f.error and f.error.detail) for f in given_up] == [
            ("second", "no answer within the call's deadline")]
        client.add("third", row(1.0))
        client.poll()  # out, and it will time out
        returned = []
        for i in range(4):  # a full batch behind the busy slot
            returned += client.add(i, row(2.0))
        assert returned == [] and client.outstanding == 5
        finished = drive(client, timeout_s=5.0)
        client.close()
    assert sorted(map(str, (f.tag for f in finished))) == ["0", "1", "2", "3", "third"]

