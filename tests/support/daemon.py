"""Run the real daemon as a subprocess inside a test's network namespace."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from firmware.cli.client import get_json
from firmware.tokens import digest_of
from lab.box import NotifySocket, write_secret

REPO = Path(__file__).resolve().parents[2]
TOKEN = "test-token-0123456789abcdef"
#: The scopes TOKEN has: all of them, so that tests not about scopes may do anything.
TOKEN_SCOPES = "pos,read,admin"
MERCHANT_KEY = "merchant-key-for-tests"


def write_tokens(path: Path, tokens: list[tuple[str, str, str]]) -> Path:
    """A tokens file in the hashed form (`firmware.tokens`): (name, scopes, token) each."""
    return write_secret(path, "# POS tokens\n" + "\n".join(
        f"{name} {scopes} {digest_of(token).hex()}" for name, scopes, token in tokens))


def write_config(tmp: Path, extra: str = "", port: int = 18470,
                 gateway_url: str = "http://127.0.0.1:9", payments: str = "",
                 lte: str = 'simulator = "SKT"',
                 routing: str = 'backend = "none"\nfailover = false',
                 wired: str = 'carrier = "KT"', tls: str = "on") -> Path:
    """A config for tests; `payments` adds keys to [payments], `extra` adds keys to [api]
    and tables. `tls = "on"`: the API speaks HTTPS on 127.0.0.1 too, as on a LAN (the
    clients pin the box's certificate: `DaemonProcess.pin`)."""
    (tmp / "state").mkdir(exist_ok=True)
    tokens = write_tokens(tmp / "pos-tokens", [("tests", TOKEN_SCOPES, TOKEN)])
    merchant_key = write_secret(tmp / "merchant-key", MERCHANT_KEY)
    config = tmp / "storebox.toml"
    config.write_text(f"""\
[device]
id = "store-test"
state_dir = "{tmp / 'state'}"

[payments]
gateway_url = "{gateway_url}"
allow_insecure_gateway = true  # the gateway simulator speaks plain HTTP
merchant_key_file = "{merchant_key}"
lost_attempt_lifetime_s = 1.0  # the tests' gateways are local: no proxy holds a request
{payments}

[routing]
{routing}

[wired]
{wired}

[lte]
{lte}

[api]
listen = "127.0.0.1:{port}"
tokens_file = "{tokens}"
admin_socket = "{tmp / 'api.sock'}"
tls = "{tls}"
{extra}""")
    return config


class DaemonProcess:
    def __init__(self, netns: str, config: Path, env: dict[str, str] | None = None,
                 nofile: int | None = None) -> None:
        #: RLIMIT_NOFILE (soft and hard) for the daemon, as a small box or systemd sets it
        self.nofile = nofile
        self.config = config
        self.notify = NotifySocket(config.parent / "notify.sock")
        self.stderr_path = config.parent / "daemon.log"
        self.netns = netns
        self.env = dict(os.environ, NOTIFY_SOCKET=str(self.notify.path),
                        PYTHONPATH=str(REPO), PYTHONUNBUFFERED="1", **(env or {}))
        self.starts = 0
        self.proc = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.starts += 1
        with self.stderr_path.open("ab") as log:
            return subprocess.Popen(
                ["ip", "netns", "exec", self.netns, sys.executable, "-m", "firmware", "run",
                 "--config", str(self.config)],
                stderr=log, stdout=subprocess.DEVNULL, env=self.env,
                preexec_fn=self._limit_files if self.nofile else None)

    def _limit_files(self) -> None:
        import resource

        assert self.nofile is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as in a power cut or an OOM kill."""
        self.proc.kill()
        self.proc.wait()

    def restart(self) -> None:
        """Start again after the process ended; wait for READY=1."""
        assert self.proc.poll() is not None, "still running"
        self.proc = self._spawn()
        self.notify.wait_for("READY", "1")

    @property
    def socket_address(self) -> str:
        return f"unix:{self.config.parent / 'api.sock'}"

    def get(self, path: str, token: str = TOKEN) -> dict[str, Any]:
        """Over the admin socket, where the caller is admin whatever `token` says."""
        return get_json(self.socket_address, path, token)

    @property
    def tcp_address(self) -> str:
        api = self.api_status()  # https:// pinned to the box's certificate, or http://
        url = str(api["listen"][0])
        return f"{url}#sha256={api['cert_sha256']}" if api["tls"] else url

    def get_tcp(self, path: str, token: str = TOKEN, method: str = "GET",
                timeout: float = 5.0) -> dict[str, Any]:
        """Over TCP from inside the daemon's namespace, where the token decides."""
        from tests.support.netns import inside

        with inside(self.netns):
            return get_json(self.tcp_address, path, token, timeout=timeout, method=method)

    def api_status(self) -> dict[str, Any]:
        """The status's api section, over the admin socket (plain, local)."""
        api: dict[str, Any] = self.get("/v1/status")["api"]
        return api

    @property
    def pin(self) -> str:
        """The SHA-256 of the box's certificate, as its status shows it to pin."""
        pin = self.api_status()["cert_sha256"]
        assert pin, "the API serves no TLS"
        return str(pin)

    def log(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.notify.close()
