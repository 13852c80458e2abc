"""Security settings: one path from the config to every client; secrets only from files
or the environment; the generated local CA and certificate; nothing in the repository's
deployment files publishes a port on a public interface or holds a secret."""

from __future__ import annotations

import ipaddress
import re
import stat

import pytest
import yaml
from cryptography import x509
from pydantic import ValidationError

from flink_jobs.kafka_tables import sink_ddl, source_ddl
from rtd_core.config import PROJECT_ROOT, load_config
from rtd_core.security import (
    SecretError,
    kafka_client_properties,
    kafka_java_properties,
    serving_channel,
)
from stack.secrets import ensure_secrets, secured

pytestmark = pytest.mark.unit


def _secure(tmp_path):
    return secured(load_config(None, stack_dir=str(tmp_path / "stack")))


def test_plaintext_by_default_and_no_security_properties():
    config = load_config(None)
    assert kafka_client_properties(config.kafka) == {"bootstrap.servers": "127.0.0.1:9092"}
    assert kafka_java_properties(config.kafka) == {}
    assert "security" not in source_ddl(config) and "jaas" not in sink_ddl(config, "t", "d", "p")


def test_secured_clients_read_the_password_from_its_file(tmp_path):
    config = _secure(tmp_path)
    s = ensure_secrets(config)
    password = s.client_password.read_text().strip()
    conf = kafka_client_properties(config.kafka, **{"group.id": "g"})
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.mechanisms"] == "SCRAM-SHA-512"
    assert (conf["sasl.username"], conf["sasl.password"]) == ("rtd", password)
    assert conf["ssl.ca.location"] == str(s.ca_cert) and conf["group.id"] == "g"
    java = kafka_java_properties(config.kafka, shaded=True)
    assert java["sasl.jaas.config"].startswith(
        "org.apache.flink.kafka.shaded.org.apache.kafka.common.security.scram.ScramLoginModule "
        f'required username="rtd" password="{password}";')
    assert java["ssl.truststore.type"] == "PEM"
    # The job's source and sinks get them as connector properties.
    for ddl in (source_ddl(config), sink_ddl(config, "t", "decisions", "p")):
        assert "'properties.security.protocol' = 'SASL_SSL'" in ddl
        assert "'properties.sasl.mechanism' = 'SCRAM-SHA-512'" in ddl
        assert "shaded.org.apache.kafka.common.security.scram.ScramLoginModule" in ddl


def test_password_from_the_environment_and_clear_errors(tmp_path, monkeypatch):
    config = _secure(tmp_path)
    ensure_secrets(config)
    security = config.kafka.security.model_copy(update={"password_file": None})
    kafka = config.kafka.model_copy(update={"security": security})
    monkeypatch.delenv("RTD_KAFKA_PASSWORD", raising=False)
    with pytest.raises(SecretError, match="RTD_KAFKA_PASSWORD"):
        kafka_client_properties(kafka)
    monkeypatch.setenv("RTD_KAFKA_PASSWORD", "from-env")
    assert kafka_client_properties(kafka)["sasl.password"] == "from-env"
    missing = kafka.model_copy(update={"security": security.model_copy(
        update={"password_file": str(tmp_path / "absent")})})
    with pytest.raises(SecretError, match="absent"):
        kafka_client_properties(missing)


def test_the_config_has_no_place_for_a_secret():
    with pytest.raises(ValidationError):
        load_config(None, kafka={"security": {"password": "x"}})
    with pytest.raises(ValidationError):
        load_config(None, serving={"tls": {"key": "x"}})


def test_generated_certificate_and_private_files(tmp_path):
    config = _secure(tmp_path)
    s = ensure_secrets(config)
    ca = x509.load_pem_x509_certificate(s.ca_cert.read_bytes())
    server = x509.load_pem_x509_certificates(s.server_cert.read_bytes())
    assert server[0].issuer == ca.subject and server[1] == ca
    ca.public_key().verify(server[0].signature, server[0].tbs_certificate_bytes,
                           _ecdsa(server[0]))
    sans = server[0].extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("127.0.0.1") in sans.get_values_for_type(x509.IPAddress)
    assert "localhost" in sans.get_values_for_type(x509.DNSName)
    keystore = s.kafka_keystore.read_text()
    assert keystore.startswith("-----BEGIN PRIVATE KEY-----") and keystore.count("CERTIFICATE") == 4
    for private in (s.ca_key, s.server_key, s.kafka_keystore, s.admin_password,
                    s.client_password):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
    assert s.admin_password.read_text() != s.client_password.read_text()
    before = s.client_password.read_text()
    assert ensure_secrets(config).client_password.read_text() == before  # kept, not redone


def _ecdsa(cert):
    from cryptography.hazmat.primitives.asymmetric import ec

    return ec.ECDSA(cert.signature_hash_algorithm)


def test_tls_channel_needs_its_ca_file(tmp_path):
    config = _secure(tmp_path)
    with pytest.raises(SecretError, match="serving.tls.ca_file"):
        serving_channel(config.serving)
    ensure_secrets(config)
    serving_channel(config.serving).close()


def test_deployment_files_publish_on_loopback_and_hold_no_secret():
    for file in sorted((PROJECT_ROOT / "docker").glob("*.yml")):
        # Compose files; prometheus.yml is a scrape config, with no services.
        services = yaml.safe_load(file.read_text()).get("services") or {}
        for name, service in services.items():
            for port in service.get("ports", []):
                # host:published:container, the host defaulting to loopback
                match = re.fullmatch(r"\$\{RTD_PUBLISH_HOST:-127\.0\.0\.1\}:\d+:\d+", str(port))
                assert match, f"{file.name} {name} publishes {port!r} beyond loopback"
            for key, value in (service.get("environment") or {}).items():
                if re.search("PASSWORD|SECRET|TOKEN", str(key)):
                    assert str(value).startswith("${"), f"{file.name} {name}: {key} in the file"
    for file in sorted((PROJECT_ROOT / "docker").glob("*.json")):
        assert not re.search(r'"(password|sasl\.password|secret)"', file.read_text()), file
