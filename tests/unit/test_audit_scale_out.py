"""The scale-out layout of the audit store (docker/audit-scale-out.yml) is consistent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from rtd_core.config import RtdConfig

pytestmark = pytest.mark.unit
DOCKER = Path(__file__).resolve().parents[2] / "docker"


def test_indexers_share_one_group_and_each_owns_its_store() -> None:
    services = yaml.safe_load((DOCKER / "audit-scale-out.yml").read_text())["services"]
    indexers = {name: s for name, s in services.items() if name.startswith("audit-")}
    assert len(indexers) >= 2
    volumes = [s["volumes"][0].split(":")[0] for s in indexers.values()]
    assert len(set(volumes)) == len(volumes), "RocksDB allows one writer per store"
    config = RtdConfig.model_validate(json.loads((DOCKER / "audit-config.json").read_text()))
    assert config.audit_path == Path("/audit-data")
    assert config.kafka.bootstrap_servers == "kafka:9092"
