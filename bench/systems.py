"""The systems a benchmark run measures: our Flink job and the peers, behind one shape.

Each has an input topic (its own copy of the same events), a decisions topic, a start
and a stop, and the processes whose CPU and memory count as its own.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Protocol

from bench.resources import descendants, stack_groups
from rtd_core.config import PROJECT_ROOT, RtdConfig
from stack.flink_cluster import FlinkCluster
from stack.job_submission import submit
from stack.processes import StackError


class SystemUnderTest(Protocol):
    name: str
    input_topic: str
    decisions_topic: str

    def topics(self) -> tuple[list[str], set[str]]:
        """Topics to create, and which of them take LogAppendTime."""
        ...

    def start(self) -> None: ...

    def check_alive(self) -> None: ...

    def stop(self) -> None: ...

    def process_groups(self) -> dict[str, list[int]]: ...


def bench_config(base: RtdConfig, run_id: str, system: str) -> RtdConfig:
    """``base`` with topics, consumer group and job name of this run and system, so a
    benchmark never touches the demo's topics or jobs."""
    prefix = f"bench-{run_id}-{system}"
    topics = base.kafka.topics.model_copy(update={
        "transactions": f"{prefix}-transactions", "labels": f"{prefix}-labels",
        "decisions": f"{prefix}-decisions", "traces": f"{prefix}-decision-traces",
        "dlq": f"{prefix}-dlq",
    })
    kafka = base.kafka.model_copy(update={"topics": topics, "consumer_group": prefix})
    job = base.job.model_copy(update={"name": f"rtd-{prefix}", "start_from": "earliest"})
    return base.model_copy(update={"kafka": kafka, "job": job})


class OurJob:
    """The decision job, submitted to the running local Flink cluster like `rtd submit`
    does, but with its config file in the run folder (not the shared .stack one)."""

    name = "ours"

    def __init__(self, config: RtdConfig, run_dir: Path) -> None:
        self.config = config
        self.run_dir = run_dir
        self.cluster = FlinkCluster(config)
        self.job_id: str | None = None
        self.submitted_s: float | None = None
        topics = config.kafka.topics
        self.input_topic, self.decisions_topic = topics.transactions, topics.decisions

    def topics(self) -> tuple[list[str], set[str]]:
        t = self.config.kafka.topics
        return t.all(), {t.transactions, t.decisions, t.traces}

    def start(self) -> None:
        if not self.cluster.running():
            raise StackError(f"no Flink cluster at {self.config.flink.rest_url}: `rtd stack up`")
        self.submitted_s = time.time()
        self.job_id = submit(self.config, wait_s=180,
                             config_file=self.run_dir / "ours-job-config.json",
                             log_file=self.run_dir / "ours-submit.log")

    def check_alive(self) -> None:
        if self.job_id is None:
            return
        state = self.cluster.rest(f"/jobs/{self.job_id}").get("state")
        if state not in ("RUNNING", "CREATED", "INITIALIZING", "RESTARTING"):
            raise StackError(f"job {self.job_id} is {state}: see {self.cluster.log_dir}")

    def stop(self) -> None:
        if self.job_id is None:
            return
        self.cluster.cancel(self.job_id)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            states = {j["jid"]: j["state"] for j in self.cluster.jobs()}
            if states.get(self.job_id) in (None, "CANCELED", "FAILED", "FINISHED"):
                return
            time.sleep(0.5)

    def process_groups(self) -> dict[str, list[int]]:
        return stack_groups(self.config.stack_path / "run", self.submitted_s)


class PeerProcess:
    """A peer application run as its own Python process."""

    def __init__(self, name: str, module: str, config: RtdConfig, run_dir: Path,
                 extra_args: tuple[str, ...] = ()) -> None:
        self.name = name
        self.module = module
        self.config = config
        self.run_dir = run_dir
        self.extra_args = extra_args
        topics = config.kafka.topics
        self.input_topic, self.decisions_topic = topics.transactions, topics.decisions
        self.log_file = run_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def topics(self) -> tuple[list[str], set[str]]:
        return [self.input_topic, self.decisions_topic], {self.input_topic, self.decisions_topic}

    def start(self) -> None:
        config_file = self.run_dir / f"{self.name}-config.json"
        config_file.write_text(self.config.to_json())
        argv = [sys.executable, "-m", self.module, "--config", str(config_file),
                "--input", self.input_topic, "--output", self.decisions_topic,
                "--group", self.config.kafka.consumer_group, *self.extra_args]
        env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                cwd=PROJECT_ROOT, env=env, start_new_session=True,
            )

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            tail = self.log_file.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"peer {self.name} exited ({self.proc.returncode}):\n{tail}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def process_groups(self) -> dict[str, list[int]]:
        if self.proc is None or self.proc.poll() is not None:
            return {self.name: []}
        return {self.name: [self.proc.pid, *(p.pid for p in descendants(self.proc.pid))]}


class TracingPeer(PeerProcess):
    """A peer that writes traces and dead letters too (bench/peers/batched_service.py):
    their topics are created with the run's, as the job's are."""

    def topics(self) -> tuple[list[str], set[str]]:
        t = self.config.kafka.topics
        return ([self.input_topic, self.decisions_topic, t.traces, t.dlq],
                {self.input_topic, self.decisions_topic, t.traces})
