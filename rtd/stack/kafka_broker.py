"""A real Apache Kafka broker in KRaft mode (combined broker+controller), one node."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from rtd.config import RtdConfig
from rtd.stack.jars import kafka_classpath_dir
from rtd.stack.processes import ManagedProcess, StackError, port_open, wait_until

LOG4J2 = """status = warn
appender.file.type = Console
appender.file.name = STDOUT
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
"""



def _host_port(bootstrap: str) -> tuple[str, int]:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    return host, int(port)


class KafkaBroker:
    def __init__(self, config: RtdConfig) -> None:
        self.config = config
        self.home = config.stack_path / "kafka"
        self.process = ManagedProcess("kafka", config.stack_path / "run",
                                      config.stack_path / "logs")
        self.host, self.port = _host_port(config.kafka.bootstrap_servers)

    @property
    def properties_file(self) -> Path:
        return self.home / "server.properties"

    def _write_config(self) -> None:
        kafka = self.config.kafka
        self.home.mkdir(parents=True, exist_ok=True)
        ctrl = kafka.controller_port
        self.properties_file.write_text("\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{self.host}:{ctrl}",
            f"listeners=PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{ctrl}",
            f"advertised.listeners=PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={self.home / 'data'}",
            f"num.partitions={kafka.partitions}",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=4",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=4",
            "transaction.max.timeout.ms=3600000",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=false",
            "log.retention.hours=168",
            "",
        ]))
        (self.home / "log4j2.properties").write_text(LOG4J2)

    def _java(self, main: str, *args: str) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise StackError("`java` is not on PATH: install a JDK 17 (apt-get install openjdk-17-jdk)")
        return [
            java, f"-Xmx{self.config.kafka.heap}", f"-Xms{self.config.kafka.heap}",
            "-XX:+UseG1GC", f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            "-cp", f"{kafka_classpath_dir(self.config)}/*", main, *args,
        ]

    def _format_storage(self) -> None:
        if (self.home / "data" / "meta.properties").exists():
            return
        cluster_id = uuid.uuid4().hex[:22]
        result = subprocess.run(  # noqa: S603
            self._java("kafka.tools.StorageTool", "format", "-t", cluster_id,
                       "-c", str(self.properties_file)),
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise StackError(f"formatting the Kafka log dir failed:\n{result.stdout}{result.stderr}")

    def running(self) -> bool:
        return self.process.pid() is not None and port_open(self.host, self.port)

    def start(self) -> bool:
        """Start the broker unless it runs; create the topics. True if it was started."""
        if self.process.pid() is not None:
            wait_until(lambda: port_open(self.host, self.port), 60, "Kafka broker",
                       lambda: self.process.tail())
            self.create_topics()
            return False
        if port_open(self.host, self.port):
            raise StackError(
                f"port {self.port} is taken by another process: stop it, or set kafka.bootstrap_servers"
            )
        self._write_config()
        self._format_storage()
        self.process.start(self._java("kafka.Kafka", str(self.properties_file)))
        wait_until(lambda: port_open(self.host, self.port) or self.process.pid() is None, 90,
                   "Kafka broker", lambda: "Log:\n" + self.process.tail())
        if self.process.pid() is None:
            raise StackError("the Kafka broker exited at start. Log:\n" + self.process.tail(40))
        self.create_topics()
        return True

    def stop(self) -> bool:
        return self.process.stop(timeout_s=30)

    def admin(self) -> AdminClient:
        return AdminClient({"bootstrap.servers": self.config.kafka.bootstrap_servers})

    def create_topics(self) -> list[str]:
        admin = self.admin()
        existing = set(admin.list_topics(timeout=30).topics)
        topics = self.config.kafka.topics
        wanted = []
        for name in topics.all():
            if name in existing:
                continue
            conf = {}
            # The broker's append time as record timestamp: it is each event's arrival
            # in Kafka, which freshness and end-to-end latency are measured from.
            if name in (topics.transactions, topics.decisions, topics.traces):
                conf["message.timestamp.type"] = "LogAppendTime"
            wanted.append(NewTopic(name, num_partitions=self.config.kafka.partitions,
                                   replication_factor=1, config=conf))
        if not wanted:
            return []
        for name, future in admin.create_topics(wanted, operation_timeout=30).items():
            try:
                future.result()
            except Exception as exc:  # noqa: BLE001 - a racing create is fine
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise StackError(f"creating topic {name} failed: {exc}") from exc
        return [t.topic for t in wanted]
