"""The simulator's producer loop (simulator.producer), on a fake producer: every
record reaches its topic, pacing, Ctrl-C and delivery failures, with no broker."""

from __future__ import annotations

import json
from typing import Any

import pytest

from rtd_core.config import RtdConfig
from simulator import LABEL, SimRecord
from tests.builders import T0

pytestmark = pytest.mark.unit


class FakeProducer:
    """Stands in for confluent_kafka.Producer: records what would be written."""

    last: FakeProducer  # the most recent instance, for the test to inspect
    fail_every = 0  # > 0: report every n-th record as failed at the flush
    full_every = 0  # > 0: raise BufferError (queue full) once every n-th produce

    def __init__(self, conf: dict[str, Any]) -> None:
        self.conf = conf
        self.written: list[tuple[str, bytes | None, bytes]] = []
        self.calls = 0
        FakeProducer.last = self

    def list_topics(self, timeout: float | None = None) -> Any:
        from types import SimpleNamespace

        return SimpleNamespace(topics={"transactions": None, "labels": None})

    def produce(self, topic: str, value: bytes, key: bytes | None) -> None:
        self.calls += 1
        if self.full_every and self.calls % self.full_every == 0:
            raise BufferError("queue full")
        self.written.append((topic, key, value))

    def poll(self, timeout: float = 0) -> int:
        return 0

    def flush(self, timeout: float = 0) -> int:
        if self.fail_every:
            from types import SimpleNamespace

            err = SimpleNamespace(str=lambda: "Local: Message timed out")
            msg = SimpleNamespace(topic=lambda: "transactions")
            for _ in self.written[:: self.fail_every]:
                self.conf["on_delivery"](err, msg)
            self.fail_every = 0
        return 0


@pytest.fixture
def fake_producer(monkeypatch: pytest.MonkeyPatch) -> type[FakeProducer]:
    from simulator import producer

    class Fresh(FakeProducer):
        pass

    monkeypatch.setattr(producer, "Producer", Fresh)
    return Fresh


def _run(**kwargs: Any) -> Any:
    from simulator.producer import run_simulation

    args: dict[str, Any] = {"count": 2_000, "rate": None, "seed": 1, "start_time_ms": T0}
    # Built-in defaults, not load_config(): an RTD_CONFIG in the environment must not
    # rename the topics under the test.
    return run_simulation(RtdConfig(), progress=False, **{**args, **kwargs})


def test_producer_writes_every_record_to_its_topic(fake_producer: type[FakeProducer]) -> None:
    fake_producer.full_every = 97
    seen: list[SimRecord] = []
    summary = _run(on_sent=seen.append)
    written = fake_producer.last.written
    txn_side = [(k, v) for t, k, v in written if t == "transactions"]
    labels = [json.loads(v) for t, _, v in written if t == "labels"]
    assert len(txn_side) == summary.events_sent == 2_000
    assert len(summary.valid_event_ids) + len(summary.malformed) == 2_000
    assert {label["event_id"] for label in labels} == set(summary.valid_event_ids)
    assert summary.labels_sent == len(labels) == len(seen) - 2_000
    assert [r.value for r in seen] == [v for _, _, v in written]  # none lost to BufferError
    assert summary.fraud_count == sum(label["is_fraud"] for label in labels)
    assert not summary.interrupted and summary.events_per_s > 0
    assert fake_producer.last.conf["enable.idempotence"] is True


def test_a_paced_run_for_a_duration_sends_labels_only_for_sent_events(
    fake_producer: type[FakeProducer],
) -> None:
    summary = _run(count=None, rate=1_000.0, duration_s=0.3)
    assert 250 <= summary.events_sent <= 301
    labels = [json.loads(v) for t, _, v in fake_producer.last.written if t == "labels"]
    assert sorted(label["event_id"] for label in labels) == sorted(summary.valid_event_ids)


def test_ctrl_c_stops_cleanly_with_a_summary(fake_producer: type[FakeProducer]) -> None:
    import signal

    def interrupt_at_500(record: SimRecord) -> None:
        if record.kind != LABEL and fake_producer.last.calls == 500:
            signal.raise_signal(signal.SIGINT)

    summary = _run(count=None, on_sent=interrupt_at_500)
    assert summary.interrupted
    assert 400 < summary.events_sent <= 500
    assert summary.labels_sent == len(summary.valid_event_ids)


def test_delivery_failures_are_raised_with_the_summary(fake_producer: type[FakeProducer]) -> None:
    from simulator.producer import DeliveryFailedError

    fake_producer.fail_every = 100
    with pytest.raises(DeliveryFailedError, match="not delivered") as caught:
        _run(count=500)
    assert caught.value.failed > 0
    assert caught.value.summary.events_sent == 500
