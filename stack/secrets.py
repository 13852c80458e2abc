"""The secured local stack's CA, certificates and passwords, generated at set-up under
``<stack>/secrets`` (ignored by git, files readable by their owner only).

One local CA signs one server certificate for 127.0.0.1 / localhost, which the Kafka
broker (client and controller listeners) and the model server's gRPC port both present.
Passwords are random; the Kafka client user's SCRAM credential is created from its
password file when the broker's storage is formatted (stack/kafka_broker.py).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from rtd_core.config import KafkaSecurityConfig, RtdConfig, ServingTlsConfig

CLIENT_USER = "rtd"
ADMIN_USER = "admin"
# Long enough for a development stack; regenerate with `rtd stack down` and removing
# <stack>/secrets.
VALID_DAYS = 365


@dataclass(frozen=True)
class StackSecrets:
    folder: Path

    @property
    def ca_cert(self) -> Path:
        return self.folder / "ca.pem"

    @property
    def ca_key(self) -> Path:
        return self.folder / "ca-key.pem"

    @property
    def server_cert(self) -> Path:
        """The server's certificate followed by the CA's (the chain it presents)."""
        return self.folder / "server.pem"

    @property
    def server_key(self) -> Path:
        return self.folder / "server-key.pem"

    @property
    def kafka_keystore(self) -> Path:
        """Kafka's PEM keystore: the unencrypted PKCS#8 key, then the chain."""
        return self.folder / "kafka-keystore.pem"

    @property
    def admin_password(self) -> Path:
        return self.folder / "kafka-admin.password"

    @property
    def client_password(self) -> Path:
        return self.folder / "kafka-client.password"

    def complete(self) -> bool:
        return all(p.is_file() for p in (self.ca_cert, self.ca_key, self.server_cert,
                                         self.server_key, self.kafka_keystore,
                                         self.admin_password, self.client_password))


def stack_secrets(config: RtdConfig) -> StackSecrets:
    return StackSecrets(config.stack_path / "secrets")


def secured(config: RtdConfig) -> RtdConfig:
    """``config`` with Kafka on SASL_SSL (SCRAM-SHA-512) and the model server on TLS,
    using the stack's generated secrets (see ``ensure_secrets``)."""
    s = stack_secrets(config)
    kafka = config.kafka.model_copy(update={"security": KafkaSecurityConfig(
        protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", username=CLIENT_USER,
        password_file=str(s.client_password), ca_file=str(s.ca_cert))})
    serving = config.serving.model_copy(update={"tls": ServingTlsConfig(
        enabled=True, ca_file=str(s.ca_cert), cert_file=str(s.server_cert),
        key_file=str(s.server_key))})
    return config.model_copy(update={"kafka": kafka, "serving": serving})


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def ensure_secrets(config: RtdConfig) -> StackSecrets:
    """Generate the CA, the server certificate and the passwords unless all exist."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    s = stack_secrets(config)
    if s.complete():
        return s
    s.folder.mkdir(parents=True, exist_ok=True)
    s.folder.chmod(0o700)
    now = dt.datetime.now(dt.UTC)
    not_after = now + dt.timedelta(days=VALID_DAYS)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rtd local stack CA")])
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False,
                                     encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        # Client auth too: the broker presents it to its own controller listener (mTLS).
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    pkcs8 = serialization.PrivateFormat.PKCS8
    plain = serialization.NoEncryption()
    ca_pem, cert_pem = ca_cert.public_bytes(pem), cert.public_bytes(pem)
    key_pem = key.private_bytes(pem, pkcs8, plain)
    s.ca_cert.write_bytes(ca_pem)
    _write_private(s.ca_key, ca_key.private_bytes(pem, pkcs8, plain))
    s.server_cert.write_bytes(cert_pem + ca_pem)
    _write_private(s.server_key, key_pem)
    _write_private(s.kafka_keystore, key_pem + cert_pem + ca_pem)
    for path in (s.admin_password, s.client_password):
        _write_private(path, secrets.token_urlsafe(24).encode())
    return s
