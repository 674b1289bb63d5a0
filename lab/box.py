"""The box under drill: its configuration, and the real daemon as a subprocess in the box's
namespace (`python -m firmware run`), with a datagram socket standing in for systemd's
$NOTIFY_SOCKET so the drill knows when it is READY."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from lab.errors import DrillError
from lab.fleet import BROKER_IP, BROKER_PORT
from lab.shop import GATEWAY_IP, LAN_BOX, OTHER_IP, PORT
from payments_cache.sealing import SealKey, generate_keypair

GATEWAY_PORT = 9443
API_PORT = 8470


def write_secret(path: Path, value: str) -> Path:
    """`value` on one line in `path`, readable by its owner only (0600)."""
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


@dataclass(frozen=True)
class SealKeyPair:
    """The gateway's seal key pair made for one run (CONTRACTS §5a). `private` is for the
    gateway simulator only; the box's config names `public`."""

    private: Path
    public: Path
    kid: str

    def private_pem(self) -> bytes:
        return self.private.read_bytes()


def write_seal_keys(workdir: Path) -> SealKeyPair:
    """A fresh X25519 key pair in `workdir`: `gateway-seal.key` (PKCS8, created 0600, never
    readable by anyone else even for an instant) and `gateway-seal.pub` (SPKI)."""
    private_pem, public_pem = generate_keypair()
    private = workdir / "gateway-seal.key"
    private.unlink(missing_ok=True)  # a work dir used again: a new pair each run
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem)
    public = workdir / "gateway-seal.pub"
    public.write_bytes(public_pem)
    return SealKeyPair(private, public, SealKey.from_pem(public_pem, source=str(public)).kid)


def write_config(workdir: Path, *, merchant_key: str, token: str, lte_carrier: str,
                 failback_after_s: float, seal_key_file: Path | None = None) -> Path:
    """The box's config for the drill: the shop's interfaces, the gateway simulator and the
    fleet broker on the internet, the modem simulator, mock LEDs, and the POS API on the
    LAN address. With `seal_key_file` (the gateway's *public* key) the box seals every
    card it keeps for an offline payment."""
    seal = "" if seal_key_file is None else f'seal_key_file = "{seal_key_file}"\n'
    (workdir / "state").mkdir(mode=0o700, exist_ok=True)
    tokens = write_secret(workdir / "pos-tokens", token)
    key_file = write_secret(workdir / "merchant-key", merchant_key)
    config = workdir / "storebox.toml"
    config.write_text(f"""\
# written by `storebox drill`
[device]
id = "store-drill"
state_dir = "{workdir / 'state'}"

[wired]
interface = "wan0"
carrier = "KT"

[lte]
interface = "wwan0"
simulator = "{lte_carrier}"

[routing]
backend = "netlink"
failover = true
failback_after_s = {failback_after_s}
lan_interfaces = ["lan0"]

[probes]
targets = ["http://{GATEWAY_IP}:{GATEWAY_PORT}/health", "tcp:{OTHER_IP}:{PORT}",
           "icmp:{GATEWAY_IP}"]

[payments]
gateway_url = "http://{GATEWAY_IP}:{GATEWAY_PORT}"
allow_insecure_gateway = true  # the simulator speaks plain HTTP
lost_attempt_lifetime_s = 10.0  # no load balancer between the box and the simulator
merchant_key_file = "{key_file}"
{seal}
[api]
listen = "{LAN_BOX}:{API_PORT}"
tokens_file = "{tokens}"
admin_socket = "{workdir / 'api.sock'}"

[hw]
pin_factory = "mock"

[fleet]
mqtt_url = "mqtt://{BROKER_IP}:{BROKER_PORT}"
keepalive_s = 5
reconnect_max_s = 2.0
""")
    return config


class NotifySocket:
    """A datagram socket standing in for systemd's $NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.messages: list[dict[str, str]] = []

    def wait_for(self, key: str, value: str | None = None,
                 timeout: float = 10.0) -> dict[str, str]:
        """Block on the socket until a datagram carrying KEY(=VALUE) arrives."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no {key}={value} from the daemon; got {self.messages}")
            self.sock.settimeout(remaining)
            data = self.sock.recv(4096).decode()
            message = dict(line.split("=", 1) for line in data.splitlines() if "=" in line)
            self.messages.append(message)
            if key in message and (value is None or message[key] == value):
                return message

    def close(self) -> None:
        self.sock.close()


class BoxDaemon:
    """`storebox run` inside namespace `netns`; its stderr goes to `daemon.log`."""

    def __init__(self, netns: str, config: Path) -> None:
        self.config = config
        self.log_path = config.parent / "daemon.log"
        self.notify = NotifySocket(config.parent / "notify.sock")
        env = dict(os.environ, NOTIFY_SOCKET=str(self.notify.path), PYTHONUNBUFFERED="1")
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", netns, sys.executable, "-m", "firmware", "run",
                 "--config", str(config)], stderr=log, stdout=subprocess.DEVNULL, env=env)

    @property
    def admin_socket(self) -> Path:
        return self.config.parent / "api.sock"

    def wait_ready(self, timeout: float = 30.0) -> None:
        try:
            self.notify.wait_for("READY", "1", timeout)
        except TimeoutError:
            raise DrillError("start the box", f"no READY=1 within {timeout:g} s; "
                             f"see {self.log_path}:\n{self.log_tail()}") from None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after `timeout`; the exit code."""
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return -signal.SIGKILL
        finally:
            self.notify.close()


def new_secret() -> str:
    return secrets.token_urlsafe(24)
