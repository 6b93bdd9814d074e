"""The PSRP gateway in-process for tests: a throwaway CA and server cert, a fake runner, client settings."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from controller.exchange import errors
from controller.exchange.gateway import PsrpGateway, server_ssl_context
from controller.exchange.psrp import PsrpSettings
from controller.exchange.runner import CmdletRunner

USER = "gateway-user"
PASSWORD = "correct horse battery staple"


@dataclass(frozen=True, slots=True)
class Pki:
    ca: Path  # the CA certificate (PEM), given to the client as caBundle
    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_pki(directory: Path, *, name: str = "stagectl test CA") -> Pki:
    """A self-signed CA and a 127.0.0.1/localhost server certificate it signed, written as PEM files."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(_name(name))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(ca=directory / "ca.pem", cert=directory / "server.pem", key=directory / "server.key")
    pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return pki


class FakeRunner:
    """A scripted CmdletRunner: canned rows per cmdlet, errors to raise, warnings to write."""

    def __init__(self) -> None:
        self.rows: dict[str, list[dict[str, object]]] = {}
        self.raises: dict[str, errors.ExchangeError] = {}
        self.warnings: list[str] = []
        self.warn_on: dict[str, str] = {}
        self.calls: list[tuple[str, dict[str, object]]] = []

    def run(self, cmdlet: str, parameters: Mapping[str, object]) -> list[dict[str, object]]:
        self.calls.append((cmdlet, dict(parameters)))
        if cmdlet in self.warn_on:
            self.warnings.append(self.warn_on[cmdlet])
        if cmdlet in self.raises:
            raise self.raises[cmdlet]
        return [dict(row) for row in self.rows.get(cmdlet, [])]

    def close(self) -> None:
        pass


def settings_for(gateway: PsrpGateway, **overrides: object) -> PsrpSettings:
    """Client settings for a gateway started by `running_gateway` (Basic auth, no bootstrap)."""
    values: dict[str, object] = {
        "host": "127.0.0.1",
        "port": gateway.port,
        "ssl": gateway.url.startswith("https"),
        "auth": "basic",
        "username": USER,
        "passwordRef": "env:STAGECTL_TEST_GATEWAY_PASSWORD",
        "bootstrap": "none",
        "operationTimeout": 5,
        "readTimeout": 10,
        "connectionTimeout": 5,
    }
    values.update(overrides)
    return PsrpSettings.model_validate(values)


@contextmanager
def running_gateway(
    runner: CmdletRunner, *, pki: Pki | None = None, **options: object
) -> Iterator[PsrpGateway]:
    """The gateway on 127.0.0.1 and a free port, in a thread, stopped on exit."""
    context = server_ssl_context(str(pki.cert), str(pki.key)) if pki is not None else None
    gateway = PsrpGateway(runner, username=USER, password=PASSWORD, ssl_context=context, **options)  # type: ignore[arg-type]
    with gateway:
        yield gateway
