"""The bench's batched peer on the real broker and model server: exactly one decision and
one trace per valid event, one dead letter per malformed one (read_committed), and a
restart with its rocksdict state lost rebuilt from Kafka without emitting anything twice.

Needs only Kafka and the model server of the test stack (not Flink): this module starts
those two if they are not running and stops what it started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from bench.reference_features import card_features
from decisioning.trace import feature_entries, is_complete, trace_event
from feature_views.definitions import FEATURE_NAMES
from rtd_core.config import PROJECT_ROOT, RtdConfig
from rtd_core.topic_reader import read_all
from simulator.producer import run_simulation
from stack.jars import ensure_jars
from stack.kafka_broker import KafkaBroker
from stack.model_server import ModelServer
from tests.conftest import stack_config_for

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def kafka_and_model() -> Iterator[RtdConfig]:
    config = stack_config_for("base")
    ensure_jars(config)
    kafka, model = KafkaBroker(config), ModelServer(config)
    started = [c for c in (kafka, model) if c.start()]
    yield config
    if os.environ.get("RTD_KEEP_TEST_STACK") != "1":
        for component in reversed(started):
            component.stop()


def start_service(config: RtdConfig, state_dir: Path, log: Path) -> subprocess.Popen[bytes]:
    config_file = state_dir.parent / "service-config.json"
    config_file.write_text(config.to_json())
    topics = config.kafka.topics
    argv = [sys.executable, "-m", "bench.peers.batched_service", "--config", str(config_file),
            "--input", topics.transactions, "--output", topics.decisions,
            "--group", config.kafka.consumer_group, "--state-dir", str(state_dir)]
    with open(log, "ab") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT,
                                env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})


def wait_for(config: RtdConfig, topic: str, expected: int, proc: subprocess.Popen[bytes],
             log: Path, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-3000:]
        if len(read_all(config, topic)) >= expected:
            return
        time.sleep(1)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)


def test_one_decision_and_trace_per_valid_event_across_a_restart_without_state(
        kafka_and_model, run_id, tmp_path):
    config = stack_config_for(run_id)
    KafkaBroker(config).create_topics()
    topics = config.kafka.topics
    first = run_simulation(config, count=300, rate=None, seed=7, malformed_share=0.05,
                           progress=False)
    assert first.malformed
    state_dir, log = tmp_path / "state", tmp_path / "service.log"
    proc = start_service(config, state_dir, log)
    try:
        wait_for(config, topics.decisions, len(first.valid_event_ids), proc, log)
        wait_for(config, topics.dlq, len(first.malformed), proc, log)
    finally:
        stop(proc)

    # Lose the whole rocksdict state: the restart must rebuild it from the input topic,
    # emitting nothing for what was already decided.
    subprocess.run(["rm", "-rf", str(state_dir)], check=True)
    second = run_simulation(config, count=200, rate=None, seed=8, malformed_share=0.05,
                            progress=False, start_time_ms=first_last_time(config) + 1_000)
    valid = first.valid_event_ids + second.valid_event_ids
    malformed = first.malformed + second.malformed
    assert not set(first.valid_event_ids) & set(second.valid_event_ids)
    proc = start_service(config, state_dir, log)
    try:
        wait_for(config, topics.decisions, len(valid), proc, log)
        wait_for(config, topics.dlq, len(malformed), proc, log)
        time.sleep(3)  # anything extra would show up now
    finally:
        stop(proc)
    # the restart re-read every record of the first run into state, and emitted nothing
    assert f"{first.events_sent} records folded into state" in log.read_text()

    decisions = [orjson.loads(r.value) for r in read_all(config, topics.decisions)]
    traces = [orjson.loads(r.value) for r in read_all(config, topics.traces)]
    dead = [orjson.loads(r.value) for r in read_all(config, topics.dlq)]
    assert Counter(d["event_id"] for d in decisions) == Counter(valid)
    assert Counter(t["event_id"] for t in traces) == Counter(valid)
    assert Counter(d["reason"] for d in dead) == Counter(r for r, _ in malformed)
    assert all(d["topic"] == topics.transactions and d["offset"] >= 0 and d["raw"] is not None
               for d in dead)
    assert all(is_complete(t, FEATURE_NAMES) for t in traces)
    assert sum(d["path"] == "MODEL" for d in decisions) > 0.95 * len(valid)

    # card features after the restart are right only if the lost state was rebuilt
    by_card: dict[str, list[dict]] = {}
    for trace in sorted(traces, key=lambda t: t["input"]["offset"]):
        by_card.setdefault(trace_event(trace)["card_id"], []).append(trace)
    for card_traces in by_card.values():
        events = [trace_event(t) for t in card_traces]
        for i, trace in enumerate(card_traces):
            if trace["late"]:
                continue
            got = {f["name"]: f["value"] for f in feature_entries(trace)
                   if f["view"] == "card_features"}
            assert got == card_features(events[:i], events[i]), trace["event_id"]


def first_last_time(config: RtdConfig) -> int:
    times = [orjson.loads(r.value)["event_time"]
             for r in read_all(config, config.kafka.topics.decisions)]
    return max(times)
