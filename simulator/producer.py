"""Write the simulated stream to Kafka: transactions keyed by card_id, labels by event_id.

As fast as possible by default (the generator's clock then runs at a nominal rate), or
paced to a steady rate. Nothing is lost silently: delivery failures are counted and
raised at the end, after the flush, together with what was sent.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from rtd_core.config import RtdConfig
from rtd_core.security import kafka_client_properties
from simulator.generator import (
    LABEL,
    MALFORMED,
    SIM_RATE,
    GeneratorSettings,
    SimRecord,
    TransactionGenerator,
)

# How far a paced run may fall behind before it stops trying to catch up: a stall (GC,
# a full producer queue) must not be followed by a burst far above the asked rate.
MAX_PACER_BACKLOG_S = 0.5
METADATA_TIMEOUT_S = 5.0
DELIVERY_TIMEOUT_MS = 60_000
_UI_INTERVAL_S = 0.25

_log = logging.getLogger("simulator.kafka")
# librdkafka's connection chatter goes through this logger; without a handler Python's
# last-resort handler would print every retry of an unreachable broker.
_log.addHandler(logging.NullHandler())


class SimulatorError(RuntimeError):
    """A failure the user can act on; the message says what to do."""


class BrokerUnavailableError(SimulatorError):
    pass


class MissingTopicsError(SimulatorError):
    pass


@dataclass(frozen=True)
class SimulationSummary:
    valid_event_ids: list[str]
    malformed: list[tuple[str, str | None]]  # (reason, card_id key or None)
    labels_sent: int
    fraud_count: int
    duration_s: float  # from the first record until every record was acknowledged
    # Transaction-topic records (valid + malformed) per second while sending them; the
    # closing label drain and flush count in duration_s only, so a paced run shows its rate.
    events_per_s: float
    interrupted: bool = False  # stopped early by Ctrl-C

    @property
    def events_sent(self) -> int:
        return len(self.valid_event_ids) + len(self.malformed)


class DeliveryFailedError(SimulatorError):
    """Some records were not acknowledged; `summary` lists what was handed over."""

    def __init__(self, summary: SimulationSummary, errors: list[str], failed: int) -> None:
        shown = "; ".join(errors[:3])
        super().__init__(
            f"{failed} record(s) were not delivered (first: {shown}). Check that the broker "
            "is up (`rtd stack up`) and that the topics exist, then run the simulation again."
        )
        self.summary = summary
        self.errors = errors
        self.failed = failed


@dataclass
class _Delivery:
    """Collects delivery failures from librdkafka's callback thread-of-control (poll)."""

    failed: int = 0
    errors: list[str] = field(default_factory=list)
    broker_error: str | None = None

    def on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            self.failed += 1
            if len(self.errors) < 20:
                self.errors.append(f"{msg.topic()}: {err.str()}")

    def on_error(self, err: KafkaError) -> None:
        self.broker_error = err.str()


def producer_settings(config: RtdConfig) -> dict[str, Any]:
    """librdkafka settings tuned for throughput on a small machine, with no silent loss."""
    return kafka_client_properties(config.kafka, **{
        "client.id": "rtd-simulator",
        # Retries may neither drop nor duplicate records.
        "enable.idempotence": True,
        "acks": "all",
        # Large batches amortise per-request cost; 20 ms is invisible at demo rates.
        "linger.ms": 20,
        "batch.num.messages": 10_000,
        "batch.size": 1_000_000,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 1_000_000,
        # A record still unacknowledged after this fails and is counted, never dropped.
        "delivery.timeout.ms": DELIVERY_TIMEOUT_MS,
        # Only failures call back into Python: a callback per record halves throughput.
        "delivery.report.only.error": True,
        "logger": _log,
    })


def check_broker(
    producer: Producer, config: RtdConfig, timeout_s: float = METADATA_TIMEOUT_S
) -> None:
    """Fail fast, with the fix, when the broker is unreachable or the topics are missing."""
    servers = config.kafka.bootstrap_servers
    try:
        metadata = producer.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else exc
        detail = err.str() if isinstance(err, KafkaError) else str(err)
        raise BrokerUnavailableError(
            f"no Kafka broker answered at {servers} within {timeout_s:g} s ({detail}). "
            "Start the stack with `rtd stack up`, or point kafka.bootstrap_servers in --config "
            "at a running broker."
        ) from None
    topics = config.kafka.topics
    missing = [t for t in (topics.transactions, topics.labels) if t not in metadata.topics]
    if missing:
        names = ", ".join(f"'{t}'" for t in missing)
        raise MissingTopicsError(
            f"topic(s) {names} do not exist on {servers}. Create them (the stack's set-up, "
            "`rtd stack up`, does) or fix kafka.topics in --config."
        )


