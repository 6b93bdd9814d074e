"""A throwaway certificate authority and a loopback server certificate, so the demo's gateway speaks TLS
and the client validates it against a CA bundle, as it must against a real gateway. The tests' etcd members
take their server and client certificates from the same kind of CA (`Authority.issue`)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOOPBACK = x509.SubjectAlternativeName(
    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
)


@dataclass(frozen=True, slots=True)
class Pki:
    ca: Path  # the CA certificate (PEM), given to the client as caBundle
    cert: Path
    key: Path


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


@dataclass
class Authority:
    """A self-signed CA valid for a day, and the certificates it issues."""

    name: str = "stagectl test CA"
    key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))

    def __post_init__(self) -> None:
        self.cert = (
            self._builder(_name(self.name), self.key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    def _builder(self, subject: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(_name(self.name))
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(self.now - dt.timedelta(minutes=5))
            .not_valid_after(self.now + dt.timedelta(days=1))
        )

    def issue(
        self,
        common_name: str,
        usages: list[x509.ObjectIdentifier],
        san: x509.SubjectAlternativeName | None = None,
        *,
        key_usage: bool = False,
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        """A certificate for `common_name` with these extended key usages (and `san`), and its key."""
        key = ec.generate_private_key(ec.SECP256R1())
        builder = self._builder(_name(common_name), key.public_key()).add_extension(
            x509.BasicConstraints(ca=False, path_length=None), critical=True
        )
        if key_usage:  # digital signature and key agreement: what an ECDHE handshake uses
            builder = builder.add_extension(
                x509.KeyUsage(True, False, True, False, False, False, False, False, False), critical=True
            )
        if san is not None:
            builder = builder.add_extension(san, critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False).add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
        )
        return builder.sign(self.key, hashes.SHA256()), key


def write_cert(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.chmod(0o600)
    return path


def make_pki(directory: Path, *, name: str = "stagectl test CA") -> Pki:
    """A self-signed CA and a 127.0.0.1/localhost server certificate it signed, written as PEM files."""
    authority = Authority(name)
    cert, key = authority.issue("localhost", [ExtendedKeyUsageOID.SERVER_AUTH], LOOPBACK)
    directory.mkdir(parents=True, exist_ok=True)
    return Pki(
        ca=write_cert(directory / "ca.pem", authority.cert),
        cert=write_cert(directory / "server.pem", cert),
        key=write_key(directory / "server.key", key),
    )
