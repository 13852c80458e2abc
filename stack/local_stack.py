"""Up, down and status of the whole local stack, in dependency order."""

from __future__ import annotations

from dataclasses import dataclass

from rtd_core.config import RtdConfig
from stack.audit_service import AuditServiceProcess
from stack.flink_cluster import FlinkCluster
from stack.jars import ensure_jars
from stack.kafka_broker import KafkaBroker
from stack.model_server import ModelServer


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    running: bool
    address: str
    detail: str = ""


class LocalStack:
    def __init__(self, config: RtdConfig) -> None:
        self.config = config
        self.kafka = KafkaBroker(config)
        self.flink = FlinkCluster(config)
        self.model_server = ModelServer(config)
        self.audit = AuditServiceProcess(config)

    def up(self, log: callable = print) -> None:  # type: ignore[valid-type]
        ensure_jars(self.config)
        started = self.kafka.start()
        log(f"kafka        {'started' if started else 'already running'} at "
            f"{self.config.kafka.bootstrap_servers}")
        started = self.model_server.start()
        log(f"model server {'started' if started else 'already running'} at "
            f"{self.config.serving.target}")
        started = self.flink.start()
        log(f"flink        {'started' if started else 'already running'}, web UI "
            f"{self.config.flink.rest_url}" + (
                f", Prometheus metrics on ports {self.config.flink.prometheus_port}+"
                if self.config.flink.prometheus_port else ""))
        if self.config.audit.enabled:
            started = self.audit.start()
            log(f"audit        {'started' if started else 'already running'}, store "
                f"{self.config.audit_path}, console {self.config.audit.console_url}")

    def down(self, log: callable = print) -> None:  # type: ignore[valid-type]
        for name, component in (("audit", self.audit), ("flink", self.flink),
                                ("model server", self.model_server), ("kafka", self.kafka)):
            log(f"{name:<12} {'stopped' if component.stop() else 'was not running'}")

    def status(self) -> list[ComponentStatus]:
        overview = self.flink.overview() or {}
        jobs = [j for j in self.flink.jobs() if j.get("state") == "RUNNING"]
        return [
            ComponentStatus("kafka", self.kafka.running(), self.config.kafka.bootstrap_servers),
            ComponentStatus("model-server", self.model_server.running(),
                            self.config.serving.target),
            ComponentStatus(
                "flink", self.flink.running(), self.config.flink.rest_url,
                f"{overview.get('taskmanagers', 0)} TM, {overview.get('slots-available', 0)}/"
                f"{overview.get('slots-total', 0)} slots free, running jobs: "
                + (", ".join(j["name"] for j in jobs) or "none"),
            ),
        ] + ([ComponentStatus("audit", self.audit.running(), self.config.audit.console_url,
                              f"store {self.config.audit_path}, "
                              f"log {self.audit.process.log_file}")]
             if self.config.audit.enabled else [])
