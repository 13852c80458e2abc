"""One path from the config's security settings to every client the project makes.

Kafka: ``kafka_client_properties`` for librdkafka (confluent_kafka: simulator, CLI,
audit, bench) and ``kafka_java_properties`` for the Java client (the job's Flink Kafka
connector, Kafka's own command-line tools). gRPC: ``serving_channel`` for every client of
the model server and ``serving_server_credentials`` for the server. Secrets are read
from files or the environment when a client is made, never kept in the config.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rtd_core.config import PROJECT_ROOT, KafkaConfig, KafkaSecurityConfig, ServingConfig

# The Flink Kafka SQL connector shades the Kafka client under this package, so the JAAS
# login module must be named by its shaded class name inside the job.
FLINK_SHADED_KAFKA = "org.apache.flink.kafka.shaded."


class SecretError(RuntimeError):
    """A configured secret cannot be read; the message says which and from where."""


def _path(value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else PROJECT_ROOT / p


def _readable(value: str, what: str) -> str:
    path = _path(value)
    if not path.is_file():
        raise SecretError(f"{what} {path} does not exist (`rtd stack up --secure` writes "
                          "the local stack's; a deployment mounts its own)")
    return str(path)


def kafka_password(security: KafkaSecurityConfig) -> str:
    if security.password_file:
        path = Path(_readable(security.password_file, "kafka.security.password_file"))
        return path.read_text().strip()
    password = os.environ.get(security.password_env)
    if not password:
        raise SecretError(
            f"Kafka SASL needs a password: set kafka.security.password_file, or the "
            f"environment variable {security.password_env}")
    return password


def _username(security: KafkaSecurityConfig) -> str:
    if not security.username:
        raise SecretError("kafka.security.protocol is SASL_SSL: set kafka.security.username")
    return security.username


def kafka_client_properties(kafka: KafkaConfig, **extra: Any) -> dict[str, Any]:
    """librdkafka (confluent_kafka) properties: bootstrap servers and security, plus
    ``extra`` given with Kafka's dotted names passed as a mapping (``**{"group.id": g}``)."""
    conf: dict[str, Any] = {"bootstrap.servers": kafka.bootstrap_servers}
    security = kafka.security
    if security.protocol == "SASL_SSL":
        conf.update({
            "security.protocol": "SASL_SSL",
            "sasl.mechanisms": security.sasl_mechanism,
            "sasl.username": _username(security),
            "sasl.password": kafka_password(security),
            # librdkafka verifies the broker's host name against its certificate by default.
            "ssl.endpoint.identification.algorithm": "https",
        })
        if security.ca_file:
            conf["ssl.ca.location"] = _readable(security.ca_file, "kafka.security.ca_file")
    conf.update(extra)
    return conf


def _jaas_quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def kafka_java_properties(kafka: KafkaConfig, *, shaded: bool = False) -> dict[str, str]:
    """Java Kafka client properties for ``security`` (without bootstrap servers).
    ``shaded``: for the Flink connector, which relocates the Kafka client's classes."""
    security = kafka.security
    if security.protocol == "PLAINTEXT":
        return {}
    module = "org.apache.kafka.common.security.scram.ScramLoginModule"
    if shaded:
        module = FLINK_SHADED_KAFKA + module
    props = {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": security.sasl_mechanism,
        "sasl.jaas.config": (f'{module} required username="{_jaas_quote(_username(security))}" '
                             f'password="{_jaas_quote(kafka_password(security))}";'),
        "ssl.endpoint.identification.algorithm": "https",
    }
    if security.ca_file:
        props["ssl.truststore.type"] = "PEM"
        props["ssl.truststore.location"] = _readable(security.ca_file, "kafka.security.ca_file")
    return props


def _channel_credentials(serving: ServingConfig) -> Any:
    import grpc

    tls = serving.tls
    roots = Path(_readable(tls.ca_file, "serving.tls.ca_file")).read_bytes() \
        if tls.ca_file else None
    return grpc.ssl_channel_credentials(root_certificates=roots)


def _channel_options(serving: ServingConfig, options: list[tuple[str, Any]] | None
                     ) -> list[tuple[str, Any]]:
    out = list(options or [])
    if serving.tls.enabled and serving.tls.server_name:
        out.append(("grpc.ssl_target_name_override", serving.tls.server_name))
    return out


def serving_channel(serving: ServingConfig, options: list[tuple[str, Any]] | None = None) -> Any:
    """A blocking gRPC channel to the model server: TLS when ``serving.tls.enabled``."""
    import grpc

    opts = _channel_options(serving, options)
    if serving.tls.enabled:
        return grpc.secure_channel(serving.target, _channel_credentials(serving), options=opts)
    return grpc.insecure_channel(serving.target, options=opts)


def serving_aio_channel(serving: ServingConfig,
                        options: list[tuple[str, Any]] | None = None) -> Any:
    """As ``serving_channel``, for grpc.aio clients."""
    import grpc

    opts = _channel_options(serving, options)
    if serving.tls.enabled:
        return grpc.aio.secure_channel(serving.target, _channel_credentials(serving),
                                       options=opts)
    return grpc.aio.insecure_channel(serving.target, options=opts)


def tls_server_files(serving: ServingConfig) -> tuple[str, str]:
    """The server's (certificate, key) files, checked to exist."""
    tls = serving.tls
    if not (tls.cert_file and tls.key_file):
        raise SecretError("serving.tls.enabled needs serving.tls.cert_file and key_file")
    return (_readable(tls.cert_file, "serving.tls.cert_file"),
            _readable(tls.key_file, "serving.tls.key_file"))
