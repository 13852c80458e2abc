"""docker/ cannot run here (no Docker engine): check it stays valid and in step with the
versions and settings the local stack proves."""

from __future__ import annotations

import json
import re
import tomllib
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
import yaml

from rtd_core.config import PROJECT_ROOT, RtdConfig
from stack.flink_cluster import JOB_PACKAGES

pytestmark = pytest.mark.unit

DOCKER = PROJECT_ROOT / "docker"


def compose() -> dict[str, Any]:
    return yaml.safe_load((DOCKER / "docker-compose.yml").read_text())


def pinned(package: str) -> str:
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"]:
        name, _, version = requirement.partition("==")
        if name == package:
            return version
    raise AssertionError(f"{package} is not pinned in pyproject.toml")


def pom_property(name: str) -> str:
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    root = ET.parse(PROJECT_ROOT / "local_stack" / "pom.xml").getroot()
    value = root.find(f"m:properties/m:{name}", ns)
    assert value is not None and value.text
    return value.text


def test_images_follow_the_versions_the_local_stack_runs() -> None:
    services = compose()["services"]
    assert services["kafka"]["image"] == f"apache/kafka:{pom_property('kafka.version')}"
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    serving_api = re.search(r"tensorflow-serving-api==([\d.]+)", makefile)
    assert serving_api is not None
    assert services["tfserving"]["image"] == f"tensorflow/serving:{serving_api.group(1)}"
    dockerfile = (DOCKER / "flink" / "Dockerfile").read_text()
    assert f"FROM flink:{pinned('apache-flink')}-java17" in dockerfile
    connector = pom_property("flink.kafka.connector.version")
    assert f"flink-sql-connector-kafka/{connector}/flink-sql-connector-kafka-{connector}.jar" \
        in dockerfile


def test_the_flink_image_is_ready_for_thread_mode() -> None:
    dockerfile = (DOCKER / "flink" / "Dockerfile").read_text()
    assert "cp /opt/flink/opt/flink-python-*.jar /opt/flink/lib/" in dockerfile
    assert re.search(r"PYTHONPATH=\S*/opt/venv/lib/python3\.11/site-packages", dockerfile)
    flink_properties = yaml.safe_load(compose()["x-flink-common"]["environment"]
                                      ["FLINK_PROPERTIES"])
    assert flink_properties["taskmanager.numberOfTaskSlots"] == 1
    config = RtdConfig.model_validate(json.loads((DOCKER / "job-config.json").read_text()))
    assert config.job.execution_mode == "thread"
    replicas = compose()["services"]["taskmanager"]["deploy"]["replicas"]
    assert replicas == config.flink.parallelism


def test_the_submitted_job_is_the_project_job_with_all_its_packages() -> None:
    command = compose()["services"]["submit-job"]["command"]
    py_files = command[command.index("--pyFiles") + 1].split(",")
    assert [Path(p).name for p in py_files] == list(JOB_PACKAGES)
    assert command[command.index("--python") + 1] == "/opt/rtd/flink_jobs/decision_job.py"
    config_file = command[command.index("--config") + 1]
    assert config_file == "/opt/rtd/docker/job-config.json"
    dockerfile = (DOCKER / "flink" / "Dockerfile").read_text()
    for package in JOB_PACKAGES:
        assert f"COPY {package} /opt/rtd/{package}" in dockerfile


def test_topics_created_are_the_contracts() -> None:
    script = compose()["services"]["kafka-topics"]["command"][0]
    topics = RtdConfig().kafka.topics
    for topic in topics.all():
        assert re.search(rf"\b{re.escape(topic)}\b", script), topic


def test_flink_recovery_settings_match_the_local_stack() -> None:
    from stack.flink_cluster import FlinkCluster

    properties = compose()["x-flink-common"]["environment"]["FLINK_PROPERTIES"]
    prod = dict(line.split(": ", 1) for line in properties.splitlines()
                if line and not line.lstrip().startswith("#"))
    local = FlinkCluster(RtdConfig())._settings()
    for key in ("heartbeat.interval", "heartbeat.timeout", "execution.checkpointing.num-retained",
                *(k for k in local if k.startswith("restart-strategy"))):
        assert str(local[key]) == prod[key], key


def test_monitoring_scrapes_the_audit_service_and_flinks_reporter() -> None:
    flink_properties = yaml.safe_load(compose()["x-flink-common"]["environment"]
                                      ["FLINK_PROPERTIES"])
    assert flink_properties["metrics.reporter.prom.factory.class"].endswith(
        "PrometheusReporterFactory")
    scrape = yaml.safe_load((DOCKER / "prometheus.yml").read_text())["scrape_configs"]
    jobs = {job["job_name"]: job for job in scrape}
    assert jobs["flink"]["dns_sd_configs"][0]["port"] == flink_properties[
        "metrics.reporter.prom.port"]
    audit = RtdConfig.model_validate(json.loads((DOCKER / "audit-config.json").read_text()))
    targets = jobs["rtd-audit"]["static_configs"][0]["targets"]
    scale_out = yaml.safe_load((DOCKER / "audit-scale-out.yml").read_text())["services"]
    assert sorted(t.split(":")[0] for t in targets) == sorted(
        s for s in scale_out if s.startswith("audit-"))
    assert all(t.endswith(f":{audit.audit.console_port}") for t in targets)
    assert audit.audit.console_host == "0.0.0.0"


def test_the_grafana_dashboard_queries_metrics_that_exist() -> None:
    from audit.metrics import HealthMetrics

    ours = {m.name for m in HealthMetrics().registry.collect()}
    dashboard = json.loads((DOCKER / "grafana" / "rtd-health.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    names = {n for e in exprs for n in re.findall(r"\b(rtd_[a-z0-9_]+|flink_[A-Za-z0-9_]+)", e)}
    assert {n for n in names if n.startswith("rtd_")} <= ours
    assert any(n.startswith("flink_") for n in names)
    for name in ("rtd_decision_latency_ms", "rtd_precision", "rtd_fallback_rate",
                 "rtd_trace_completeness"):
        assert name in names


def test_the_audit_image_pins_the_audit_extra() -> None:
    project = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]
    dockerfile = (DOCKER / "audit" / "Dockerfile").read_text()
    for requirement in project["optional-dependencies"]["audit"]:
        assert requirement in dockerfile
