"""The secure dev stack's TLS material: a private CA and a broker certificate signed by it.

Generated with the ``cryptography`` package (not ``openssl``/``keytool`` on the PATH, which a developer
machine may lack or have in another version), once per stack, under the stack's own state folder; every
file is written mode 0600 before any byte of it exists on disk. The CA's private key is not kept: nothing
signs again after the broker certificate, so a stolen state folder cannot mint a second trusted server.

* ``ca.pem``: the CA certificate, what every client verifies the broker against (``ssl.ca.location``);
* ``broker.p12``: the broker's key and certificate chain, PKCS#12 protected by a random password (Java
  reads PKCS#12 natively; its PEM key stores want an encrypted key anyway).

The broker certificate names ``127.0.0.1`` and ``localhost`` (the only addresses the dev broker listens
on) as subject alternative names, so clients keep hostname verification on.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_FILE: Final = "ca.pem"
KEYSTORE_FILE: Final = "broker.p12"
KEYSTORE_PASSWORD_FILE: Final = "broker.p12.password"
# Long enough for any dev stack; short enough that a leaked one does not outlive the laptop.
VALIDITY: Final = dt.timedelta(days=365)


def write_private(path: Path, data: bytes) -> None:
    """Create (or replace) ``path`` with mode 0600 from its first byte: opened with that mode, never chmod-ed
    after a write, so no other local user can read it even for an instant."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    tmp.replace(path)


@dataclass(frozen=True)
class BrokerTls:
    """Where the broker's TLS files are; ``ensure`` creates them when absent."""

    folder: Path

    @property
    def ca_file(self) -> Path:
        return self.folder / CA_FILE

    @property
    def keystore_file(self) -> Path:
        return self.folder / KEYSTORE_FILE

    @property
    def keystore_password(self) -> str:
        return (self.folder / KEYSTORE_PASSWORD_FILE).read_text().strip()

    def exists(self) -> bool:
        return all((self.folder / name).exists() for name in (CA_FILE, KEYSTORE_FILE, KEYSTORE_PASSWORD_FILE))

    def ensure(self) -> BrokerTls:
        """Generate the CA and the broker certificate once; a second call keeps the existing ones (clients
        configured with the CA file keep working across restarts)."""
        if self.exists():
            return self
        now = dt.datetime.now(dt.UTC)
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "aoetl dev stack CA")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
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
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        broker_key = ec.generate_private_key(ec.SECP256R1())
        broker_cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name)
            .public_key(broker_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                # the broker also connects to itself (inter-broker), so it acts as a TLS client too
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        password = secrets.token_urlsafe(24)
        keystore = pkcs12.serialize_key_and_certificates(
            b"broker",
            broker_key,
            broker_cert,
            [ca_cert],
            serialization.BestAvailableEncryption(password.encode()),
        )
        write_private(self.folder / KEYSTORE_PASSWORD_FILE, password.encode())
        write_private(self.keystore_file, keystore)
        # last: its presence (with the others) is what `exists` checks
        write_private(self.ca_file, ca_cert.public_bytes(serialization.Encoding.PEM))
        return self
