"""Probe targets: the strings of ``[probes] targets`` (docs/config.md), parsed.

Syntax (whitespace around the whole string is ignored):

``tcp:HOST:PORT``
    TCP connect. HOST is an IPv4 address, ``[IPv6]`` (or a bare IPv6 address,
    the port being after the last colon) or a host name.
``dns:SERVER:NAME``
    A DNS ``A`` query for NAME sent over UDP to SERVER port 53. SERVER must be
    an IP address (a resolver cannot be found by name); ``[IPv6]`` or bare.
``http://HOST[:PORT]/PATH`` and ``https://HOST[:PORT]/PATH``
    A GET that must answer 2xx (redirects are failures: a captive portal
    redirects). HTTPS verifies the certificate.
``icmp:HOST``
    An ICMP echo request (ours; not in the contract's list).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

from failover.errors import TargetError

__all__ = ["ProbeTarget", "TargetKind", "parse_target", "parse_targets"]


class TargetKind(StrEnum):
    TCP = "tcp"
    DNS = "dns"
    HTTP = "http"
    HTTPS = "https"
    ICMP = "icmp"


DNS_PORT = 53
_DEFAULT_PORTS = {TargetKind.HTTP: 80, TargetKind.HTTPS: 443}

# A host name label: letters, digits, hyphen (not first/last); underscore is
# tolerated because real DNS names (SRV-style, internal zones) carry it.
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)$")


@dataclass(frozen=True, slots=True)
class ProbeTarget:
    """One parsed probe target.

    ``host`` is where packets go: the TCP/ICMP/HTTP host, or the DNS server.
    ``port`` is None only for ICMP. ``qname`` is set only for DNS, ``url`` and
    ``path`` only for HTTP(S). ``text`` is the canonical string form.
    """

    kind: TargetKind
    host: str
    port: int | None = None
    qname: str | None = None
    url: str | None = None
    path: str | None = None

    @property
    def dns_server(self) -> str | None:
        return self.host if self.kind is TargetKind.DNS else None

    @property
    def host_is_ip(self) -> bool:
        return _ip(self.host) is not None

    @property
    def text(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        if self.kind is TargetKind.TCP:
            return f"tcp:{host}:{self.port}"
        if self.kind is TargetKind.DNS:
            return f"dns:{host}:{self.qname}"
        if self.kind is TargetKind.ICMP:
            return f"icmp:{host}"
        assert self.url is not None
        return self.url

    def __str__(self) -> str:
        return self.text


def parse_targets(texts: list[str] | tuple[str, ...]) -> tuple[ProbeTarget, ...]:
    """Parse a list of targets; the first bad one raises ``TargetError``."""
    return tuple(parse_target(t) for t in texts)


def parse_target(text: str) -> ProbeTarget:
    """Parse one target string; raise ``TargetError`` (text, reason) when it is bad."""
    if not isinstance(text, str):
        raise TargetError(repr(text), f"expected a string, got {type(text).__name__}")
    s = text.strip()
    if not s:
        raise TargetError(text, "empty target")
    scheme, sep, rest = s.partition(":")
    kind_name = scheme.lower()
    if not sep:
        raise TargetError(
            text, "expected tcp:HOST:PORT, dns:SERVER:NAME, icmp:HOST or an http(s):// URL"
        )
    if kind_name in ("http", "https"):
        return _parse_url(text, s, TargetKind(kind_name))
    if kind_name == "tcp":
        host, port_text = _split_host_last(text, rest, "PORT")
        return ProbeTarget(TargetKind.TCP, _host(text, host), _port(text, port_text))
    if kind_name == "dns":
        server, qname = _split_host_last(text, rest, "NAME")
        server = _host(text, server)
        if _ip(server) is None:
            raise TargetError(text, f"DNS server {server!r} must be an IP address")
        return ProbeTarget(TargetKind.DNS, server, DNS_PORT, qname=_qname(text, qname))
    if kind_name == "icmp":
        host = rest[1:-1] if rest.startswith("[") and rest.endswith("]") else rest
        return ProbeTarget(TargetKind.ICMP, _host(text, host))
    raise TargetError(text, f"unknown probe kind {scheme!r} (tcp, dns, http, https, icmp)")


def _split_host_last(text: str, rest: str, what: str) -> tuple[str, str]:
    """Split ``HOST:X`` where HOST may be ``[v6]`` or a bare IPv6 address."""
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            raise TargetError(text, "unclosed '[' in IPv6 address")
        host, after = rest[1:end], rest[end + 1 :]
        if not after.startswith(":"):
            raise TargetError(text, f"expected ':{what}' after ']'")
        return host, after[1:]
    host, sep, last = rest.rpartition(":")
    if not sep:
        raise TargetError(text, f"missing ':{what}'")
    return host, last


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _host(text: str, host: str) -> str:
    if not host:
        raise TargetError(text, "missing host")
    addr = _ip(host)
    if addr is not None:
        return str(addr)
    if ":" in host:
        raise TargetError(text, f"{host!r} is not a valid IPv6 address")
    name = host[:-1] if host.endswith(".") else host
    if len(name) > 253 or not all(_LABEL.match(label) for label in name.split(".")):
        raise TargetError(text, f"{host!r} is not a valid host name or IP address")
    if name.replace(".", "").isdigit():
        raise TargetError(text, f"{host!r} is not a valid IPv4 address")
    return name.lower()


def _port(text: str, port_text: str) -> int:
    if not port_text.isdigit() or not port_text.isascii():
        raise TargetError(text, f"port {port_text!r} is not a number")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise TargetError(text, f"port {port} is out of range 1..65535")
    return port


def _qname(text: str, qname: str) -> str:
    if not qname:
        raise TargetError(text, "missing DNS name to query")
    name = qname[:-1] if qname.endswith(".") else qname
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise TargetError(text, f"{qname!r} is not a valid DNS name")
    return name.lower()


def _parse_url(text: str, s: str, kind: TargetKind) -> ProbeTarget:
    try:
        parts = urlsplit(s)
        port = parts.port
    except ValueError as exc:
        raise TargetError(text, f"bad URL: {exc}") from None
    if not s.lower().startswith(f"{kind.value}://"):
        raise TargetError(text, f"expected {kind.value}://HOST/PATH")
    if parts.username is not None or parts.password is not None:
        raise TargetError(text, "credentials in probe URLs are not allowed")
    if parts.fragment:
        raise TargetError(text, "a URL fragment makes no sense in a probe")
    raw_host = parts.hostname
    if not raw_host:
        raise TargetError(text, "missing host in URL")
    host = _host(text, raw_host)
    if port is not None and port == 0:
        raise TargetError(text, "port 0 is out of range 1..65535")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    real_port = port if port is not None else _DEFAULT_PORTS[kind]
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc = f"{netloc}:{port}"
    url = f"{kind.value}://{netloc}{path}"
    return ProbeTarget(kind, host, real_port, url=url, path=path)
