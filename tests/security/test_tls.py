"""TLS on the POS API (docs/openapi.json): the real daemon in a namespace, clients that pin.

What a POS on the shop LAN relies on: HTTPS wherever the API leaves loopback, only TLS
1.2+ with ECDHE and AEAD ciphers, the certificate the status shows is the one served
(and a wrong pin fails), mutual TLS when the box asks for it, and plain HTTP beyond
loopback only when the installer says so, then shown as a fault.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import os
import socket
import ssl
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from firmware.cli.status_view import render_status
from firmware.errors import ApiClientError
from firmware.tls import CERT_NAME, KEY_NAME, box_certificate, server_context
from tests.support.box import pinned_session
from tests.support.daemon import TOKEN, DaemonProcess, write_config
from tests.support.netns import inside
from tests.support.openapi import checked_get_json as get_json

pytestmark = pytest.mark.netns

PORT = 18470
LAN_IP = "10.77.0.1"  # an address beyond loopback, on the namespace's lo


def start(netns: str, tmp: Path, **kwargs: Any) -> DaemonProcess:
    daemon = DaemonProcess(netns, write_config(tmp, **kwargs))
    daemon.notify.wait_for("READY", "1")
    return daemon


@pytest.fixture
def lan(netns: str) -> str:
    subprocess.run(["ip", "-n", netns, "addr", "add", f"{LAN_IP}/32", "dev", "lo"], check=True)
    return netns


@pytest.fixture
def box(netns: str, tmp_path: Path) -> Iterator[DaemonProcess]:
    daemon = start(netns, tmp_path)
    try:
        yield daemon
    finally:
        assert daemon.stop() == 0, daemon.log()[-2000:]


def handshake(netns: str, context: ssl.SSLContext, host: str = "127.0.0.1",
              request: bytes | None = None) -> tuple[ssl.SSLSocket, bytes]:
    """Connect from inside the namespace; the socket and the answer to `request`."""
    with inside(netns):
        raw = socket.create_connection((host, PORT), timeout=5)
    sock = context.wrap_socket(raw)
    answer = b""
    if request is not None:
        sock.sendall(request)
        while chunk := sock.recv(65536):
            answer += chunk
            if b"\r\n\r\n" in answer:
                break
    return sock, answer


def client_context(**settings: Any) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for name, value in settings.items():
            if name == "ciphers":
                context.set_ciphers(value)
            else:
                setattr(context, name, value)
    return context


HEALTHZ = b"GET /healthz HTTP/1.1\r\nHost: box\r\nConnection: close\r\n\r\n"


# --- the box's own certificate ---------------------------------------------------------


def test_the_box_makes_its_certificate_once_and_keeps_it(tmp_path: Path) -> None:
    first = box_certificate(tmp_path, "store-0001")
    cert = x509.load_pem_x509_certificate((tmp_path / CERT_NAME).read_bytes())
    key = serialization.load_pem_private_key((tmp_path / KEY_NAME).read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert (tmp_path / KEY_NAME).stat().st_mode & 0o777 == 0o600
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "store-0001"
    assert cert.not_valid_after_utc - dt.datetime.now(dt.UTC) > dt.timedelta(days=365 * 15)
    assert first.sha256 == hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)
                                          ).hexdigest()
    # a restart keeps it (the POS pinned it); another device id gets a new one
    assert box_certificate(tmp_path, "store-0001").sha256 == first.sha256
    assert box_certificate(tmp_path, "store-0002").sha256 != first.sha256


def test_the_server_context_refuses_compression_and_renegotiation(tmp_path: Path) -> None:
    context = server_context(box_certificate(tmp_path, "store-0001"))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_COMPRESSION
    assert context.options & ssl.OP_NO_RENEGOTIATION
    for cipher in context.get_ciphers():
        if cipher["protocol"] == "TLSv1.2":
            assert cipher["kea"] == "kx-ecdhe" and cipher["aead"], cipher["name"]


# --- what the POS sees -----------------------------------------------------------------


def test_the_status_shows_the_certificate_the_api_serves(box: DaemonProcess,
                                                         netns: str) -> None:
    api = box.api_status()
    assert api["tls"] is True
    assert api["listen"] == [f"https://127.0.0.1:{PORT}"]
    sock, answer = handshake(netns, client_context(), request=HEALTHZ)
    der = sock.getpeercert(binary_form=True)
    assert der is not None
    assert api["cert_sha256"] == hashlib.sha256(der).hexdigest()
    spki = x509.load_der_x509_certificate(der).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert api["spki_sha256_b64"] == base64.b64encode(hashlib.sha256(spki).digest()).decode()
    assert answer.startswith(b"HTTP/1.1 200")
    assert sock.version() in ("TLSv1.2", "TLSv1.3")
    assert sock.compression() is None
    sock.close()
    # `storebox status` prints both pins for the integrator
    view = render_status(box.get("/v1/status"))
    assert api["cert_sha256"] in view
    assert f"sha256//{api['spki_sha256_b64']}" in view


def test_plain_http_to_the_https_port_gets_nothing(box: DaemonProcess, netns: str) -> None:
    with inside(netns), pytest.raises(ApiClientError):
        get_json(f"http://127.0.0.1:{PORT}", "/v1/status", TOKEN, timeout=3)


def refused_in_the_handshake(box: DaemonProcess, netns: str, context: ssl.SSLContext) -> None:
    """The client's hello went out and the box hung up in the handshake (asyncio drops
    the alert): the client sees an alert or EOF, never its own "nothing to offer", and
    the box counts a failed handshake."""
    before = box.api_status()["connections"]["handshake_failed_total"]
    with pytest.raises(ssl.SSLError) as refused:
        handshake(netns, context)
    assert isinstance(refused.value, ssl.SSLEOFError) or "ALERT" in str(refused.value).upper(), \
        refused.value
    assert box.api_status()["connections"]["handshake_failed_total"] == before + 1


@pytest.mark.parametrize("version", ["TLSv1", "TLSv1_1"])
def test_tls_below_1_2_is_refused(box: DaemonProcess, netns: str, version: str) -> None:
    low = getattr(ssl.TLSVersion, version)
    refused_in_the_handshake(box, netns, client_context(
        minimum_version=low, maximum_version=low, ciphers="ALL:@SECLEVEL=0"))


@pytest.mark.parametrize("cipher", [
    # ECDHE with the box's ECDSA key, but CBC with HMAC, no AEAD: OpenSSL's default
    # server list would take each of them
    "ECDHE-ECDSA-AES128-SHA", "ECDHE-ECDSA-AES256-SHA", "ECDHE-ECDSA-AES128-SHA256",
    "ECDHE-ECDSA-AES256-SHA384",
])
def test_tls_1_2_without_aead_is_refused(box: DaemonProcess, netns: str, cipher: str) -> None:
    refused_in_the_handshake(box, netns, client_context(
        maximum_version=ssl.TLSVersion.TLSv1_2, ciphers=cipher))


def test_tls_1_2_with_ecdhe_aead_works(box: DaemonProcess, netns: str) -> None:
    context = client_context(maximum_version=ssl.TLSVersion.TLSv1_2,
                             ciphers="ECDHE-ECDSA-AES128-GCM-SHA256")
    sock, answer = handshake(netns, context, request=HEALTHZ)
    assert sock.version() == "TLSv1.2"
    assert answer.startswith(b"HTTP/1.1 200")
    sock.close()


def test_the_pin_from_the_status_works_and_a_wrong_pin_fails(box: DaemonProcess,
                                                             netns: str) -> None:
    pin = box.pin
    url = f"https://127.0.0.1:{PORT}"
    with inside(netns):
        assert get_json(f"{url}#sha256={pin}", "/v1/status", TOKEN)["device_id"] == "store-test"
        wrong = hashlib.sha256(b"another box").hexdigest()
        with pytest.raises(ApiClientError, match="not the pinned box"):
            get_json(f"{url}#sha256={wrong}", "/v1/status", TOKEN)
        # no pin: the system CA store does not know a box's own certificate
        with pytest.raises(ApiClientError, match=r"(?i)certificate"):
            get_json(url, "/v1/status", TOKEN)


async def test_an_aiohttp_pos_pins_the_box(box: DaemonProcess, netns: str) -> None:
    with inside(netns):
        async with pinned_session(box.pin) as session, \
                session.get(f"https://127.0.0.1:{PORT}/healthz") as r:
            assert r.status == 200
        async with pinned_session(hashlib.sha256(b"x").hexdigest()) as session:
            with pytest.raises(aiohttp.ServerFingerprintMismatch):
                await session.get(f"https://127.0.0.1:{PORT}/healthz")


def test_the_cli_pins_the_certificate_in_the_state_dir(box: DaemonProcess, netns: str,
                                                       tmp_path: Path) -> None:
    """`storebox status --config` over TCP (no admin socket): the pin comes from the
    certificate the box keeps in its state directory."""
    from firmware.cli.client import api_address
    from firmware.config import load_config

    config = load_config(str(box.config))
    (tmp_path / "api.sock").rename(tmp_path / "api.sock.away")
    try:
        address = api_address(config, None)
        assert address == f"https://127.0.0.1:{PORT}#sha256={box_pin_from_file(tmp_path)}"
        with inside(netns):
            assert get_json(address, "/v1/status", TOKEN)["api"]["tls"] is True
    finally:
        (tmp_path / "api.sock.away").rename(tmp_path / "api.sock")


def box_pin_from_file(tmp: Path) -> str:
    cert = x509.load_pem_x509_certificate((tmp / "state" / CERT_NAME).read_bytes())
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


# --- mutual TLS ------------------------------------------------------------------------


def make_ca(tmp: Path, name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .sign(key, hashes.SHA256()))
    (tmp / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key, cert


def make_client(tmp: Path, name: str, ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate]
                ) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca[1].subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .sign(ca[0], hashes.SHA256()))
    cert_file, key_file = tmp / f"{name}.crt", tmp / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_file), str(key_file)


def test_mutual_tls_wants_a_terminal_certificate_from_the_ca(netns: str,
                                                            tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "terminals-ca")
    other_ca = make_ca(tmp_path, "someone-else")
    good = make_client(tmp_path, "pos-1", ca)
    stranger = make_client(tmp_path, "pos-x", other_ca)
    daemon = start(netns, tmp_path, api={"client_ca_file": tmp_path / "terminals-ca.pem"})
    try:
        assert daemon.api_status()["client_certificates"] is True
        # the terminal's own certificate: served
        context = client_context()
        context.load_cert_chain(*good)
        sock, answer = handshake(netns, context, request=HEALTHZ)
        assert answer.startswith(b"HTTP/1.1 200"), answer
        sock.close()
        # no certificate, or one from another CA: no answer (TLS 1.3 reports the alert
        # on the first read, TLS 1.2 in the handshake)
        for cert in (None, stranger):
            context = client_context()
            if cert:
                context.load_cert_chain(*cert)
            with pytest.raises((ssl.SSLError, ConnectionError)):
                sock, answer = handshake(netns, context, request=HEALTHZ)
                assert answer == b""  # closed without a word
                raise ConnectionError("closed")
    finally:
        assert daemon.stop() == 0, daemon.log()[-2000:]


# --- which addresses get TLS -----------------------------------------------------------


def lan_config(tmp: Path, tls: str, **api: Any) -> Path:
    return write_config(tmp, tls=tls, api={"listen": f"{LAN_IP}:{PORT}", **api})


def test_auto_serves_https_beyond_loopback(lan: str, tmp_path: Path) -> None:
    daemon = DaemonProcess(lan, lan_config(tmp_path, "auto"))
    try:
        daemon.notify.wait_for("READY", "1")
        api = daemon.api_status()
        assert api["tls"] is True and api["faults"] == []
        assert api["listen"] == [f"https://{LAN_IP}:{PORT}"]
        sock, answer = handshake(lan, client_context(), host=LAN_IP, request=HEALTHZ)
        assert answer.startswith(b"HTTP/1.1 200")
        sock.close()
    finally:
        assert daemon.stop() == 0, daemon.log()[-2000:]


def test_plain_http_beyond_loopback_is_refused_unless_allowed(lan: str,
                                                              tmp_path: Path) -> None:
    daemon = DaemonProcess(lan, lan_config(tmp_path, "off"))
    try:
        code = daemon.proc.wait(30)
    finally:
        daemon.stop()
    assert code != 0
    assert "api.tls" in daemon.log() and "allow_plain_http" in daemon.log()
    assert not any(m.get("READY") == "1" for m in daemon.notify.messages)


def test_allowed_plain_http_beyond_loopback_is_a_fault(lan: str, tmp_path: Path) -> None:
    daemon = DaemonProcess(lan, lan_config(tmp_path, "off", allow_plain_http=True))
    try:
        daemon.notify.wait_for("READY", "1")
        doc = daemon.get("/v1/status")
        assert doc["api"]["tls"] is False and doc["api"]["cert_sha256"] is None
        assert doc["api"]["faults"] == ["plain_http_on_lan"]
        assert any(e["kind"] == "fault" and e.get("reason") == "plain_http_on_lan"
                   for e in doc["recent_events"]), doc["recent_events"]
        assert "plain_http_on_lan" in render_status(doc)
        with inside(lan):
            assert get_json(f"http://{LAN_IP}:{PORT}", "/healthz", "")["ok"] is True
    finally:
        assert daemon.stop() == 0, daemon.log()[-2000:]


def test_auto_on_loopback_is_plain_http_without_a_fault(netns: str, tmp_path: Path) -> None:
    daemon = start(netns, tmp_path, tls="auto")
    try:
        api = daemon.api_status()
        assert api["tls"] is False and api["faults"] == []
        assert api["listen"] == [f"http://127.0.0.1:{PORT}"]
        with inside(netns):
            assert get_json(f"http://127.0.0.1:{PORT}", "/healthz", "")["ok"] is True
    finally:
        assert daemon.stop() == 0, daemon.log()[-2000:]


def test_the_operators_certificate_is_served(netns: str, tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "shop-ca")
    cert_file, key_file = make_client(tmp_path, "box.shop.example", ca)
    os.chmod(key_file, 0o600)
    daemon = start(netns, tmp_path,
                   api={"tls_cert_file": cert_file, "tls_key_file": key_file})
    try:
        api = daemon.api_status()
        cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
        assert api["cert_source"] == "operator"
        assert api["cert_sha256"] == hashlib.sha256(
            cert.public_bytes(serialization.Encoding.DER)).hexdigest()
        sock, _ = handshake(netns, client_context())
        assert hashlib.sha256(sock.getpeercert(True) or b"").hexdigest() == api["cert_sha256"]
        sock.close()
        assert not (tmp_path / "state" / CERT_NAME).exists()
    finally:
        assert daemon.stop() == 0, daemon.log()[-2000:]


def test_status_json_is_valid_for_the_fleet(box: DaemonProcess) -> None:
    doc = box.get("/v1/status")
    json.dumps(doc)
    assert {"tls", "cert_sha256", "listen"} <= doc["api"].keys()
