"""The thread-mode scoring operator's shell, driven by hand: fake keyed state, timers and
metrics in place of PyFlink's, a real (sync, loopback) fake PredictionService.

What matters here is what the real job cannot show quickly: every record taken in is
either emitted or still in the durable queue, and a restarted operator scores what a
checkpoint left queued."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from pyflink.datastream import TimeDomain

from feature_views.definitions import FEATURE_NAMES
from operators.batched_scoring import END_OF_INPUT, BatchedScoring, lane_of
from operators.lanes import lane_keys
from rtd.config import ServingConfig
from tests.builders import T0, txn
from tests.unit.fake_predictions import fake_server, socket_port

pytestmark = pytest.mark.unit


class FakeMapState:
    """Keyed MapState of one operator: (current key, map key) -> value."""

    def __init__(self, ctx: FakeContext) -> None:
        self._ctx = ctx
        self.data: dict[tuple[int, int], Any] = {}

    def put(self, key: int, value: Any) -> None:
        self.data[(self._ctx.key, key)] = value

    def remove(self, key: int) -> None:
        del self.data[(self._ctx.key, key)]

    def items(self) -> Iterator[tuple[int, Any]]:
        return iter([(k, v) for (lane, k), v in self.data.items() if lane == self._ctx.key])


class FakeCounter:
    def __init__(self) -> None:
        self.count = 0

    def inc(self, n: int = 1) -> None:
        self.count += n


class FakeGroup:
    """Counters only: a Python gauge in thread mode is called on Flink's metrics thread
    and crashes the TaskManager (operators/metric_values.py), so registering one fails."""

    def __init__(self) -> None:
        self.counters: dict[str, FakeCounter] = {}

    def add_group(self, name: str) -> FakeGroup:
        return self

    def counter(self, name: str) -> FakeCounter:
        return self.counters.setdefault(name, FakeCounter())

    def gauge(self, name: str, fn: Any) -> None:
        raise AssertionError(f"thread-mode operator registered a Python gauge {name!r}")


class FakeTimers:
    def __init__(self) -> None:
        self.processing: set[int] = set()
        self.event: set[int] = set()

    def current_processing_time(self) -> int:
        return time.time_ns() // 1_000_000

    def register_processing_time_timer(self, at: int) -> None:
        self.processing.add(at)

    def register_event_time_timer(self, at: int) -> None:
        self.event.add(at)


class FakeContext:
    def __init__(self, key: int) -> None:
        self.key = key
        self.timers = FakeTimers()
        self.domain = TimeDomain.PROCESSING_TIME

    def get_current_key(self) -> int:
        return self.key

    def timer_service(self) -> FakeTimers:
        return self.timers

    def time_domain(self) -> TimeDomain:
        return self.domain


class FakeRuntime:
    def __init__(self, state: FakeMapState) -> None:
        self.state = state
        self.metrics = FakeGroup()

    def get_map_state(self, descriptor: Any) -> FakeMapState:
        return self.state

    def get_metrics_group(self) -> FakeGroup:
        return self.metrics


def record(card: str, amount: float) -> dict[str, Any]:
    return {"event": txn(card, amount, at=T0), "features": dict.fromkeys(FEATURE_NAMES, 1.0),
            "timings": {}, "as_of": {}, "late": False}


def opened(port: int, state: FakeMapState, runtime: FakeRuntime | None = None,
           **serving: Any) -> BatchedScoring:
    operator = BatchedScoring(ServingConfig(host="127.0.0.1", port=port, **serving))
    operator.open(runtime or FakeRuntime(state))  # type: ignore[arg-type]
    return operator


def run_timers(operator: BatchedScoring, ctx: FakeContext, seconds: float = 5.0) -> list[Any]:
    """Fire the processing-time timers as they come due, until none is left."""
    out: list[Any] = []
    deadline = time.monotonic() + seconds
    while ctx.timers.processing and time.monotonic() < deadline:
        at = min(ctx.timers.processing)
        ctx.timers.processing.discard(at)
        time.sleep(max(0.0, at / 1000 - time.time()))
        out += list(operator.on_timer(at, ctx))  # type: ignore[arg-type]
    return out


def test_every_record_is_emitted_once_with_its_score_and_leaves_the_queue() -> None:
    ctx = FakeContext(key=0)
    state = FakeMapState(ctx)
    with fake_server() as (service, port):
        service.delay_s = 0.02
        operator = opened(port, state)
        out = []
        for i in range(20):
            out += list(operator.process_element(record(f"c{i}", 100.0 + i), ctx))  # type: ignore[arg-type]
        assert len(out) + len(state.data) == 20  # emitted or durably queued, nothing else
        assert ctx.timers.event == {END_OF_INPUT}
        out += run_timers(operator, ctx)
        operator.close()
    assert sorted(r["event"]["card_id"] for r in out) == sorted(f"c{i}" for i in range(20))
    assert all(r["model"].score == pytest.approx(r["event"]["amount"] / 1000) for r in out)
    assert all(r["model"].model_version == 5 and "scored" in r["timings"] for r in out)
    assert all(r["model_request"]["inputs"]["amount"] == r["event"]["amount"] for r in out)
    assert state.data == {}
    assert sum(service.batch_sizes) == 20 and len(service.batch_sizes) < 20  # batched


def test_a_restarted_operator_scores_what_the_checkpoint_left_queued() -> None:
    ctx = FakeContext(key=0)
    state = FakeMapState(ctx)
    with fake_server() as (service, port):
        service.delay_s = 0.5
        before = opened(port, state, batch_window_ms=1.0)
        emitted = []
        for i in range(3):
            emitted += list(before.process_element(record(f"c{i}", 10.0 * (i + 1)), ctx))  # type: ignore[arg-type]
        assert emitted == [] and len(state.data) == 3
        checkpoint = dict(state.data)  # what a checkpoint taken now holds
        before.close()  # the task fails: its calls and memory are gone

        state.data = checkpoint
        after = opened(port, state)
        service.delay_s = 0.0
        ctx.timers.processing = {ctx.timers.current_processing_time()}  # restored timer
        out = run_timers(after, ctx)
        after.close()
    assert sorted(r["event"]["card_id"] for r in out) == ["c0", "c1", "c2"]
    assert all(r["model"].score is not None for r in out)
    assert state.data == {}


def test_the_end_of_input_waits_for_every_call() -> None:
    ctx = FakeContext(key=0)
    state = FakeMapState(ctx)
    with fake_server() as (service, port):
        service.delay_s = 0.1
        operator = opened(port, state)
        out = list(operator.process_element(record("c1", 5.0), ctx))  # type: ignore[arg-type]
        out += list(operator.process_element(record("c2", 6.0), ctx))  # type: ignore[arg-type]
        ctx.domain = TimeDomain.EVENT_TIME
        out += list(operator.on_timer(END_OF_INPUT, ctx))  # type: ignore[arg-type]
        operator.close()
    assert sorted(r["event"]["card_id"] for r in out) == ["c1", "c2"]
    assert state.data == {}


def test_an_unreachable_model_sends_records_on_without_a_score() -> None:
    ctx = FakeContext(key=0)
    state = FakeMapState(ctx)
    with socket_port() as port:
        operator = opened(port, state, timeout_ms=300)
        out = list(operator.process_element(record("c1", 5.0), ctx))  # type: ignore[arg-type]
        out += run_timers(operator, ctx)
        operator.close()
    assert [(r["model"].score, r["model"].fallback_reason) for r in out] == [(None, "unavailable")]
    assert state.data == {}


def test_lanes_spread_cards_over_one_key_per_subtask() -> None:
    cards = [f"card-{i}" for i in range(200)]
    assert {lane_of(c, 1) for c in cards} == {0}
    assert {lane_of(c, 3) for c in cards} == set(lane_keys(3))


def test_metrics_are_pushed_into_counters_not_read_from_python_gauges() -> None:
    ctx = FakeContext(key=0)
    state = FakeMapState(ctx)
    runtime = FakeRuntime(state)
    with fake_server() as (service, port):
        operator = opened(port, state, runtime)
        out = []
        for i in range(12):
            out += list(operator.process_element(record(f"c{i}", 50.0), ctx))  # type: ignore[arg-type]
        out += run_timers(operator, ctx)
        operator.close()
    counters = {name: c.count for name, c in runtime.metrics.counters.items()}
    assert len(out) == 12
    assert counters["scored"] == 12 and counters["predict_rows"] == 12
    assert 1 <= counters["predict_calls"] <= 12
    assert counters["fallback_timeout"] == counters["fallback_unavailable"] == 0
    # The latency figures were published by the first call (then at most once a second).
    assert counters["call_latency_p99_us"] >= counters["call_latency_p50_us"] > 0
    assert counters["breaker_open"] == 0
