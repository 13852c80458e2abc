"""Short versions of the failure drills (bench/drills/) on the test stack, under steady
load: one TaskManager kill; a broker killed and restarted; the model server slowed,
failing and killed; a rescale to parallelism 2 and back from savepoints; 3,000 hostile
payloads. The long ones (`rtd drill all`, and the hour's `rtd drill soak`) are
benchmarks, reported in docs/RELIABILITY.md. Recovery times and latencies are measured
and reported, not asserted (a shared machine's timing proves nothing); loss,
duplication, open transactions, fallback causes, features against the reference and the
job's own recovery are asserted."""

from __future__ import annotations

import math

import pytest

from bench.drills import DrillSettings, run_drill
from stack.flink_cluster import FlinkCluster
from stack.kafka_broker import KafkaBroker
from tests.conftest import stack_config_for

pytestmark = pytest.mark.integration

TIMING_CHECKS = ("recovery <=",)


def _held(result) -> dict[str, bool]:
    return {name: ok for name, ok in result.checks.items()
            if not name.startswith(TIMING_CHECKS)}


def test_taskmanager_kill_loses_and_duplicates_nothing(local_stack, run_id):
    config = stack_config_for(run_id)
    settings = DrillSettings(rate=100, caught_up_readings=5, kills=1, interval_s=0, warmup_s=15, tail_s=20,
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
    settings = DrillSettings(rate=100, caught_up_readings=5, broker_down_s=10, warmup_s=15, tail_s=25,
                             drain_timeout_s=240)
    result = run_drill("broker-restart", config, run_id, settings, command="test")
    assert KafkaBroker(config).process.pid() not in (None, pid_before)
    assert all(_held(result).values()), (result.checks, result.figures)
    assert result.figures["decisions"]["expected"] > 1000
    assert result.figures["open_transactions"] and \
        not any(result.figures["open_transactions"].values())


def test_model_chaos_falls_back_with_the_right_reason_and_comes_back(local_stack, run_id):
    """Latency past the deadline, 20% errors, the server killed: every decision goes on,
    with the cause of each phase, and the model path returns once the server is back."""
    config = stack_config_for(run_id)
    settings = DrillSettings(rate=100, caught_up_readings=5, warmup_s=15, tail_s=20, chaos_phase_s=12,
                             chaos_calm_s=12, model_down_s=15, drain_timeout_s=180)
    result = run_drill("model-chaos", config, run_id, settings, command="test")
    held = {name: ok for name, ok in _held(result).items()
            if not name.startswith(("p99 decision latency", "MODEL again within"))}
    phases = result.figures["phases"]
    assert all(held.values()), ([name for name, ok in held.items() if not ok], phases)
    assert phases["latency spike"]["by_path_and_reason"].get("RULES_ONLY/timeout", 0) > 100
    assert phases["error rate"]["by_path_and_reason"].get("RULES_ONLY/error", 0) > 10
    assert phases["model server down"]["by_path_and_reason"].get(
        "RULES_ONLY/unavailable", 0) > 100
    assert result.figures["back_to_model_s"] is not None  # the model path came back
    assert KafkaBroker(config).running() and FlinkCluster(config).running()


def test_rescale_to_two_and_back_keeps_every_feature_right(local_stack, run_id):
    config = stack_config_for(run_id)
    settings = DrillSettings(rate=100, caught_up_readings=5, warmup_s=15, tail_s=20, rescale_hold_s=25,
                             drain_timeout_s=180)
    result = run_drill("rescale", config, run_id, settings, command="test")
    assert all(_held(result).values()), (result.checks, result.figures)
    features = result.figures["features"]
    assert features["judged"] > 2000 and features["mismatches"] == 0
    assert [p["parallelism"] for p in result.figures["placements"]] == [2, 1]


def test_hostile_input_ends_as_one_decision_or_one_dead_letter_each(local_stack, run_id):
    config = stack_config_for(run_id)
    settings = DrillSettings(rate=100, caught_up_readings=5, warmup_s=10, tail_s=15, hostile_count=3_000,
                             hostile_rate=300, drain_timeout_s=180)
    result = run_drill("hostile-input", config, run_id, settings, command="test")
    assert all(_held(result).values()), (result.checks, result.figures)
    hostile = result.figures["hostile"]
    assert hostile["sent"] == 3_000
    assert hostile["outcomes"].get("decision", 0) > 100
    assert sum(n for k, n in hostile["outcomes"].items() if k != "decision") > 1000
