"""The real daemon as a subprocess inside a test's network namespace: `lab.box` with the
tests' configuration and the API calls tests make of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from firmware.cli.client import get_json
from firmware.config.schema import (
    ApiConfig,
    Config,
    DeviceConfig,
    LteConfig,
    PaymentsConfig,
    RoutingConfig,
    WiredConfig,
)
from firmware.tokens import digest_of
from lab.box import BoxDaemon, configure, write_secret
from lab.box import write_config as write_box_config

REPO = Path(__file__).resolve().parents[2]
TOKEN = "test-token-0123456789abcdef"
#: The scopes TOKEN has: all of them, so that tests not about scopes may do anything.
TOKEN_SCOPES = "pos,read,admin"
MERCHANT_KEY = "merchant-key-for-tests"


def write_tokens(path: Path, tokens: list[tuple[str, str, str]]) -> Path:
    """A tokens file in the hashed form (`firmware.tokens`): (name, scopes, token) each."""
    return write_secret(path, "# POS tokens\n" + "\n".join(
        f"{name} {scopes} {digest_of(token).hex()}" for name, scopes, token in tokens))


def base_config(tmp: Path, *, port: int = 18470, gateway_url: str = "http://127.0.0.1:9",
                tls: str = "on") -> Config:
    """The tests' box, its secrets written in `tmp`: no route control, the modem simulator,
    the API on 127.0.0.1:`port`. `tls = "on"`: the API speaks HTTPS on 127.0.0.1 too, as
    on a LAN (the clients pin the box's certificate: `DaemonProcess.pin`)."""
    (tmp / "state").mkdir(exist_ok=True)
    tokens = write_tokens(tmp / "pos-tokens", [("tests", TOKEN_SCOPES, TOKEN)])
    merchant_key = write_secret(tmp / "merchant-key", MERCHANT_KEY)
    return Config(
        device=DeviceConfig(id="store-test", state_dir=str(tmp / "state")),
        payments=PaymentsConfig(
            gateway_url=gateway_url,
            allow_insecure_gateway=True,  # the gateway simulator speaks plain HTTP
            merchant_key_file=str(merchant_key),
            lost_attempt_lifetime_s=1.0),  # the tests' gateways are local: no proxy holds one
        routing=RoutingConfig(backend="none", failover=False),
        wired=WiredConfig(carrier="KT"),
        lte=LteConfig(simulator="SKT"),
        api=ApiConfig(listen=f"127.0.0.1:{port}", tokens_file=str(tokens),
                      admin_socket=str(tmp / "api.sock"), tls=tls),  # type: ignore[arg-type]
    )


def write_config(tmp: Path, *, port: int = 18470, gateway_url: str = "http://127.0.0.1:9",
                 tls: str = "on", **tables: dict[str, Any]) -> Path:
    """`base_config` with some keys of some tables changed (`lab.box.configure`), e.g.
    ``write_config(tmp, payments={"seal_key_file": path}, debug={...})``, written to
    `tmp/storebox.toml`."""
    config = configure(base_config(tmp, port=port, gateway_url=gateway_url, tls=tls), **tables)
    return write_box_config(tmp / "storebox.toml", config, by="the tests")


class DaemonProcess(BoxDaemon):
    """The daemon (`lab.box.BoxDaemon`) running this tree's code, and the API calls tests
    make of it."""

    def __init__(self, netns: str, config: Path, env: dict[str, str] | None = None,
                 nofile: int | None = None) -> None:
        super().__init__(netns, config, env={"PYTHONPATH": str(REPO), **(env or {})},
                         nofile=nofile)

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
