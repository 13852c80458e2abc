"""Exactly-once through a crash: the TaskManager is killed (SIGKILL) mid-stream and a new
one started; read_committed consumers still see exactly one decision and one trace per
valid event, and one dead letter per malformed event."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections import Counter

import pytest

from rtd_core.topic_reader import read_all
from simulator.producer import run_simulation
from stack.flink_cluster import FlinkCluster
from stack.job_submission import submit
from stack.kafka_broker import KafkaBroker
from tests.conftest import stack_config_for

pytestmark = pytest.mark.integration


def test_taskmanager_crash_loses_nothing_and_duplicates_nothing(local_stack, run_id):
    config = stack_config_for(run_id)
    KafkaBroker(config).create_topics()
    cluster = FlinkCluster(config)
    job_id = submit(config)
    result = {}

    def produce() -> None:
        result["summary"] = run_simulation(config, count=2500, rate=125, seed=23,
                                           malformed_share=0.02, progress=False)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        # let some checkpoints commit decisions, then crash the TaskManager
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and len(read_all(config, config.kafka.topics.decisions)) < 300:
            time.sleep(1)
        committed_before_crash = len(read_all(config, config.kafka.topics.decisions))
        assert committed_before_crash >= 300
        for pid in cluster._pids("taskexecutor"):
            os.kill(pid, signal.SIGKILL)
        time.sleep(2)
        cluster.start()  # a new TaskManager; the job restarts from its last checkpoint
        producer.join(timeout=120)
        summary = result["summary"]
        valid, malformed = summary.valid_event_ids, summary.malformed
        deadline = time.monotonic() + 240
        decisions = []
        while time.monotonic() < deadline:
            decisions = read_all(config, config.kafka.topics.decisions)
            if len(decisions) >= len(valid):
                break
            time.sleep(3)
        time.sleep(5)  # a duplicate, if any, would be committed by now
        decisions = read_all(config, config.kafka.topics.decisions)
        traces = read_all(config, config.kafka.topics.traces)
        dead = read_all(config, config.kafka.topics.dlq)
        failures = cluster.failures(job_id)
    finally:
        producer.join(timeout=1)
        FlinkCluster(config).cancel(job_id)

    assert committed_before_crash < len(valid), "the crash must happen mid-stream"
    assert Counter(json.loads(r.value)["event_id"] for r in decisions) == Counter(valid)
    assert Counter(json.loads(r.value)["event_id"] for r in traces) == Counter(valid)
    assert Counter(json.loads(r.value)["reason"] for r in dead) == Counter(r for r, _ in malformed)
    assert failures, "the job must have failed over after the crash"
