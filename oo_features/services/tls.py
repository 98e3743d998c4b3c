"""Certificates for the cluster profile: a CA and one broker certificate, made with `openssl`.

Contract: `make_certificates(directory)` writes, once, into `directory`::

    ca.key, ca.pem           the run's own certificate authority (RSA 2048, 30 days)
    broker.key, broker.csr   the brokers' key (unencrypted PKCS#8) and signing request
    broker.pem               the brokers' certificate, signed by the CA, SAN IP:127.0.0.1
                             and DNS:localhost (librdkafka checks the host name)
    broker-keystore.pem      broker.key then broker.pem: Kafka's PEM keystore
                             (`ssl.keystore.type=PEM`, no `ssl.key.password`)

and returns their paths. Files already present are kept (the brokers keep their identity
across `up`s). `openssl` missing or failing raises `ServicesError` naming the command and
its output. Keys are private to the user (mode 0600).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from oo_features.services.processes import _require_tool
from oo_features.services.state import ServicesError

DAYS = "30"


@dataclass(frozen=True)
class Certificates:
    """Where the run's CA and the brokers' PEM keystore are."""

    ca: Path
    keystore: Path


def _openssl(*args: str) -> None:
    openssl = _require_tool("openssl", "install it (Debian: apt-get install -y openssl)")
    result = subprocess.run([openssl, *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ServicesError(
            f"openssl {' '.join(args[:2])} failed (exit {result.returncode}): "
            f"{result.stderr.strip()[-2000:]}"
        )


def make_certificates(directory: Path) -> Certificates:
    """Create the CA and broker certificate in `directory` unless they exist; their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_pem = directory / "ca.key", directory / "ca.pem"
    key, csr, pem = directory / "broker.key", directory / "broker.csr", directory / "broker.pem"
    keystore = directory / "broker-keystore.pem"
    if keystore.exists() and ca_pem.exists():
        return Certificates(ca=ca_pem, keystore=keystore)
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", DAYS,
        "-subj", "/CN=oo-features local CA", "-keyout", str(ca_key), "-out", str(ca_pem),
    )  # fmt: skip
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
        "-keyout", str(key), "-out", str(csr),
    )  # fmt: skip
    extensions = directory / "broker.ext"
    extensions.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "extendedKeyUsage=serverAuth,clientAuth\n"
        "keyUsage=digitalSignature,keyEncipherment\n"
    )
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca_pem), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", DAYS, "-extfile", str(extensions), "-out", str(pem),
    )  # fmt: skip
    pkcs8 = directory / "broker.pk8"
    _openssl("pkcs8", "-topk8", "-nocrypt", "-in", str(key), "-out", str(pkcs8))
    keystore.write_text(pkcs8.read_text() + pem.read_text())
    for private in (ca_key, key, pkcs8, keystore):
        private.chmod(0o600)
    return Certificates(ca=ca_pem, keystore=keystore)
