"""TLS for the POS API (docs/openapi.json): the box's own certificate, the server context, pinning.

Which listen addresses get HTTPS (`api.tls`):

- ``"auto"`` (default): HTTPS on every address but loopback; plain HTTP on 127.0.0.0/8,
  ::1 and ``localhost`` only (nothing crosses a wire there).
- ``"on"``: HTTPS on loopback too (the tests, the drill and a paranoid installer).
- ``"off"``: plain HTTP. Beyond loopback only with ``api.allow_plain_http = true``, and
  then the status carries the api fault ``plain_http_on_lan``; without it the daemon
  refuses to start (`api_problems`).

The certificate is the operator's (``api.tls_cert_file`` + ``api.tls_key_file``) or the
box's own: ECDSA P-256, self-signed, subject CN = ``device.id``, valid 20 years, made at
first start in ``device.state_dir`` (``api-tls.key`` 0600, never replaced while it loads
and matches the device id). A POS trusts it by pinning: the SHA-256 of the DER
certificate (``api.cert_sha256`` in the status) or, as curl does, of its public key
(``api.spki_sha256_b64``, for ``--pinnedpubkey sha256//…``).

The server context speaks TLS 1.2 and 1.3 only, ECDHE key exchange with AEAD ciphers
(AES-GCM, ChaCha20-Poly1305), no compression, no renegotiation. With
``api.client_ca_file`` every client must present a certificate that CA signed
(mutual TLS, ``CERT_REQUIRED``).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import os
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from firmware.config.schema import ApiConfig
from firmware.errors import FirmwareError

CERT_NAME = "api-tls.crt"
KEY_NAME = "api-tls.key"
VALIDITY_DAYS = 20 * 365
#: TLS 1.2 suites: ECDHE only, AEAD only (TLS 1.3 suites are all AEAD with (EC)DHE).
CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
#: The api fault when plain HTTP is served beyond loopback.
PLAIN_HTTP_FAULT = "plain_http_on_lan"


class TlsSetupError(FirmwareError):
    """The API's TLS could not be set up; `key` names the config key at fault."""

    def __init__(self, key: str, reason: str) -> None:
        self.key = key
        self.reason = reason
        super().__init__(f"{key}: {reason}")


class PinMismatch(FirmwareError, ssl.SSLError):
    """The server's certificate is not the pinned one."""


@dataclass(frozen=True)
class CertInfo:
    cert_file: Path
    key_file: Path
    der: bytes
    source: Literal["box", "operator"]

    @property
    def sha256(self) -> str:
        return cert_sha256(self.der)

    @property
    def spki_sha256_b64(self) -> str:
        return spki_sha256_b64(self.der)

    @property
    def not_after(self) -> dt.datetime:
        return x509.load_der_x509_certificate(self.der).not_valid_after_utc

    @property
    def subject(self) -> str:
        return x509.load_der_x509_certificate(self.der).subject.rfc4514_string()


def cert_sha256(der: bytes) -> str:
    """Hex SHA-256 of a DER certificate: what `api.cert_sha256` shows and clients pin."""
    return hashlib.sha256(der).hexdigest()


def spki_sha256_b64(der: bytes) -> str:
    """Base64 SHA-256 of the certificate's SubjectPublicKeyInfo (curl's --pinnedpubkey)."""
    spki = x509.load_der_x509_certificate(der).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def normalise_pin(pin: str) -> str:
    """A pin as lower-case hex without separators ("AB:CD…" as openssl prints it works)."""
    hexpin = pin.strip().lower().replace(":", "")
    if hexpin.startswith("sha256:"):
        hexpin = hexpin[7:]
    if len(hexpin) != 64 or any(c not in "0123456789abcdef" for c in hexpin):
        raise ValueError(f"a pin is the 64 hex digits of a SHA-256, got {pin!r}")
    return hexpin


# ---------------------------------------------------------------------------------------
# which addresses get TLS: `firmware.config.listeners` (is_loopback, wants_tls,
# api_problems), re-exported here


# ---------------------------------------------------------------------------------------
# certificates


def box_certificate(state_dir: str | Path, device_id: str,
                    hosts: tuple[str, ...] = ()) -> CertInfo:
    """The box's own certificate in `state_dir`, made now if missing or unusable.

    Kept across restarts and upgrades (the POS pinned it); replaced only when it cannot
    be loaded, its key does not match, or its subject is not `device_id`."""
    directory = Path(state_dir)
    cert_file, key_file = directory / CERT_NAME, directory / KEY_NAME
    existing = _load_own(cert_file, key_file, device_id)
    if existing is not None:
        return existing
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _self_signed(key, device_id, hosts)
    key_pem = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    _write_private(key_file, key_pem)
    tmp = cert_file.with_suffix(".tmp")
    tmp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp, cert_file)
    return CertInfo(cert_file, key_file, cert.public_bytes(serialization.Encoding.DER), "box")


