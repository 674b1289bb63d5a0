"""The box under drill or test: its configuration, built from the schema's dataclasses
(`firmware.config.schema`) and written with a TOML writer, and the real daemon as a
subprocess in a namespace (`python -m firmware run`), with a datagram socket standing in
for systemd's $NOTIFY_SOCKET so the caller knows when it is READY. The drill
(`lab.drill.config`) and the tests (`tests/support/daemon.py`) both start the box here."""

from __future__ import annotations

import dataclasses
import os
import resource
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from firmware.config.schema import Config
from lab.errors import DrillError
from payments_cache.sealing import SealKey, generate_keypair


def write_secret(path: Path, value: str) -> Path:
    """`value` on one line in `path`, readable by its owner only (0600)."""
    path.write_text(value + "\n")
    path.chmod(0o600)
    return path


@dataclass(frozen=True)
class SealKeyPair:
    """The gateway's seal key pair made for one run (docs/gateway-protocol.md). `private` is for the
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


def configure(config: Config, **tables: Mapping[str, Any]) -> Config:
    """`config` with some keys of some tables changed, e.g.
    ``configure(config, api={"tls": "off"}, debug={"extra_components": [...]})``.

    Paths may be given as `Path`s (the schema keeps strings). Values are not validated
    here: a test may write a bad config on purpose, and the daemon's loader judges it. An
    unknown table or key raises TypeError, so that a typo fails the caller at once."""
    changes: dict[str, Any] = {}
    for table, keys in tables.items():
        section = getattr(config, table, None)
        if table == "source" or not dataclasses.is_dataclass(section):
            raise TypeError(f"no table {table!r} in the configuration schema")
        values = {k: os.fspath(v) if isinstance(v, os.PathLike) else v for k, v in keys.items()}
        changes[table] = dataclasses.replace(section, **values)  # type: ignore[type-var]
    return dataclasses.replace(config, **changes)


def config_document(config: Config) -> dict[str, Any]:
    """`config` as a TOML document: each table with the keys that differ from the schema's
    defaults (a key without a default always), tables left at their defaults left out."""
    document: dict[str, Any] = {}
    for table in dataclasses.fields(config):
        if table.name == "source":
            continue
        section = getattr(config, table.name)
        keys = {f.name: getattr(section, f.name) for f in dataclasses.fields(section)
                if _set(section, f)}
        if keys:
            document[table.name] = keys
    return document


def _set(section: object, f: dataclasses.Field[Any]) -> bool:
    if f.default is not dataclasses.MISSING:
        return bool(getattr(section, f.name) != f.default)
    if f.default_factory is not dataclasses.MISSING:
        return bool(getattr(section, f.name) != f.default_factory())
    return True


def write_config(path: Path, config: Config, *, by: str) -> Path:
    """Write `config` to `path` (TOML, `config_document`); `by` names the writer in the
    file's first line."""
    path.write_text(f"# written by {by}\n" + tomli_w.dumps(config_document(config)))
    return path


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
    """`storebox run --config CONFIG` inside namespace `netns`; its stderr goes to
    `daemon.log` beside the config. `env` adds to the daemon's environment; `nofile` sets
    its RLIMIT_NOFILE (soft and hard), as a small box or systemd does."""

    def __init__(self, netns: str, config: Path, env: Mapping[str, str] | None = None,
                 nofile: int | None = None) -> None:
        self.netns = netns
        self.config = config
        self.nofile = nofile
        self.log_path = config.parent / "daemon.log"
        self.notify = NotifySocket(config.parent / "notify.sock")
        self.env = dict(os.environ, NOTIFY_SOCKET=str(self.notify.path), PYTHONUNBUFFERED="1",
                        **(env or {}))
        self.starts = 0
        self.proc = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.starts += 1
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                ["ip", "netns", "exec", self.netns, sys.executable, "-m", "firmware", "run",
                 "--config", str(self.config)],
                stderr=log, stdout=subprocess.DEVNULL, env=self.env,
                preexec_fn=self._limit_files if self.nofile else None)

    def _limit_files(self) -> None:
        assert self.nofile is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))

    @property
    def admin_socket(self) -> Path:
        return self.config.parent / "api.sock"

    def wait_ready(self, timeout: float = 30.0) -> None:
        try:
            self.notify.wait_for("READY", "1", timeout)
        except TimeoutError:
            raise DrillError("start the box", f"no READY=1 within {timeout:g} s; "
                             f"see {self.log_path}:\n{self.log_tail()}") from None

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as in a power cut or an OOM kill."""
        self.proc.kill()
        self.proc.wait()

    def restart(self) -> None:
        """Start again after the process ended; wait for READY=1."""
        assert self.proc.poll() is not None, "still running"
        self.proc = self._spawn()
        self.notify.wait_for("READY", "1")

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log().splitlines()[-lines:])
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
