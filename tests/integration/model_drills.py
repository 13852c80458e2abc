"""Helpers for the job-level model drills: a model server of the test's own, a running
job pointed at it, events produced by hand, and their decisions and traces read back.

Each drill test starts its own model server (``stack.model_server.ModelServer``) on a
free port over its own copy of the test stack's model, so slowing, killing or republishing
it disturbs no other test and no other engineer's job on the shared test stack.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from rtd_core.config import RtdConfig, load_config
from rtd_core.topic_reader import read_all
from serving.batching_client import BatchingPredictClient, ModelCallError
from serving.drills import DrillSettings, write_drill_file
from serving.model_signature import MODEL_INPUT_NAMES
from serving.model_store import list_versions
from simulator.producer import producer_settings
from stack.flink_cluster import FlinkCluster
from stack.job_submission import submit
from stack.kafka_broker import KafkaBroker
from stack.model_server import ModelServer
from stack.processes import port_open
from tests.builders import encode
from tests.conftest import stack_config_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def now_ms() -> int:
    return int(time.time() * 1000)


class OwnModelServer:
    """A model server on its own port and base path, seeded with the stack's model as v1."""

    def __init__(self, stack: RtdConfig, folder: Path, poll_interval_s: float = 0.5) -> None:
        self.port = free_port()
        self.base_path = folder / "models" / "fraud"
        self.base_path.mkdir(parents=True)
        stack_models = stack.path(stack.serving.base_path)
        self.source_version = stack_models / str(max(list_versions(stack_models)))
        shutil.copytree(self.source_version, self.base_path / "1")
        self.config = load_config(None, stack_dir=str(folder / "stack"), serving={
            "port": self.port, "base_path": str(self.base_path),
            "poll_interval_s": poll_interval_s})
        self.server = ModelServer(self.config)

    def serving_overrides(self, **extra: Any) -> dict[str, Any]:
        """What the job's ``serving`` config needs to call this server."""
        return {"port": self.port, "base_path": str(self.base_path), **extra}

    def start(self) -> None:
        self.server.start(("--grace-s", "1"))

    def kill(self) -> None:
        """SIGKILL: no graceful drain, as a crash or an OOM kill would end it."""
        pid = self.server.process.pid()
        assert pid is not None, "the model server is not running"
        os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while port_open("127.0.0.1", self.port) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not port_open("127.0.0.1", self.port), "the killed server still listens"

    def stop(self) -> None:
        self.server.stop()

    def drill(self, settings: DrillSettings | None) -> None:
        write_drill_file(self.base_path / ".drill.json", settings)

    def publish(self, version: int) -> None:
        """A new version, published atomically the way a training job does."""
        staging = self.base_path / f".staging-{version}"
        shutil.copytree(self.source_version, staging)
        staging.rename(self.base_path / str(version))

    def probe(self, timeout_ms: int) -> tuple[str, int | None]:
        """One Predict through the job's client: ("ok", version) or (fallback reason, None)."""
        async def call() -> tuple[str, int | None]:
            client = BatchingPredictClient(
                self.config.serving.model_copy(update={"timeout_ms": timeout_ms}))
            try:
                answer = await client.predict({name: 1.0 for name in MODEL_INPUT_NAMES})
                return "ok", answer.model_version
            except ModelCallError as exc:
                return exc.reason, None
            finally:
                await client.close()
        return asyncio.run(call())

    def wait_probe(self, expected: str, timeout_ms: int, within_s: float = 30,
                   version: int | None = None) -> None:
        deadline = time.monotonic() + within_s
        seen: tuple[str, int | None] = ("none", None)
        while time.monotonic() < deadline:
            seen = self.probe(timeout_ms)
            if seen[0] == expected and (version is None or seen[1] == version):
                return
            time.sleep(0.2)
        raise AssertionError(f"model server probe: {seen}, expected {expected} v{version}. "
                             f"Log:\n{self.server.process.tail(30)}")


@contextmanager
def own_model_server(stack: RtdConfig, folder: Path) -> Iterator[OwnModelServer]:
    server = OwnModelServer(stack, folder)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def running_job(run_id: str, **overrides: Any) -> Iterator[RtdConfig]:
    """The decision job on the test stack, on topics of its own; cancelled afterwards."""
    config = stack_config_for(run_id, **overrides)
    KafkaBroker(config).create_topics()
    job_id = submit(config)
    try:
        yield config
    finally:
        FlinkCluster(config).cancel(job_id)


def produce(config: RtdConfig, events: Iterable[dict[str, Any]],
            rate: float | None = None) -> list[dict[str, Any]]:
    """Write events keyed by card; ``rate`` paces them (events/s). Returns them, in order."""
    producer = Producer(producer_settings(config))
    sent = []
    started = time.monotonic()
    for i, event in enumerate(events):
        if rate is not None:
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        producer.produce(config.kafka.topics.transactions, key=event["card_id"].encode(),
                         value=encode(event))
        producer.poll(0)
        sent.append(event)
    assert producer.flush(30) == 0, "events left unsent"
    return sent


@dataclass(frozen=True)
class Decided:
    decision: dict[str, Any]
    trace: dict[str, Any]


def read_decided(config: RtdConfig) -> dict[str, Decided]:
    """Every committed decision with its trace, by event id; duplicates fail the test."""
    decisions = [json.loads(r.value) for r in read_all(config, config.kafka.topics.decisions)
                 if r.value is not None]
    traces = {}
    for record in read_all(config, config.kafka.topics.traces):
        if record.value is None:
            continue
        trace = json.loads(record.value)
        traces[trace["event_id"]] = trace
    by_event: dict[str, Decided] = {}
    for decision in decisions:
        event_id = decision["event_id"]
        assert event_id not in by_event, f"two decisions for {event_id}"
        by_event[event_id] = Decided(decision, traces.get(event_id, {}))
    return by_event


def wait_decided(config: RtdConfig, event_ids: Iterable[str],
                 timeout_s: float = 90) -> dict[str, Decided]:
    """Decisions (and traces) of ``event_ids`` once all are committed."""
    wanted = set(event_ids)
    deadline = time.monotonic() + timeout_s
    decided: dict[str, Decided] = {}
    while time.monotonic() < deadline:
        decided = read_decided(config)
        if wanted <= {e for e, d in decided.items() if d.trace}:
            return {e: decided[e] for e in wanted}
        time.sleep(1)
    missing = wanted - set(decided)
    raise AssertionError(f"{len(missing)} of {len(wanted)} events undecided after "
                         f"{timeout_s:.0f} s, e.g. {sorted(missing)[:3]}")
