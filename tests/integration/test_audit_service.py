"""The audit service as a process on a real Kafka broker (the test stack's; no Flink).

Decisions and traces are produced in Kafka transactions, as the job writes them, some
of them aborted; the service is killed with SIGKILL mid-stream and restarted, and every
committed record must then be in the store and the archive exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import orjson
import pytest
from confluent_kafka import Producer

from audit.archive import sql
from audit.completeness import read_report
from audit.service import archive_path, index_path
from audit.store import AuditStore
from bench.audit_traces import decision_and_trace
from decisioning.trace import trace_event
from rtd_core.config import RtdConfig
from stack.audit_service import AuditServiceProcess
from stack.jars import ensure_jars
from stack.kafka_broker import KafkaBroker
from tests.conftest import stack_config_for

pytestmark = pytest.mark.integration
N = 12_000
CHUNK = 500


@pytest.fixture(scope="module")
def kafka() -> Iterator[RtdConfig]:
    """Only the broker of the test stack: the audit service needs nothing else."""
    config = stack_config_for("base")
    ensure_jars(config)
    broker = KafkaBroker(config)
    was_running = broker.running()
    broker.start()
    yield config
    if not was_running and os.environ.get("RTD_KEEP_TEST_STACK") != "1":
        broker.stop()


def audit_config(run_id: str, tmp_path) -> RtdConfig:
    config = stack_config_for(run_id, audit={
        "store_dir": str(tmp_path / "audit"), "consumer_group": f"rtd-audit-{run_id}",
        "batch_size": 300, "archive_flush_s": 1.0, "completeness_grace_ms": 0,
        "console_port": 0})
    KafkaBroker(config).create_topics()
    return config


def produce(config: RtdConfig, start: int, count: int, *, abort: bool = False,
            traces: bool = True, decisions: bool = True, run: str = "") -> list[str]:
    """Decisions and traces in one Kafka transaction, as the job's two sinks write them."""
    producer = Producer({"bootstrap.servers": config.kafka.bootstrap_servers,
                         "transactional.id": f"audit-test-{run}-{start}-{abort}",
                         "compression.type": "lz4"})
    producer.init_transactions(30)
    producer.begin_transaction()
    ids = []
    for i in range(start, start + count):
        decision, trace = decision_and_trace(i)
        ids.append(decision["decision_id"])
        if decisions:
            producer.produce(config.kafka.topics.decisions, orjson.dumps(decision),
                             key=decision["card_id"])
        if traces:
            producer.produce(config.kafka.topics.traces, orjson.dumps(trace),
                             key=decision["decision_id"])
    if abort:
        producer.abort_transaction(30)
    else:
        producer.commit_transaction(30)
    return ids


def store_counts(config: RtdConfig) -> dict[str, int]:
    try:
        with AuditStore(index_path(config), read_only=True) as store:
            return dict(store.counts)
    except Exception:  # noqa: BLE001 - not created yet, or mid-open
        return {"decisions": 0, "traces": 0}


def wait_for(check, timeout_s: float = 180.0) -> None:
    """Wait for a condition; the assertion comes after, on the state itself."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not check():
        time.sleep(0.3)


def rtd(*args: str, config_file) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "rtd.cli", *args, "--config", str(config_file)],
                          capture_output=True, text=True, check=False,
                          env={**os.environ, "COLUMNS": "250"})


def test_kill_9_mid_stream_then_restart_stores_every_committed_record_once(
        kafka, run_id, tmp_path):
    config = audit_config(run_id, tmp_path)
    service = AuditServiceProcess(config, name=f"audit-{run_id}")
    service.start()
    committed: list[str] = []
    kills = 0
    try:
        for start in range(0, N, CHUNK):
            committed += produce(config, start, CHUNK, run=run_id)
            if start == CHUNK * 4:
                produce(config, N + start, 200, abort=True, run=run_id)
            if start in (CHUNK * 6, CHUNK * 15):
                # Mid-stream: once it has indexed part of what is there, not all of it.
                half = len(committed) // 2
                wait_for(lambda half=half: store_counts(config)["traces"] > half, 60)
                os.kill(service.process.pid() or 0, signal.SIGKILL)
                wait_for(lambda: not service.running(), 30)
                kills += 1
                service.start()
        wait_for(lambda: store_counts(config)["traces"] >= N
                 and store_counts(config)["decisions"] >= N)
        service.stop()  # SIGTERM: a last archive flush and report
    finally:
        service.stop()
    assert kills == 2
    counts = store_counts(config)
    assert counts["traces"] == N and counts["decisions"] == N
    assert counts["duplicate_traces"] == 0 and counts["duplicate_decisions"] == 0
    with AuditStore(index_path(config), read_only=True) as store:
        assert all(store.trace(did) is not None for did in committed)
        assert store.trace(decision_and_trace(N + CHUNK * 4)[0]["decision_id"]) is None
    _cols, rows = sql(archive_path(config), "SELECT count(*), count(DISTINCT decision_id), "
                      "count(DISTINCT (trace_partition, trace_offset)) FROM decisions")
    assert rows == [(N, N, N)]
    report = read_report(config.audit_path)
    assert report is not None and report["share_complete"] == 1.0
    assert report["decisions_without_trace"] == [] and report["traces_without_decision"] == []

    # The CLI answers from the store.
    config_file = tmp_path / "config.json"
    config_file.write_text(config.to_json())
    decision, trace = decision_and_trace(1234)
    explained = rtd("explain", decision["event_id"], config_file=config_file)
    assert explained.returncode == 0, explained.stdout + explained.stderr
    assert decision["decision_id"] in explained.stdout
    missing = rtd("explain", "no-such-event", config_file=config_file)
    assert missing.returncode == 1 and "next offset" in missing.stdout
    card = trace_event(trace)["card_id"]
    found = rtd("audit", "search", "--card", card, "--json", config_file=config_file)
    expected = sorted(i for i in range(N) if trace_event(decision_and_trace(i)[1])[
        "card_id"] == card)
    assert sorted(int(json.loads(line)["event_id"][4:]) for line in
                  found.stdout.splitlines()) == expected
    by_sql = rtd("audit", "sql", f"SELECT count(*) AS n FROM decisions WHERE card_id = '{card}'",
                 "--json", config_file=config_file)
    assert json.loads(by_sql.stdout.splitlines()[0]) == {"n": len(expected)}


def test_a_decision_without_trace_is_reported_with_its_offsets(kafka, run_id, tmp_path):
    config = audit_config(run_id, tmp_path)
    service = AuditServiceProcess(config, name=f"audit-{run_id}")
    service.start()
    try:
        produce(config, 0, 50, run=run_id)
        orphan = produce(config, 50, 1, traces=False, run=run_id)[0]
        wait_for(lambda: store_counts(config)["decisions"] >= 51
                 and store_counts(config)["traces"] >= 50)
    finally:
        service.stop()
    config_file = tmp_path / "config.json"
    config_file.write_text(config.to_json())
    result = rtd("audit", "completeness", "--json", config_file=config_file)
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert [e["decision_id"] for e in report["decisions_without_trace"]] == [orphan]
    entry = report["decisions_without_trace"][0]
    assert entry["topic"] == config.kafka.topics.decisions and entry["offset"] >= 0
    assert report["share_complete"] == pytest.approx(50 / 51)
    assert read_report(config.audit_path)["decisions_without_trace"][0]["decision_id"] == orphan
