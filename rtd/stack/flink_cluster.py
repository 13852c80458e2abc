"""A Flink standalone cluster (JobManager + TaskManager + web UI) from the installed
apache-flink package's own scripts, with its configuration under the stack folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests
import yaml

from rtd.config import PROJECT_ROOT, RtdConfig
from rtd.stack.processes import StackError, pid_alive, terminate, wait_until

JOB_PACKAGES = ("rtd", "decisioning", "feature_views", "operators", "serving", "flink_jobs")


def flink_home() -> Path:
    import pyflink

    return Path(pyflink.__file__).resolve().parent


def default_java_opts() -> str:
    """The JVM options the apache-flink package's own config.yaml ships with."""
    shipped = yaml.safe_load((flink_home() / "conf" / "config.yaml").read_text()) or {}
    opts = shipped.get("env", {}).get("java", {}).get("opts", {}).get("all", "")
    return str(opts)


class FlinkCluster:
    def __init__(self, config: RtdConfig) -> None:
        self.config = config
        self.home = config.stack_path / "flink"
        self.conf_dir = self.home / "conf"
        self.log_dir = config.stack_path / "logs" / "flink"
        self.pid_dir = config.stack_path / "run"

    # -- configuration ----------------------------------------------------------------
    def _settings(self) -> dict[str, Any]:
        flink = self.config.flink
        python = sys.executable
        return {
            "jobmanager.rpc.address": "127.0.0.1",
            "jobmanager.rpc.port": flink.rpc_port,
            "jobmanager.bind-host": "127.0.0.1",
            "jobmanager.memory.process.size": flink.jobmanager_memory,
            "taskmanager.bind-host": "127.0.0.1",
            "taskmanager.host": "127.0.0.1",
            "taskmanager.numberOfTaskSlots": flink.task_slots,
            "taskmanager.memory.process.size": flink.taskmanager_memory,
            "taskmanager.memory.managed.fraction": 0.3,
            "rest.address": flink.rest_host,
            "rest.bind-address": flink.rest_host,
            "rest.port": flink.rest_port,
            "parallelism.default": flink.parallelism,
            "state.backend.type": "rocksdb",
            "execution.checkpointing.incremental": "true",
            "execution.checkpointing.dir": (self.home / "checkpoints").as_uri(),
            "execution.checkpointing.savepoint-dir": (self.home / "savepoints").as_uri(),
            "execution.checkpointing.num-retained": 3,
            "python.executable": python,
            "python.client.executable": python,
            "heartbeat.timeout": 50000,
            # Keep the distribution's --add-opens/--add-exports (Java 17 needs them).
            "env.java.opts.all": f"{default_java_opts()} -XX:+UseG1GC".strip(),
        }

    def write_config(self) -> None:
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        for name in ("log4j.properties", "log4j-console.properties", "log4j-cli.properties",
                     "log4j-session.properties", "logback.xml"):
            source = flink_home() / "conf" / name
            if source.exists():
                shutil.copy(source, self.conf_dir / name)
        lines = [f"{k}: {v}" for k, v in self._settings().items()]
        (self.conf_dir / "config.yaml").write_text("\n".join(lines) + "\n")
        (self.conf_dir / "masters").write_text(f"127.0.0.1:{self.config.flink.rest_port}\n")
        (self.conf_dir / "workers").write_text("127.0.0.1\n")

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "FLINK_CONF_DIR": str(self.conf_dir),
            "FLINK_LOG_DIR": str(self.log_dir),
            "FLINK_PID_DIR": str(self.pid_dir),
            "PYFLINK_CLIENT_EXECUTABLE": sys.executable,
        })
        # The job's Python workers import the project's packages from the checkout.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT),
                                                          env.get("PYTHONPATH")]))
        return env

    def _script(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        script = flink_home() / "bin" / name
        return subprocess.run(  # noqa: S603
            ["bash", str(script), *args], env=self.env(), capture_output=True, text=True,
        )

    # -- lifecycle --------------------------------------------------------------------
    def _pids(self, kind: str) -> list[int]:
        pids = []
        for file in self.pid_dir.glob(f"flink-*-{kind}.pid"):
            for line in file.read_text().split():
                if line.isdigit() and pid_alive(int(line)):
                    pids.append(int(line))
        return pids

    def rest(self, path: str, timeout_s: float = 3.0) -> Any:
        response = requests.get(f"{self.config.flink.rest_url}{path}", timeout=timeout_s)
        response.raise_for_status()
        return response.json()

    def overview(self) -> dict[str, Any] | None:
        try:
            return self.rest("/overview")
        except requests.RequestException:
            return None

    def running(self) -> bool:
        overview = self.overview()
        return bool(overview and overview.get("taskmanagers", 0) >= 1)

    def start(self) -> bool:
        # Always (re)written: the `flink` CLI reads it too, also for a running cluster.
        self.write_config()
        if self._pids("standalonesession") and self._pids("taskexecutor"):
            self._wait_ready()
            return False
        if not self._pids("standalonesession"):
            result = self._script("jobmanager.sh", "start")
            if result.returncode != 0:
                raise StackError(f"starting the JobManager failed: {result.stderr or result.stdout}")
        if not self._pids("taskexecutor"):
            result = self._script("taskmanager.sh", "start")
            if result.returncode != 0:
                raise StackError(f"starting the TaskManager failed: {result.stderr or result.stdout}")
        self._wait_ready()
        return True

    def _wait_ready(self) -> None:
        wait_until(self.running, 120, "Flink cluster",
                   lambda: f"See logs in {self.log_dir}", interval_s=1.0)

    def stop(self) -> bool:
        stopped = False
        for kind in ("taskexecutor", "standalonesession"):
            for pid in self._pids(kind):
                terminate(pid, 30)
                stopped = True
            for file in self.pid_dir.glob(f"flink-*-{kind}.pid"):
                file.unlink(missing_ok=True)
        return stopped

    # -- jobs -------------------------------------------------------------------------
    def jobs(self) -> list[dict[str, Any]]:
        try:
            return list(self.rest("/jobs/overview").get("jobs", []))
        except requests.RequestException:
            return []

    def running_job(self, name: str) -> dict[str, Any] | None:
        for job in self.jobs():
            if job.get("name") == name and job.get("state") in ("RUNNING", "CREATED",
                                                               "INITIALIZING", "RESTARTING"):
                return job
        return None

    def cancel(self, job_id: str) -> None:
        requests.patch(f"{self.config.flink.rest_url}/jobs/{job_id}?mode=cancel", timeout=10)

    def flink_cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(  # noqa: S603
            ["bash", str(flink_home() / "bin" / "flink"), *args],
            env=self.env(), capture_output=True, text=True, cwd=PROJECT_ROOT,
        )
