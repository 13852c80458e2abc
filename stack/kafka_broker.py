"""A real Apache Kafka broker in KRaft mode (combined broker+controller), one node."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

from confluent_kafka.admin import AdminClient, NewTopic

from rtd_core.config import RtdConfig
from rtd_core.security import kafka_client_properties, kafka_password
from stack.jars import kafka_classpath_dir
from stack.processes import ManagedProcess, StackError, port_open, wait_until
from stack.secrets import ADMIN_USER, ensure_secrets

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
        fd = os.open(self.properties_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:  # owner only: a secured broker's holds a password
            out.write("\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{self.host}:{ctrl}",
            *self._listener_lines(),
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

    @property
    def secure(self) -> bool:
        return self.config.kafka.security.protocol == "SASL_SSL"

    def _listener_lines(self) -> list[str]:
        ctrl = self.config.kafka.controller_port
        if not self.secure:
            return [
                f"listeners=PLAINTEXT://{self.host}:{self.port},CONTROLLER://{self.host}:{ctrl}",
                f"advertised.listeners=PLAINTEXT://{self.host}:{self.port}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                "inter.broker.listener.name=PLAINTEXT",
            ]
        # Clients and the broker itself on SASL_SSL with SCRAM; the controller listener on
        # TLS with client certificates required (KRaft cannot use SCRAM there: the
        # credentials live in the metadata it serves), so only a holder of a certificate
        # of the stack's CA, i.e. the broker, reaches it.
        s = ensure_secrets(self.config)
        admin = s.admin_password.read_text().strip()
        return [
            f"listeners=SASL_SSL://{self.host}:{self.port},CONTROLLER://{self.host}:{ctrl}",
            f"advertised.listeners=SASL_SSL://{self.host}:{self.port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SSL",
            "inter.broker.listener.name=SASL_SSL",
            "sasl.enabled.mechanisms=SCRAM-SHA-512",
            "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
            ("listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
             "org.apache.kafka.common.security.scram.ScramLoginModule required "
             f'username="{ADMIN_USER}" password="{admin}";'),
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={s.kafka_keystore}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={s.ca_cert}",
            "ssl.endpoint.identification.algorithm=https",
            "listener.name.controller.ssl.client.auth=required",
        ]

    def _scram_users(self) -> list[str]:
        """StorageTool arguments that create the SCRAM users with the log dir: the
        broker's own (inter-broker) and the clients' (kafka.security.username)."""
        if not self.secure:
            return []
        security = self.config.kafka.security
        if not security.username:
            raise StackError("kafka.security.protocol is SASL_SSL: set kafka.security.username")
        s = ensure_secrets(self.config)
        users = [(ADMIN_USER, s.admin_password.read_text().strip()),
                 (security.username, kafka_password(security))]
        args = []
        for name, password in users:
            args += ["--add-scram",
                     f"{security.sasl_mechanism}=[name={name},password={password}]"]
        return args

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
        # SCRAM users are created with the log dir: a dir formatted for another protocol
        # or user would leave the clients without a credential.
        formatted_for = self.home / "formatted-for"
        wanted = f"{self.config.kafka.security.protocol} {self.config.kafka.security.username}"
        if (self.home / "data" / "meta.properties").exists():
            found = formatted_for.read_text().strip() if formatted_for.exists() else "PLAINTEXT None"
            if found != wanted:
                raise StackError(
                    f"the Kafka data in {self.home / 'data'} was set up for {found!r}, not "
                    f"{wanted!r}: run `rtd stack down` and delete {self.home}, or use "
                    "another stack_dir")
            return
        cluster_id = uuid.uuid4().hex[:22]
        result = subprocess.run(
            self._java("kafka.tools.StorageTool", "format", "-t", cluster_id,
                       "-c", str(self.properties_file), *self._scram_users()),
            capture_output=True, text=True, check=False,
        )
        if result.returncode != 0:
            raise StackError(f"formatting the Kafka log dir failed:\n{result.stdout}{result.stderr}")
        formatted_for.write_text(wanted + "\n")

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
        return AdminClient(kafka_client_properties(self.config.kafka))

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
            except Exception as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc):
                    raise StackError(f"creating topic {name} failed: {exc}") from exc
        return [t.topic for t in wanted]
