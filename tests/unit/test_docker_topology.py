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

from rtd.config import PROJECT_ROOT, RtdConfig
from rtd.stack.flink_cluster import JOB_PACKAGES

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
    from rtd.stack.flink_cluster import FlinkCluster

    properties = compose()["x-flink-common"]["environment"]["FLINK_PROPERTIES"]
    prod = dict(line.split(": ", 1) for line in properties.splitlines()
                if line and not line.lstrip().startswith("#"))
    local = FlinkCluster(RtdConfig())._settings()
    for key in ("heartbeat.interval", "heartbeat.timeout", "execution.checkpointing.num-retained",
                *(k for k in local if k.startswith("restart-strategy"))):
        assert str(local[key]) == prod[key], key
