"""Submitting the decision job to the local cluster the way users submit to any cluster:
``flink run --python`` with the project's packages as ``--pyFiles`` and the connector
jar named in the job's config (``flink.connector_jars``, added with ``env.add_jars``)."""

from __future__ import annotations

import re
import time
from pathlib import Path

from rtd_core.config import PROJECT_ROOT, RtdConfig
from stack.flink_cluster import JOB_PACKAGES, FlinkCluster, code_digest
from stack.processes import StackError

JOB_FILE = PROJECT_ROOT / "flink_jobs" / "decision_job.py"


def submit_command(config: RtdConfig, config_file: Path, job_file: Path = JOB_FILE,
                   options: tuple[str, ...] = ()) -> list[str]:
    """``flink run``'s arguments; ``options`` are the CLI's own (before the program's
    ``--config``, which the job parses)."""
    py_files = ",".join(str(PROJECT_ROOT / p) for p in JOB_PACKAGES)
    return [
        "run", "--detached", *options,
        "--python", str(job_file),
        "--pyFiles", py_files,
        "--config", str(config_file),
    ]


def submit(config: RtdConfig, *, restart: bool = False, wait_s: float = 120,
           config_file: Path | None = None, log_file: Path | None = None,
           savepoint: str | None = None) -> str:
    """Submit the live job unless one of that name runs; return its job id.

    ``config_file``: where the job's config is written (default: the stack folder's
    job-config.json); ``log_file``: where `flink run`'s output is kept; ``savepoint``:
    a savepoint (or retained checkpoint) to resume from, at ``flink.parallelism``."""
    cluster = FlinkCluster(config)
    if not cluster.running():
        raise StackError(f"no Flink cluster answers at {config.flink.rest_url}: run `rtd stack up`")
    existing = cluster.running_job(config.job.name)
    if existing and not restart:
        return str(existing["jid"])
    if existing:
        cluster.cancel(existing["jid"])
        _wait_gone(cluster, existing["jid"])
    if config.job.execution_mode == "thread":
        cluster.ensure_current_python(code_digest())
    config_file = config_file or config.stack_path / "job-config.json"
    config_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        flink = config.flink.model_copy(update={"connector_jars": config.connector_jar_uris()})
    except FileNotFoundError as exc:
        raise StackError(str(exc)) from exc
    config = config.model_copy(update={"flink": flink})
    config_file.write_text(config.to_json())
    options = ("--fromSavepoint", savepoint) if savepoint else ()
    result = cluster.flink_cli(*submit_command(config, config_file, options=options))
    output = result.stdout + result.stderr
    if log_file is not None:
        log_file.write_text(output)
    match = re.search(r"JobID ([0-9a-f]{32})", output)
    if result.returncode != 0 or not match:
        raise StackError(f"`flink run` failed (exit {result.returncode}):\n{output[-4000:]}")
    job_id = match.group(1)
    wait_running(cluster, job_id, wait_s)
    return job_id


def wait_running(cluster: FlinkCluster, job_id: str, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    state = "UNKNOWN"
    while time.monotonic() < deadline:
        try:
            detail = cluster.rest(f"/jobs/{job_id}")
        except Exception:  # noqa: BLE001 - not visible yet
            time.sleep(0.5)
            continue
        state = detail.get("state", "UNKNOWN")
        vertices = detail.get("vertices", [])
        if state == "RUNNING" and vertices and all(v.get("status") == "RUNNING" for v in vertices):
            return
        if state in ("FAILED", "CANCELED", "FINISHED"):
            break
        time.sleep(0.5)
    raise StackError(
        f"job {job_id} is {state}, not running, after {wait_s:.0f} s: see the Flink UI "
        f"({cluster.config.flink.rest_url}) and {cluster.log_dir}"
    )


def _wait_gone(cluster: FlinkCluster, job_id: str, wait_s: float = 60) -> None:
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if not any(j["jid"] == job_id and j["state"] not in ("CANCELED", "FAILED", "FINISHED")
                   for j in cluster.jobs()):
            return
        time.sleep(0.5)
