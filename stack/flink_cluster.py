"""A Flink standalone cluster (JobManager + TaskManager + web UI) from the installed
apache-flink package's own scripts, with its configuration under the stack folder."""

from __future__ import annotations

import hashlib
import os
import shutil
import site
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import requests
import yaml

from rtd_core.config import PROJECT_ROOT, RtdConfig
from stack.debian_packages import apt_install
from stack.jars import prometheus_plugin_dir
from stack.processes import StackError, pid_alive, terminate, wait_until

JOB_PACKAGES = ("rtd_core", "decisioning", "feature_views", "operators", "serving", "flink_jobs")
# RocksDB's native memory properties Flink publishes as gauges (per column family).
ROCKSDB_MEMORY_METRICS = ("block-cache-usage", "block-cache-pinned-usage",
                          "cur-size-all-mem-tables", "estimate-table-readers-mem")
# Debian's libjemalloc2 (installed by `make setup` where it can).
JEMALLOC = Path("/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")


def ensure_jemalloc() -> str:
    """Install Debian's libjemalloc2 unless present; say what was done."""
    if JEMALLOC.exists():
        return f"jemalloc {JEMALLOC}"
    apt_install(("libjemalloc2",), "the Flink processes' allocator (flink.allocator)")
    return f"jemalloc {JEMALLOC} (installed libjemalloc2)"


def allocator_env(config: RtdConfig) -> dict[str, str]:
    """What the Flink processes' environment needs for the configured allocator
    (``flink.allocator``): jemalloc preloaded where the machine has it, else glibc's
    malloc, its arenas capped if ``flink.glibc_arena_max`` is set."""
    flink = config.flink
    if flink.allocator == "jemalloc" and JEMALLOC.exists():
        return {"LD_PRELOAD": str(JEMALLOC)}
    return {"MALLOC_ARENA_MAX": str(flink.glibc_arena_max)} if flink.glibc_arena_max else {}


