"""Shared fixtures. Unit tests use none of the service fixtures (they start nothing)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from rtd_core.config import RtdConfig, load_config

# The test stack runs beside a developer's demo stack: own folder, own ports.
# RTD_TEST_PORT_OFFSET shifts every port (and the folder), so two checkouts can run
# their suites at once on one machine.
_OFFSET = int(os.environ.get("RTD_TEST_PORT_OFFSET", "0"))
TEST_STACK = {
    "stack_dir": f".stack-test{_OFFSET or ''}",
    "kafka": {"bootstrap_servers": f"127.0.0.1:{19092 + _OFFSET}",
              "controller_port": 19093 + _OFFSET, "heap": "512m"},
    "flink": {"rest_port": 18081 + _OFFSET, "rpc_port": 16123 + _OFFSET,
              "checkpoint_interval_ms": 1000, "taskmanager_memory": "2560m",
              "prometheus_port": 19249 + _OFFSET},
    "serving": {"port": 18500 + _OFFSET,
                "base_path": f".stack-test{_OFFSET or ''}/models/fraud",
                "poll_interval_s": 1.0},
    "audit": {"console_port": 18090 + _OFFSET},
}


def stack_config_for(run_id: str, **overrides: object) -> RtdConfig:
    """A config with topics, group and job name unique to ``run_id``."""
    topics = {name: f"{topic}-{run_id}" for name, topic in {
        "transactions": "transactions", "labels": "labels", "decisions": "decisions",
        "traces": "decision-traces", "dlq": "transactions-dlq"}.items()}
    base = {**TEST_STACK}
    base["kafka"] = {**TEST_STACK["kafka"], "topics": topics, "consumer_group": f"rtd-{run_id}"}
    base["job"] = {"name": f"rtd-test-{run_id}"}
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            base[key] = {**base[key], **value}
        else:
            base[key] = value
    return load_config(None, **base)


@pytest.fixture(scope="session")
def local_stack() -> Iterator[RtdConfig]:
    """The real local stack (Kafka, model server, Flink cluster) on the test ports.

    Started for the session if it is not running, and then stopped after, unless
    RTD_KEEP_TEST_STACK=1. A stack that was already running is left running."""
    from stack.local_stack import LocalStack

    config = stack_config_for("base")
    stack = LocalStack(config)
    already_running = all(s.running for s in stack.status())
    stack.up(log=lambda line: print(line))
    yield config
    crashes = embedded_python_crashes(config)
    if not already_running and os.environ.get("RTD_KEEP_TEST_STACK") != "1":
        stack.down(log=lambda line: print(line))
    # Thread mode runs the job's Python inside the TaskManager: a fatal error there kills
    # the JVM, and Flink's restart on a new TaskManager could hide it from the tests.
    assert not crashes, f"the embedded Python interpreter crashed a TaskManager: {crashes}"


def embedded_python_crashes(config: RtdConfig) -> list[str]:
    logs = config.stack_path / "logs" / "flink"
    return [f"{out.name}: {line.strip()}" for out in sorted(logs.glob("*taskexecutor*.out"))
            for line in out.read_text(errors="replace").splitlines()
            if line.startswith("Fatal Python error")]


@pytest.fixture
def run_id() -> str:
    return uuid.uuid4().hex[:8]
