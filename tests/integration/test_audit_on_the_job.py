"""The audit store behind the real job: the job decides simulated traffic on the test
stack while the audit service indexes it; the service is killed (SIGKILL) mid-stream
and restarted, and then every committed decision is in the store exactly once."""

from __future__ import annotations

import json
import os
import signal
import threading

import pytest

from audit.archive import sql
from audit.service import archive_path
from rtd_core.topic_reader import read_all
from simulator.producer import run_simulation
from stack.audit_service import AuditServiceProcess
from stack.flink_cluster import FlinkCluster
from stack.job_submission import submit
from tests.integration.test_audit_service import audit_config, rtd, store_counts, wait_for

pytestmark = pytest.mark.integration


def test_kill_9_of_the_audit_service_behind_the_live_job(local_stack, run_id, tmp_path):
    config = audit_config(run_id, tmp_path)
    service = AuditServiceProcess(config, name=f"audit-{run_id}")
    service.start()
    job_id = submit(config)
    result = {}

    def produce() -> None:
        result["summary"] = run_simulation(config, count=2000, rate=150, seed=31,
                                           malformed_share=0.0, progress=False)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        wait_for(lambda: store_counts(config)["traces"] >= 300, 120)
        os.kill(service.process.pid() or 0, signal.SIGKILL)
        wait_for(lambda: not service.running(), 30)
        service.start()
        producer.join(timeout=180)
        valid = result["summary"].valid_event_ids
        wait_for(lambda: store_counts(config)["decisions"] >= len(valid)
                 and store_counts(config)["traces"] >= len(valid), 240)
        service.stop()
        decisions = [json.loads(r.value) for r in read_all(config, config.kafka.topics.decisions)]
    finally:
        producer.join(timeout=1)
        service.stop()
        FlinkCluster(config).cancel(job_id)

    counts = store_counts(config)
    assert sorted(d["event_id"] for d in decisions) == sorted(valid)
    assert counts["decisions"] == len(valid) and counts["traces"] == len(valid)
    assert counts["duplicate_decisions"] == 0 and counts["duplicate_traces"] == 0
    _cols, rows = sql(archive_path(config),
                      "SELECT count(*), count(DISTINCT decision_id) FROM decisions")
    assert rows == [(len(valid), len(valid))]
    config_file = tmp_path / "config.json"
    config_file.write_text(config.to_json())
    report = json.loads(rtd("audit", "completeness", "--json", config_file=config_file).stdout)
    assert report["share_complete"] == 1.0 and report["decisions_without_trace"] == []
    one = decisions[len(decisions) // 2]
    explained = rtd("explain", one["event_id"], config_file=config_file)
    assert explained.returncode == 0 and one["outcome"] in explained.stdout
    by_sql = rtd("audit", "sql", "SELECT outcome, count(*) AS n FROM decisions GROUP BY 1",
                 "--json", config_file=config_file)
    got = {row["outcome"]: row["n"] for row in map(json.loads, by_sql.stdout.splitlines())}
    expected: dict[str, int] = {}
    for d in decisions:
        expected[d["outcome"]] = expected.get(d["outcome"], 0) + 1
    assert got == expected