def code_digest() -> str:
    """A digest of the job's Python sources (JOB_PACKAGES), to tell code versions apart."""
    digest = hashlib.sha256()
    for package in JOB_PACKAGES:
        for file in sorted((PROJECT_ROOT / package).rglob("*.py")):
            digest.update(str(file.relative_to(PROJECT_ROOT)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()[:16]


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
            # Spread a job's slots over the TaskManagers rather than filling one first:
            # with thread mode's one interpreter (one GIL) per TaskManager, parallelism
            # 2 on one TaskManager would share one core's worth of Python.
            "taskmanager.load-balance.mode": "slots",
            "state.backend.type": "rocksdb",
            # RocksDB's memory, as gauges the JVM reads (no Python): what the soak
            # (bench/drills) samples to tell its bounded caches filling from a leak.
            **{f"state.backend.rocksdb.metrics.{name}": "true" for name in ROCKSDB_MEMORY_METRICS},
            "execution.checkpointing.incremental": "true",
            "execution.checkpointing.dir": (self.home / "checkpoints").as_uri(),
            "execution.checkpointing.savepoint-dir": (self.home / "savepoints").as_uri(),
            "execution.checkpointing.num-retained": 3,
            "python.executable": python,
            "python.client.executable": python,
            "heartbeat.interval": flink.heartbeat_interval_ms,
            "heartbeat.timeout": flink.heartbeat_timeout_ms,
            "restart-strategy.type": "exponential-delay",
            "restart-strategy.exponential-delay.initial-backoff":
                f"{flink.restart_initial_backoff_ms} ms",
            "restart-strategy.exponential-delay.max-backoff": f"{flink.restart_max_backoff_ms} ms",
            "restart-strategy.exponential-delay.backoff-multiplier": 2.0,
            "restart-strategy.exponential-delay.reset-backoff-threshold":
                f"{flink.restart_reset_backoff_ms} ms",
            "restart-strategy.exponential-delay.jitter-factor": 0.1,
            # Keep the distribution's --add-opens/--add-exports (Java 17 needs them).
            # A JVM that dies in native code (embedded Python) writes its report beside
            # the logs, not into whatever directory the daemon was started from.
            "env.java.opts.all": (f"{default_java_opts()} -XX:+UseG1GC "
                                  f"-XX:ErrorFile={self.log_dir}/hs_err_pid%p.log").strip(),
            **self._prometheus_settings(),
        }

    def _prometheus_settings(self) -> dict[str, Any]:
        """Flink's Prometheus reporter: each JobManager and TaskManager takes the first
        free port of the range, so Prometheus scrapes the job's metrics there too."""
        flink = self.config.flink
        if not flink.prometheus_port:
            return {}
        last = flink.prometheus_port + flink.prometheus_port_range - 1
        return {
            "metrics.reporter.prom.factory.class":
                "org.apache.flink.metrics.prometheus.PrometheusReporterFactory",
            "metrics.reporter.prom.port": f"{flink.prometheus_port}-{last}",
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

    @property
    def lib_dir(self) -> Path:
        return self.home / "lib"

    def write_lib_dir(self) -> None:
        """The distribution's lib/ plus flink-python from its opt/, as links.

        Thread mode runs Python in the TaskManager through PEMJA, whose native library
        can be loaded by one class loader per JVM only. Shipped with each job (PyFlink's
        default, from opt/), the second job on a TaskManager, or a restarted task, gets a
        new user-code class loader and fails to open with ``NoSuchFieldException:
        loadedLibraryNames`` (PEMJA's reload work-around does not run on Java 17). In
        lib/ it is loaded once, by the TaskManager's own class loader."""
        lib = self.lib_dir
        lib.mkdir(parents=True, exist_ok=True)
        home = flink_home()
        wanted = {jar.name: jar for jar in
                  [*(home / "lib").glob("*.jar"), *(home / "opt").glob("flink-python*.jar")]}
        for link in lib.iterdir():  # a running cluster keeps its links: only fix what differs
            if link.name not in wanted or link.resolve() != wanted[link.name].resolve():
                link.unlink()
        for name, jar in wanted.items():
            if not (lib / name).exists():
                (lib / name).symlink_to(jar)

    @property
    def plugins_dir(self) -> Path:
        return self.home / "plugins"

    def write_plugins_dir(self) -> None:
        """Only the plugins the stack uses (the Prometheus reporter, resolved from Maven
        Central by `rtd setup`), not every one the apache-flink wheel carries."""
        plugins = self.plugins_dir
        plugins.mkdir(parents=True, exist_ok=True)
        link = plugins / "metrics-prometheus"
        if link.is_symlink() or link.exists():
            link.unlink()
        if self.config.flink.prometheus_port:
            link.symlink_to(prometheus_plugin_dir(self.config), target_is_directory=True)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({
            "FLINK_LIB_DIR": str(self.lib_dir),
            "FLINK_PLUGINS_DIR": str(self.plugins_dir),
            "FLINK_CONF_DIR": str(self.conf_dir),
            "FLINK_LOG_DIR": str(self.log_dir),
            "FLINK_PID_DIR": str(self.pid_dir),
            "PYFLINK_CLIENT_EXECUTABLE": sys.executable,
            **allocator_env(self.config),
        })
        # The job's Python workers import the project's packages from the checkout. In
        # thread mode the TaskManager's embedded interpreter starts from the base Python
        # and does not read the virtualenv's pyvenv.cfg: its site-packages must be named.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [
            str(PROJECT_ROOT), *site.getsitepackages(), env.get("PYTHONPATH")]))
        return env

    def _script(self, name: str, *args: str) -> subprocess.CompletedProcess[str]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        script = flink_home() / "bin" / name
        # Its own session, without a controlling terminal: the daemons the script forks
        # stay in it, so closing the terminal that ran `rtd stack up` (SIGHUP to that
        # terminal's session) does not reach them. Flink installs its own SIGHUP handler
        # (it logs "RECEIVED SIGNAL 1: SIGHUP" and shuts down), so the script's nohup
        # alone does not protect them.
        return subprocess.run(
            ["bash", str(script), *args], env=self.env(), capture_output=True, text=True, check=False,
            stdin=subprocess.DEVNULL, start_new_session=True,
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
        return bool(overview and overview.get("taskmanagers", 0) >= self.config.flink.taskmanagers)

    def start(self) -> bool:
        # Always (re)written: the `flink` CLI reads it too, also for a running cluster.
        self.write_config()
        self.write_lib_dir()
        self.write_plugins_dir()
        wanted = self.config.flink.taskmanagers
        if self._pids("standalonesession") and len(self._pids("taskexecutor")) >= wanted:
            self._wait_ready()
            return False
        if not self._pids("standalonesession"):
            result = self._script("jobmanager.sh", "start")
            if result.returncode != 0:
                raise StackError(f"starting the JobManager failed: {result.stderr or result.stdout}")
        self._start_taskmanagers()
        self._wait_ready()
        return True

    def _start_taskmanagers(self) -> None:
        for _ in range(self.config.flink.taskmanagers - len(self._pids("taskexecutor"))):
            result = self._script("taskmanager.sh", "start")
            if result.returncode != 0:
                raise StackError(f"starting a TaskManager failed: {result.stderr or result.stdout}")

    def restart_taskmanagers(self) -> None:
        for pid in self._pids("taskexecutor"):
            terminate(pid, 30)
        for file in self.pid_dir.glob("flink-*-taskexecutor.pid"):
            file.unlink(missing_ok=True)
        wait_until(lambda: not (self.overview() or {}).get("taskmanagers"), 60,
                   "TaskManagers to leave the cluster", lambda: f"See logs in {self.log_dir}",
                   interval_s=0.5)
        self._start_taskmanagers()
        self._wait_ready()

    def ensure_current_python(self, digest: str) -> bool:
        """Thread mode runs every job's Python in one interpreter per TaskManager, and
        that interpreter keeps the modules the first job imported: a later job with
        changed code would run the old modules. So TaskManagers that ran code of
        another ``digest`` are restarted first; True when they were."""
        marker = self.pid_dir / "taskmanager-python-code"
        pids = sorted(self._pids("taskexecutor"))
        current = f"{pids} {digest}"
        recorded = marker.read_text().strip() if marker.exists() else ""
        restarted = False
        if recorded.startswith(f"{pids} ") and recorded != current:
            self.restart_taskmanagers()
            restarted = True
            current = f"{sorted(self._pids('taskexecutor'))} {digest}"
        marker.write_text(current + "\n")
        return restarted

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

    def failures(self, job_id: str) -> list[dict[str, Any]]:
        """The job's failures, newest first: the entries of its exception history (each
        with the failure's epoch ms as ``timestamp``)."""
        return list(self.rest(f"/jobs/{job_id}/exceptions")["exceptionHistory"]["entries"])

    def running_job(self, name: str) -> dict[str, Any] | None:
        for job in self.jobs():
            if job.get("name") == name and job.get("state") in ("RUNNING", "CREATED",
                                                               "INITIALIZING", "RESTARTING"):
                return job
        return None

    def operator_gauges(self, job_id: str, group: str, *, ready: str,
                        wait_s: float = 30) -> dict[str, float]:
        """The gauges under ``.<group>.`` of the first operator that has them, by name
        after the group; waits until ``ready`` is non-zero, as the REST API's metric
        cache lags by ~10 s and a new gauge first shows 0. {} if none appear."""
        deadline = time.monotonic() + wait_s
        gauges: dict[str, float] = {}
        marker = f".{group}."
        while time.monotonic() < deadline:
            for vertex in self.rest(f"/jobs/{job_id}")["vertices"]:
                path = f"/jobs/{job_id}/vertices/{vertex['id']}/metrics"
                ids = [m["id"] for m in self.rest(path) if marker in m["id"]]
                if any(i.endswith(f"{marker}{ready}") for i in ids):
                    values = self.rest(f"{path}?get={','.join(ids)}", timeout_s=10)
                    gauges = {m["id"].split(marker)[1]: float(m["value"]) for m in values}
                    if gauges.get(ready):
                        return gauges
            time.sleep(2)
        return gauges

    def stop_with_savepoint(self, job_id: str, timeout_s: float = 180) -> str:
        """Stop the job with a savepoint (no drain: event time does not jump to the end,
        so the job resumes from it exactly where it stopped); the savepoint's path."""
        response = requests.post(f"{self.config.flink.rest_url}/jobs/{job_id}/stop",
                                 json={"drain": False}, timeout=10)
        response.raise_for_status()
        trigger = response.json()["request-id"]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            status = self.rest(f"/jobs/{job_id}/savepoints/{trigger}", timeout_s=10)
            if status.get("status", {}).get("id") == "COMPLETED":
                operation = status.get("operation", {})
                if "location" in operation:
                    return str(operation["location"])
                cause = operation.get("failure-cause", {}).get("stack-trace", operation)
                raise StackError(f"stop-with-savepoint of job {job_id} failed: "
                                 f"{str(cause)[-2000:]}")
            time.sleep(0.5)
        raise StackError(f"stop-with-savepoint of job {job_id} did not finish in "
                         f"{timeout_s:.0f} s: see {self.log_dir}")

    def cancel(self, job_id: str) -> None:
        requests.patch(f"{self.config.flink.rest_url}/jobs/{job_id}?mode=cancel", timeout=10)

    def flink_cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", str(flink_home() / "bin" / "flink"), *args],
            env=self.env(), capture_output=True, text=True, check=False, cwd=PROJECT_ROOT,
        )
