"""BatchingPredictClient against an in-process fake PredictionService (real generated stubs).

No TensorFlow and no model: the fake scores each row as amount / 1000 and can be told to
be slow or to fail with a given status code.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import grpc
import pytest

from rtd_core.config import ServingConfig
from serving.batching_client import BatchingPredictClient, ModelCallError, Prediction
from serving.tf_protos import predict_pb2, prediction_service_pb2_grpc
from tests.unit.fake_predictions import amounts_of, score_response

pytestmark = pytest.mark.unit


class FakePredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self) -> None:
        self.batch_sizes: list[int] = []
        self.requests: list[predict_pb2.PredictRequest] = []
        self.delay_s = 0.0
        self.fail_code: grpc.StatusCode | None = None
        self.version = 3
        self.answered = 0  # calls whose delay ran out and that then answered or failed

    async def Predict(self, request: Any, context: Any) -> Any:
        self.requests.append(request)
        self.batch_sizes.append(len(amounts_of(request)))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        self.answered += 1
        if self.fail_code is not None:
            await context.abort(self.fail_code, "fake failure")
        return score_response(request, self.version)


@asynccontextmanager
async def fake_server() -> AsyncIterator[tuple[FakePredictionService, int]]:
    server = grpc.aio.server()
    service = FakePredictionService()
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield service, port
    finally:
        await server.stop(grace=None)


def config(port: int, **overrides: Any) -> ServingConfig:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "timeout_ms": 1_000,
        "batch_window_ms": 5.0,
        "max_batch_size": 64,
    }
    values.update(overrides)
    return ServingConfig(**values)


def row(amount: float) -> dict[str, float]:
    return {"amount": amount, "card_txn_count_1m": 1.0}


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ManualClock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def test_concurrent_callers_share_one_predict_call() -> None:
    async def scenario() -> None:
        async with fake_server() as (service, port):
            client = BatchingPredictClient(config(port))  # built outside any loop use
            results = await asyncio.gather(*(client.predict(row(float(i))) for i in range(10)))
            await client.close()
        assert service.batch_sizes == [10]
        assert [r.score for r in results] == pytest.approx([i / 1000.0 for i in range(10)])
        assert all(r.model_version == 3 and r.batch_size == 10 for r in results)
        assert all(isinstance(r, Prediction) and r.latency_ms >= 0 for r in results)
        assert client.counters.calls == 1 and client.counters.rows == 10
        assert client.counters.rows_per_call == 10

    run(scenario)


def test_batch_is_capped_at_max_batch_size() -> None:
    async def scenario() -> None:
        async with fake_server() as (service, port):
            client = BatchingPredictClient(config(port, max_batch_size=4))
            results = await asyncio.gather(*(client.predict(row(float(i))) for i in range(10)))
            await client.close()
        assert sorted(service.batch_sizes) == [2, 4, 4]
        assert [r.score for r in results] == pytest.approx([i / 1000.0 for i in range(10)])

    run(scenario)


def test_rows_within_the_window_coalesce_and_later_rows_do_not() -> None:
    async def scenario() -> None:
        async with fake_server() as (service, port):
            client = BatchingPredictClient(config(port, batch_window_ms=300.0))
            first = asyncio.ensure_future(client.predict(row(1.0)))
            await asyncio.sleep(0.02)
            second = asyncio.ensure_future(client.predict(row(2.0)))
            await asyncio.gather(first, second)
            await client.predict(row(3.0))
            await client.close()
        assert service.batch_sizes == [2, 1]

    run(scenario)


def test_request_names_model_signature_version_and_score_output() -> None:
    async def scenario() -> None:
        async with fake_server() as (service, port):
            client = BatchingPredictClient(config(port, model_version=7, model_name="m"))
            await client.predict(row(5.0))
            await client.close()
        request = service.requests[0]
        assert request.model_spec.name == "m"
        assert request.model_spec.signature_name == "serving_default"
        assert request.model_spec.version.value == 7
        assert list(request.output_filter) == ["score"]
        assert set(request.inputs) == {"amount", "card_txn_count_1m"}

    run(scenario)


def test_slow_server_times_out_on_the_client_deadline() -> None:
    async def scenario() -> None:
        async with fake_server() as (service, port):
            service.delay_s = 5.0
            client = BatchingPredictClient(config(port, timeout_ms=100))
            with pytest.raises(ModelCallError) as caught:
                await client.predict(row(1.0))
            # The client gave up on its own deadline: the server had not answered yet.
            assert service.answered == 0 and len(service.requests) == 1
            await client.close()
        assert caught.value.reason == "timeout"
        assert client.counters.failures["timeout"] == 1
        assert client.breaker.state == "closed"  # slowness is not unavailability

    run(scenario)


def test_nothing_listening_is_unavailable() -> None:
    async def scenario() -> None:
        client = BatchingPredictClient(config(free_port(), timeout_ms=2_000))
        with pytest.raises(ModelCallError) as caught:
            await client.predict(row(1.0))
        await client.close()
        # Refused, not waited out: a call that ran to its deadline would be a timeout.
        assert caught.value.reason == "unavailable"
        assert client.counters.failures["timeout"] == 0

    run(scenario)


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        (grpc.StatusCode.UNAVAILABLE, "unavailable"),
        (grpc.StatusCode.INVALID_ARGUMENT, "error"),
        (grpc.StatusCode.INTERNAL, "error"),
        (grpc.StatusCode.NOT_FOUND, "error"),
    ],
)
def test_status_codes_map_to_fallback_reasons(code: grpc.StatusCode, reason: str) -> None:
    async def scenario() -> None:
        async with fake_server() as (service, port):
            service.fail_code = code
            client = BatchingPredictClient(config(port))
            with pytest.raises(ModelCallError) as caught:
                await client.predict(row(1.0))
            await client.close()
        assert caught.value.reason == reason
        assert code.name in caught.value.detail

    run(scenario)


def test_breaker_opens_fails_fast_then_half_open_probe_closes_it() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        async with fake_server() as (service, port):
            service.fail_code = grpc.StatusCode.UNAVAILABLE
            client = BatchingPredictClient(
                config(port, breaker_failure_threshold=2, breaker_reset_s=5.0), clock=clock
            )
            for _ in range(2):
                with pytest.raises(ModelCallError):
                    await client.predict(row(1.0))
            assert client.breaker.state == "open"
            assert client.counters.breaker_opens == 1

            # Open: fails at once, without a call on the wire.
            with pytest.raises(ModelCallError) as caught:
                await client.predict(row(1.0))
            assert caught.value.reason == "unavailable"
            assert len(service.batch_sizes) == 2 and client.counters.fast_failures == 1

            # Reset elapsed: one probe batch goes out; rows arriving while it is in
            # flight fail fast; its success closes the breaker.
            clock.now += 5.0
            service.fail_code, service.delay_s = None, 0.5
            probe = asyncio.ensure_future(client.predict(row(2.0)))
            await asyncio.sleep(0.05)
            assert client.breaker.state == "half_open"
            with pytest.raises(ModelCallError):
                await client.predict(row(3.0))
            assert (await probe).score == pytest.approx(0.002)
            assert client.breaker.state == "closed"
            service.delay_s = 0.0
            assert (await client.predict(row(4.0))).score == pytest.approx(0.004)
            await client.close()
        assert service.batch_sizes == [1, 1, 1, 1]

    run(scenario)


def test_failed_probe_reopens_the_breaker() -> None:
    async def scenario() -> None:
        clock = ManualClock()
        async with fake_server() as (service, port):
            service.fail_code = grpc.StatusCode.UNAVAILABLE
            client = BatchingPredictClient(
                config(port, breaker_failure_threshold=1, breaker_reset_s=1.0), clock=clock
            )
            with pytest.raises(ModelCallError):
                await client.predict(row(1.0))
            assert client.breaker.state == "open"
            clock.now += 1.0
            with pytest.raises(ModelCallError):
                await client.predict(row(1.0))  # the probe, failing again
            assert client.breaker.state == "open"
            assert client.counters.breaker_opens == 2
            await client.close()
        assert service.batch_sizes == [1, 1]

    run(scenario)


def test_errors_do_not_count_towards_the_breaker() -> None:
    async def scenario() -> None:
        async with fake_server() as (service, port):
            client = BatchingPredictClient(config(port, breaker_failure_threshold=2))
            service.fail_code = grpc.StatusCode.UNAVAILABLE
            with pytest.raises(ModelCallError):
                await client.predict(row(1.0))
            service.fail_code = grpc.StatusCode.INTERNAL
            with pytest.raises(ModelCallError):
                await client.predict(row(1.0))
            service.fail_code = grpc.StatusCode.UNAVAILABLE
            with pytest.raises(ModelCallError):
                await client.predict(row(1.0))
            assert client.breaker.state == "closed"  # not two *consecutive* unavailable
            await client.close()

    run(scenario)


def test_close_fails_queued_rows_and_refuses_new_ones() -> None:
    async def scenario() -> None:
        async with fake_server() as (_service, port):
            client = BatchingPredictClient(config(port, batch_window_ms=500.0))
            queued = asyncio.ensure_future(client.predict(row(1.0)))
            await asyncio.sleep(0.01)
            await client.close()
            with pytest.raises(ModelCallError):
                await queued
            with pytest.raises(ModelCallError) as caught:
                await client.predict(row(1.0))
        assert caught.value.reason == "error"

    run(scenario)


def test_rows_with_different_inputs_are_refused() -> None:
    async def scenario() -> None:
        async with fake_server() as (_service, port):
            client = BatchingPredictClient(config(port))
            await client.predict(row(1.0))
            with pytest.raises(ModelCallError) as caught:
                await client.predict({"amount": 1.0})
            await client.close()
        assert caught.value.reason == "error"

    run(scenario)


def test_works_on_a_loop_running_in_another_thread() -> None:
    # PyFlink's AsyncFunction runs its coroutines on a loop in a dedicated thread; the
    # client is constructed there lazily, on first use.
    loop = asyncio.new_event_loop()
    worker = threading.Thread(target=loop.run_forever, daemon=True)
    worker.start()

    async def scenario() -> list[Prediction]:
        async with fake_server() as (_service, port):
            client = BatchingPredictClient(config(port))
            try:
                return await asyncio.gather(*(client.predict(row(float(i))) for i in range(5)))
            finally:
                await client.close()

    try:
        results = asyncio.run_coroutine_threadsafe(scenario(), loop).result(timeout=10)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        worker.join(5)
        loop.close()
    assert [r.score for r in results] == pytest.approx([i / 1000.0 for i in range(5)])
    assert {r.batch_size for r in results} == {5}


def test_on_call_reports_each_rpc_with_its_rows_and_outcome() -> None:
    calls: list[tuple[float, int, str | None]] = []

    async def scenario() -> None:
        async with fake_server() as (service, port):
            client = BatchingPredictClient(config(port, max_batch_size=4),
                                           on_call=lambda ms, rows, out: calls.append(
                                               (ms, rows, out)))
            await asyncio.gather(*(client.predict(row(float(i))) for i in range(6)))
            service.fail_code = grpc.StatusCode.INTERNAL
            with pytest.raises(ModelCallError):
                await client.predict(row(1.0))
            await client.close()

    run(scenario)
    assert sorted((rows, out) for _, rows, out in calls) == [(1, "error"), (2, None), (4, None)]
    assert all(ms >= 0 for ms, _, _ in calls)