def operator_certificate(cert_file: str, key_file: str) -> CertInfo:
    """The operator's certificate (leaf first); its key must match."""
    try:
        certs = x509.load_pem_x509_certificates(Path(cert_file).read_bytes())
    except (OSError, ValueError) as exc:
        raise TlsSetupError("api.tls_cert_file", f"cannot load {cert_file!r}: {exc}") from exc
    try:
        key = serialization.load_pem_private_key(Path(key_file).read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise TlsSetupError("api.tls_key_file", f"cannot load {key_file!r}: {exc}") from exc
    leaf = certs[0]
    if _public_der(key.public_key()) != _public_der(leaf.public_key()):
        raise TlsSetupError("api.tls_key_file", f"{key_file!r} is not the key of the "
                                                f"certificate in {cert_file!r}")
    return CertInfo(Path(cert_file), Path(key_file),
                    leaf.public_bytes(serialization.Encoding.DER), "operator")


def api_certificate(api: ApiConfig, state_dir: str | Path, device_id: str) -> CertInfo:
    if api.tls_cert_file:
        return operator_certificate(api.tls_cert_file, api.tls_key_file)
    return box_certificate(state_dir, device_id, _san_hosts(api.listen, device_id))


def _san_hosts(listen: str, device_id: str) -> tuple[str, ...]:
    hosts = [device_id, socket.gethostname(), "localhost", "127.0.0.1", "::1"]
    host = listen.rpartition(":")[0].strip("[]")
    if host and host not in ("0.0.0.0", "::"):
        hosts.insert(0, host)
    return tuple(dict.fromkeys(h for h in hosts if h))


def _load_own(cert_file: Path, key_file: Path, device_id: str) -> CertInfo | None:
    try:
        cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not names or names[0].value != device_id:
        return None
    if _public_der(key.public_key()) != _public_der(cert.public_key()):
        return None
    if key_file.stat().st_mode & 0o077:
        key_file.chmod(0o600)
    return CertInfo(cert_file, key_file, cert.public_bytes(serialization.Encoding.DER), "box")


def _public_der(public: object) -> bytes:
    return public.public_bytes(  # type: ignore[attr-defined, no-any-return]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` 0600 from the first byte (a fresh file replaces the old)."""
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _self_signed(key: ec.EllipticCurvePrivateKey, device_id: str,
                 hosts: tuple[str, ...]) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, device_id),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "storebox")])
    now = dt.datetime.now(dt.UTC)
    alt: list[x509.GeneralName] = []
    for host in dict.fromkeys((device_id, *hosts)):
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt.append(x509.DNSName(host))
    public = key.public_key()
    return (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=VALIDITY_DAYS))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_agreement=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .sign(key, hashes.SHA256()))


# ---------------------------------------------------------------------------------------
# contexts


def server_context(cert: CertInfo, client_ca_file: str = "") -> ssl.SSLContext:
    """TLS 1.2+ with ECDHE + AEAD, no compression or renegotiation; mTLS with a CA file."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(CIPHERS)
    context.options |= (ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
                        | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_SINGLE_ECDH_USE)
    try:
        context.load_cert_chain(cert.cert_file, cert.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError("api.tls_cert_file", f"cannot use {cert.cert_file}: {exc}") from exc
    if client_ca_file:
        try:
            context.load_verify_locations(cafile=client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise TlsSetupError("api.client_ca_file",
                                f"cannot load {client_ca_file!r}: {exc}") from exc
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def pinning_client_context(client_cert: str = "", client_key: str = "") -> ssl.SSLContext:
    """A client context that trusts nothing by itself: the caller checks the pin
    (`check_pin`) after the handshake. TLS 1.2+; optional client certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if client_cert:
        context.load_cert_chain(client_cert, client_key or None)
    return context


def check_pin(sock: ssl.SSLSocket | ssl.SSLObject, pin: str) -> None:
    """Raise `PinMismatch` unless the peer's certificate has SHA-256 `pin` (hex)."""
    der = sock.getpeercert(binary_form=True)
    got = cert_sha256(der) if der else "no certificate"
    if got != normalise_pin(pin):
        raise PinMismatch(f"the server's certificate {got} is not the pinned {pin}")
