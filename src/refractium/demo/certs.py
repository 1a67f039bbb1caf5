"""Throw-away certificates: a private CA and a server certificate it signed.

For the demo's TLS backend (and the test suite's), never for production:
the keys live as long as the process and the CA is trusted by nobody but
the client told to (``curl --cacert``).
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class CertificateFiles:
    """Where :meth:`Issued.write` put the PEM files."""

    ca_file: Path
    cert_file: Path
    key_file: Path


@dataclass(frozen=True, slots=True)
class Issued:
    """PEM bytes: the CA certificate, the server certificate and its key."""

    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    def write(self, directory: Path) -> CertificateFiles:
        """Write ``ca.pem``, ``cert.pem`` and ``key.pem`` into ``directory``."""
        files = CertificateFiles(
            directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
        )
        files.ca_file.write_bytes(self.ca_pem)
        files.cert_file.write_bytes(self.cert_pem)
        files.key_file.touch(mode=0o600)
        files.key_file.write_bytes(self.key_pem)
        return files

    def server_context(self, alpn: Sequence[str] = ()) -> ssl.SSLContext:
        """A TLS server context presenting the certificate and the CA that signed it.

        ``alpn`` lists the protocols it accepts, in its order of preference; when
        empty, it selects none.
        """
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        # ssl loads certificates and keys only from files.
        with tempfile.TemporaryDirectory(prefix="refractium-cert-") as tmp:
            chain = Path(tmp) / "chain.pem"
            chain.write_bytes(self.cert_pem + self.ca_pem)
            key = Path(tmp) / "key.pem"
            key.write_bytes(self.key_pem)
            context.load_cert_chain(chain, key)
        if alpn:
            context.set_alpn_protocols(list(alpn))
        return context


def issue(
    names: Sequence[str],
    *,
    addresses: Sequence[str] = ("127.0.0.1",),
    ca_name: str = "Refractium throw-away CA",
    days: int = 30,
) -> Issued:
    """A fresh CA and an EC P-256 server certificate for DNS ``names`` and IP ``addresses``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    not_before = now - datetime.timedelta(hours=1)
    not_after = now + datetime.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    issuer = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, ca_name)])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(issuer)
        .issuer_name(issuer)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in names]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
    common_name = names[0] if names else addresses[0]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return Issued(
        ca_pem=ca_cert.public_bytes(pem),
        cert_pem=cert.public_bytes(pem),
        key_pem=key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
