"""A real mosquitto per test, and an MQTT client that plays the fleet operator."""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiomqtt

from firmware.fleet.mqtt_client import MqttClient
from tests.support.schemas import ContractViolation, check_fleet

MOSQUITTO = "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


class Mosquitto:
    """mosquitto on 127.0.0.1:`port` (in `netns` if given), its log kept for assertions.

    `persistence` keeps sessions and queued QoS 1 messages across a stop/start, as a
    fleet broker would; `users` turns anonymous access off and uses a password file;
    `log_types` (mosquitto's `log_type`s) and `extra` (more config lines) are for the
    fleet benchmark's 10,000 connections (which also raises the open-file limit it
    inherits); `binary` another build of mosquitto (the benchmark's per-second keepalive
    check, benchmarks/broker/), which may be swapped between a stop and a start."""

    def __init__(self, tmp: Path, port: int | None = None, netns: str | None = None,
                 users: dict[str, str] | None = None, tls: TlsFiles | None = None,
                 persistence: bool = True, log_types: tuple[str, ...] = ("all",),
                 extra: tuple[str, ...] = (), binary: str = MOSQUITTO) -> None:
        self.binary = binary
        self.dir = tmp / f"mosquitto-{id(self)}"
        self.dir.mkdir(parents=True)
        self.port = port or free_port()
        self.netns = netns
        self.proc: subprocess.Popen[str] | None = None
        self.lines: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        conf = [f"listener {self.port} 127.0.0.1", "log_dest stderr",
                *(f"log_type {t}" for t in log_types),
                "user root", f"allow_anonymous {'false' if users else 'true'}"]
        if users:
            pwfile = self.dir / "passwd"
            pwfile.write_text("")
            for user, password in users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(pwfile), user, password],
                               check=True, capture_output=True)
            conf.append(f"password_file {pwfile}")
        if tls:
            conf += [f"cafile {tls.ca}", f"certfile {tls.cert}", f"keyfile {tls.key}"]
        if persistence:
            conf += ["persistence true", f"persistence_location {self.dir}/"]
        conf += extra
        self.conf = self.dir / "mosquitto.conf"
        self.conf.write_text("\n".join(conf) + "\n")

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        """Start and wait until it listens (its own "running" log line)."""
        assert self.proc is None or self.proc.poll() is not None
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        self.proc = subprocess.Popen([*prefix, self.binary, "-c", str(self.conf)],
                                     stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     text=True)
        self._lines = queue.Queue()  # this run's lines
        threading.Thread(target=self._read, args=(self.proc, self._lines), daemon=True).start()
        self.wait_log(" running", timeout)

    def _read(self, proc: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self.lines.append(line.rstrip())
            lines.put(line.rstrip())
        lines.put(None)

    def wait_log(self, text: str, timeout: float = 10.0) -> str:
        """Block until a new log line contains `text`."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"mosquitto did not log {text!r}; log:\n"
                                     + "\n".join(self.lines[-30:])) from None
            if line is None:
                raise AssertionError("mosquitto exited; log:\n" + "\n".join(self.lines[-30:]))
            if text in line:
                return line

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def log(self) -> str:
        return "\n".join(self.lines)

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Received:
    topic: str
    payload: bytes
    retain: bool
    at: float

    @property
    def text(self) -> str:
        return self.payload.decode()

    def json(self) -> Any:
        return json.loads(self.payload)

    @property
    def status(self) -> str | None:
        """`online`/`offline` of a `status` payload (JSON since docs/mqtt.md)."""
        from firmware.fleet.topics import parse_status

        value = parse_status(self.payload)["status"]
        return str(value) if value is not None else None

    @property
    def session(self) -> str | None:
        from firmware.fleet.topics import parse_status

        value = parse_status(self.payload)["session"]
        return str(value) if value is not None else None


class Operator:
    """The fleet operator's side: subscribes to `storebox/<device>/#` with aiomqtt. Every
    payload the box publishes is checked against docs/schemas (`check_fleet`).

    With `client_id` set the session is persistent (clean_session False): messages
    published while it is away (e.g. while the broker restarts) are delivered after it
    reconnects, as a real fleet back end would receive them."""

    def __init__(self, port: int, device_id: str, *, client_id: str | None = None,
                 username: str | None = None, password: str | None = None,
                 tls_context: ssl.SSLContext | None = None, host: str = "127.0.0.1") -> None:
        self.port = port
        self.host = host
        self.root = f"storebox/{device_id}"
        self.client_id = client_id
        self.username = username
        self.password = password
        self.tls_context = tls_context
        self.received: list[Received] = []
        self._queues: dict[str, asyncio.Queue[Received]] = {}
        self._client: aiomqtt.Client | None = None
        self._reader: asyncio.Task[None] | None = None

    def _queue(self, suffix: str) -> asyncio.Queue[Received]:
        return self._queues.setdefault(suffix, asyncio.Queue())

    async def connect(self) -> None:
        client = MqttClient(
            self.host, self.port, identifier=self.client_id,
            clean_session=self.client_id is None, username=self.username,
            password=self.password, tls_context=self.tls_context)
        await client.__aenter__()
        self._client = client
        await client.subscribe(f"{self.root}/#", qos=1)
        self._reader = asyncio.create_task(self._read(client))

    async def _read(self, client: aiomqtt.Client) -> None:
        with contextlib.suppress(aiomqtt.MqttError):
            async for message in client.messages:
                topic = str(message.topic)
                assert isinstance(message.payload, bytes)
                got = Received(topic[len(self.root) + 1:], message.payload,
                               bool(message.retain), time.monotonic())
                # held against docs/schemas; a violation is recorded and fails the test
                # at teardown (tests/conftest.py), the reader keeps reading
                with contextlib.suppress(ContractViolation):
                    check_fleet(got.topic, got.payload)
                self.received.append(got)
                self._queue(got.topic).put_nowait(got)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await self._client.__aexit__(None, None, None)
        self._client = None

    async def reconnect(self) -> None:
        await self.close()
        await self.connect()

    async def __aenter__(self) -> Operator:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def next(self, topic: str, timeout: float = 5.0,
                   where: Callable[[Received], bool] = lambda m: True) -> Received:
        """The next message on `topic` (relative to the root) that satisfies `where`."""
        q = self._queue(topic)
        async with asyncio.timeout(timeout):
            while True:
                message = await q.get()
                if where(message):
                    return message

    async def nothing(self, topic: str, within: float) -> None:
        """Assert that no message arrives on `topic` within `within` seconds."""
        with contextlib.suppress(TimeoutError):
            message = await self.next(topic, within)
            raise AssertionError(f"unexpected message on {topic}: {message.payload!r}")

    async def publish(self, topic: str, payload: bytes | str, retain: bool = False) -> None:
        assert self._client is not None
        await self._client.publish(f"{self.root}/{topic}", payload, qos=1, retain=retain)

    async def command(self, name: str, body: dict[str, Any] | bytes, timeout: float = 5.0,
                      answer_id: Any = ...) -> dict[str, Any]:
        """Send a command and wait for its answer on cmd_result (matched by id)."""
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        if answer_id is ...:
            answer_id = body.get("id") if isinstance(body, dict) else None
        await self.publish(f"cmd/{name}", payload)
        message = await self.next("cmd_result", timeout,
                                  where=lambda m: m.json().get("id") == answer_id)
        answer: dict[str, Any] = message.json()
        return answer


def make_tls(directory: Path, host_ip: str = "127.0.0.1") -> TlsFiles:
    """A throw-away CA and a server certificate for `host_ip` (and localhost)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "storebox test fleet CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(hours=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                       crl_sign=True, content_commitment=False,
                                       key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False,
                                       decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                         critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(host_ip))]),
                critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                            serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption()))
    files.key.chmod(0o600)
    return files


def sign_command(key: Any, device_id: str, name: str, command_id: str,
                 args: dict[str, Any], expires_at: str) -> str:
    """The fleet operator's side of a signed command (README "Fleet over MQTT"):
    base64 of the Ed25519 signature of the canonical JSON of the five fields."""
    import base64

    message = json.dumps({"device_id": device_id, "name": name, "id": command_id,
                          "args": args, "expires_at": expires_at},
                         sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return base64.b64encode(key.sign(message.encode("utf-8"))).decode()
