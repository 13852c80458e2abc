"""Every feature of every decision made on the real Flink cluster, checked against the
independent reference (tests/reference_features.py).

One partition, so the order in which the job processes events is the topic's order for
every key (with several partitions a customer's cards may interleave differently from
any order the test could know). Late events are skipped: they are decided "with the
state they find", which the reference does not model.
"""

from __future__ import annotations

import json
import time

import pytest

from rtd.job_submission import submit
from rtd.simulator.producer import run_simulation
from rtd.stack.flink_cluster import FlinkCluster
from rtd.stack.kafka_broker import KafkaBroker
from rtd.topic_reader import read_all
from tests.conftest import stack_config_for
from tests.reference_features import all_features

pytestmark = pytest.mark.integration


def test_every_feature_of_every_decision_matches_the_reference(local_stack, run_id):
    config = stack_config_for(run_id, kafka={"partitions": 1})
    KafkaBroker(config).create_topics()
    summary = run_simulation(config, count=1500, rate=None, seed=11, malformed_share=0.0,
                             progress=False)
    job_id = submit(config)
    try:
        deadline = time.monotonic() + 180
        traces = []
        while time.monotonic() < deadline:
            traces = read_all(config, config.kafka.topics.traces)
            if len(traces) >= len(summary.valid_event_ids):
                break
            time.sleep(2)
    finally:
        FlinkCluster(config).cancel(job_id)

    docs = sorted((json.loads(r.value) for r in traces), key=lambda t: t["input"]["offset"])
    assert len(docs) == len(summary.valid_event_ids)
    expected = all_features([t["input"]["event"] for t in docs])
    checked = 0
    for trace in docs:
        if trace["late"]:
            continue
        got = {f["name"]: f["value"] for f in trace["features"]}
        assert got == expected[trace["event_id"]], trace["event_id"]
        checked += 1
    assert checked >= 0.95 * len(docs)