@contextmanager
def _graceful_interrupt() -> Iterator[threading.Event]:
    """First Ctrl-C asks the loop to stop after the current record; a second one aborts."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signal handlers can only be installed from the main thread
        return

    def handler(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def _progress(enabled: bool, total: float | None) -> Progress:
    return Progress(
        TextColumn("[bold blue]simulating"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>9,.0f} ev/s"),
        TextColumn("fraud {task.fields[fraud]:,}  malformed {task.fields[malformed]:,}"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        disable=not enabled,
        refresh_per_second=4,
    )


def run_simulation(
    config: RtdConfig,
    *,
    count: int | None,
    rate: float | None,
    seed: int,
    start_time_ms: int | None = None,
    malformed_share: float = 0.01,
    out_of_order_share: float = 0.05,
    late_share: float = 0.005,
    label_delay_ms: int = 30_000,
    duration_s: float | None = None,
    progress: bool = True,
    on_sent: Callable[[SimRecord], None] | None = None,
    stop: threading.Event | None = None,
    customers: int | None = None,
) -> SimulationSummary:
    """Produce `count` transactions (or for `duration_s`, or until Ctrl-C when both are
    None) with their labels. `rate` paces transactions per second; None is as fast as
    possible. `on_sent` sees every record once it is handed to the producer; delivery is
    confirmed at the final flush, which raises DeliveryFailedError if anything failed.
    `stop`, once set, ends the run after the current record (as a Ctrl-C does, but from
    another thread: a caller whose run's length is known only as it goes). `customers`
    sizes the population (None: the generator's default); a large one makes nearly
    every card new, as a memory benchmark needs."""
    if count is not None and count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    if rate is not None and not rate > 0:
        raise ValueError(f"rate must be > 0 events/s, got {rate}")
    if duration_s is not None and not duration_s > 0:
        raise ValueError(f"duration_s must be > 0, got {duration_s}")
    settings = GeneratorSettings(
        start_time_ms=int(time.time() * 1000) if start_time_ms is None else start_time_ms,
        seed=seed,
        rate=rate or SIM_RATE,
        malformed_share=malformed_share,
        out_of_order_share=out_of_order_share,
        late_share=late_share,
        label_delay_ms=label_delay_ms,
        **({} if customers is None else {"n_customers": customers}),
    )
    generator = TransactionGenerator(settings)
    delivery = _Delivery()
    producer = Producer(
        {
            **producer_settings(config),
            "on_delivery": delivery.on_delivery,
            "error_cb": delivery.on_error,
        }
    )
    check_broker(producer, config)

    txn_topic, label_topic = config.kafka.topics.transactions, config.kafka.topics.labels
    valid: list[str] = []
    malformed: list[tuple[str, str | None]] = []
    labels_sent = fraud = 0
    total = count if count is not None else (rate * duration_s if rate and duration_s else None)

    def send(record: SimRecord) -> None:
        topic = label_topic if record.kind == LABEL else txn_topic
        while True:
            try:
                producer.produce(topic, record.value, record.key)
                return
            except BufferError:
                # The local queue is full: let librdkafka drain it, then retry.
                producer.poll(0.05)

    with _graceful_interrupt() as interrupt, _progress(progress, total) as bar:
        task = bar.add_task("simulate", total=total, rate=0.0, fraud=0, malformed=0)
        started = now = time.perf_counter()
        deadline = started + duration_s if duration_s is not None else None
        pace_origin, next_ui, sent = started, started + _UI_INTERVAL_S, 0
        # The transaction drawn from the generator but not sent when the run stops: its
        # label is already queued in the generator and must not go out.
        unsent: str | None = None
        for record in generator.stream(count):
            if record.kind != LABEL:
                now = time.perf_counter()
                due = now if rate is None else pace_origin + sent / rate
                if (interrupt.is_set() or (stop is not None and stop.is_set())
                        or (deadline is not None and max(now, due) >= deadline)):
                    unsent = record.event_id
                    break
                if due > now:
                    time.sleep(due - now)
                elif now - due > MAX_PACER_BACKLOG_S:
                    pace_origin += now - due - MAX_PACER_BACKLOG_S
                sent += 1
            send(record)
            if record.kind == LABEL:
                labels_sent += 1
            elif record.kind == MALFORMED:
                malformed.append((record.reason or "", record.key.decode() if record.key else None))
            else:
                valid.append(record.event_id or "")
                fraud += record.is_fraud
            if on_sent is not None:
                on_sent(record)
            if sent & 1023 == 0:
                producer.poll(0)  # serve delivery/error callbacks without blocking
            if now >= next_ui:
                next_ui = now + _UI_INTERVAL_S
                rate_now = sent / max(now - started, 1e-9)
                bar.update(
                    task, completed=sent, rate=rate_now, fraud=fraud, malformed=len(malformed)
                )
        sending_s = time.perf_counter() - started
        # Labels of every event already sent, so no valid event is left without truth.
        for record in generator.drain_labels():
            if record.event_id == unsent:
                continue
            send(record)
            labels_sent += 1
            if on_sent is not None:
                on_sent(record)
        # In short slices so that a second Ctrl-C can still abort a flush to a dead broker.
        while producer.flush(0.5) > 0:
            pass
        elapsed = time.perf_counter() - started  # until every record is acknowledged
        rate_done = sent / max(sending_s, 1e-9)
        bar.update(task, completed=sent, rate=rate_done, fraud=fraud, malformed=len(malformed))
    summary = SimulationSummary(
        valid_event_ids=valid,
        malformed=malformed,
        labels_sent=labels_sent,
        fraud_count=fraud,
        duration_s=elapsed,
        events_per_s=sent / sending_s if sending_s > 0 else 0.0,
        interrupted=interrupt.is_set(),
    )
    if delivery.failed:
        last = [f"last client error: {delivery.broker_error}"] if delivery.broker_error else []
        raise DeliveryFailedError(summary, delivery.errors + last, delivery.failed)
    return summary
