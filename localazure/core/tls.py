"""The emulator's own certificate authority and server certificate.

Clients trust the emulator through ``REQUESTS_CA_BUNDLE`` pointing at ``ca.pem``; verification is
never turned off. The server certificate names the loopback address and the Azure host suffixes
that the client hook resolves to the emulator (see ``localazure.client_hook``).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from localazure.settings import REDIRECTED_SUFFIXES

_VALIDITY = dt.timedelta(days=825)


def _write_private(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _issue_ca(tls_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localazure development CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    (tls_dir / "ca.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(tls_dir / "ca-key.pem", _pem_key(key))
    return cert, key


def _load_ca(tls_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    cert = x509.load_pem_x509_certificate((tls_dir / "ca.pem").read_bytes())
    key = serialization.load_pem_private_key((tls_dir / "ca-key.pem").read_bytes(), None)
    return cert, key


def _issue_server(tls_dir: Path, host: str, extra_names: tuple[str, ...], ca_cert, ca_key) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.DNSName("localhost")]
    names += [
        x509.DNSName("*" + suffix if suffix.startswith(".") else suffix)
        for suffix in REDIRECTED_SUFFIXES
    ]
    names += [x509.DNSName(name) for name in extra_names]
    try:
        names.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        names.append(x509.DNSName(host))
    if host != "127.0.0.1":
        names.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localazure")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    (tls_dir / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_private(tls_dir / "server-key.pem", _pem_key(key))
    (tls_dir / "server.host").write_text(_server_identity(host, extra_names))


def _server_identity(host: str, extra_names: tuple[str, ...]) -> str:
    """What the server certificate was issued for; a change re-issues it."""
    return "|".join((host, *REDIRECTED_SUFFIXES, *extra_names))


def ensure_certificates(
    tls_dir: Path, host: str, extra_names: tuple[str, ...] = ()
) -> tuple[Path, Path]:
    """Create the CA once and a server certificate for ``host``, the redirected suffixes and
    ``extra_names`` (DNS names, wildcards allowed); return (cert, key) paths."""
    tls_dir.mkdir(parents=True, exist_ok=True)
    if (tls_dir / "ca.pem").exists() and (tls_dir / "ca-key.pem").exists():
        ca_cert, ca_key = _load_ca(tls_dir)
    else:
        ca_cert, ca_key = _issue_ca(tls_dir)
    host_file = tls_dir / "server.host"
    if (
        not (tls_dir / "server.pem").exists()
        or not host_file.exists()
        or (host_file.read_text() != _server_identity(host, extra_names))
    ):
        _issue_server(tls_dir, host, extra_names, ca_cert, ca_key)
    return tls_dir / "server.pem", tls_dir / "server-key.pem"
