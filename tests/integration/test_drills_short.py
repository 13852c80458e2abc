"""Short versions of the failure drills (bench/drills.py) on the test stack: one
TaskManager kill, and a broker killed and restarted, under steady load. The long ones
(`rtd drill all`: five kills a minute apart, 30 s of broker outage, at 60% of the peak)
are benchmarks, reported in docs/RELIABILITY.md. Recovery times are measured and
reported, not asserted (a shared machine's timing proves nothing); loss, duplication,
open transactions and the job's own recovery are asserted."""

from __future__ import annotations

import math

import pytest

from bench.drills import DrillSettings, run_drill
from rtd.stack.flink_cluster import FlinkCluster
from rtd.stack.kafka_broker import KafkaBroker
from tests.conftest import stack_config_for

pytestmark = pytest.mark.integration

TIMING_CHECKS = ("recovery <=",)


def _held(result) -> dict[str, bool]:
    return {name: ok for name, ok in result.checks.items()
            if not name.startswith(TIMING_CHECKS)}


def test_taskmanager_kill_loses_and_duplicates_nothing(local_stack, run_id):
    config = stack_config_for(run_id)
    settings = DrillSettings(rate=100, kills=1, interval_s=0, warmup_s=15, tail_s=20,
                             drain_timeout_s=180)
    result = run_drill("taskmanager-kill", config, run_id, settings, command="test")
    assert all(_held(result).values()), (result.checks, result.figures)
    assert result.figures["decisions"]["expected"] > 1000
    assert result.figures["restarts"] >= 1, "the job must have failed over"
    (recovery,) = result.figures["recovery_s"]
    assert math.isfinite(recovery["gap_s"]) and recovery["gap_s"] > 0
    assert FlinkCluster(config).running()


def test_broker_restart_recovers_by_itself(local_stack, run_id):
    config = stack_config_for(run_id)
    pid_before = KafkaBroker(config).process.pid()
    settings = DrillSettings(rate=100, broker_down_s=10, warmup_s=15, tail_s=25,
                             drain_timeout_s=240)
    result = run_drill("broker-restart", config, run_id, settings, command="test")
    assert KafkaBroker(config).process.pid() not in (None, pid_before)
    assert all(_held(result).values()), (result.checks, result.figures)
    assert result.figures["decisions"]["expected"] > 1000
    assert result.figures["open_transactions"] and \
        not any(result.figures["open_transactions"].values())
