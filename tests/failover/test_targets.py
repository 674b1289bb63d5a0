"""Probe target syntax (docs/config.md plus icmp:HOST)."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from failover.errors import FailoverError, TargetError
from failover.targets import ProbeTarget, TargetKind, parse_target, parse_targets


def test_contract_examples() -> None:
    tcp, dns, https = parse_targets(
        ["tcp:203.0.113.10:443", "dns:203.0.113.53:gateway.example", "https://gateway.example/health"]
    )
    assert tcp == ProbeTarget(TargetKind.TCP, "203.0.113.10", 443)
    assert dns.kind is TargetKind.DNS and dns.dns_server == "203.0.113.53"
    assert (dns.host, dns.port, dns.qname) == ("203.0.113.53", 53, "gateway.example")
    assert https.kind is TargetKind.HTTPS
    assert (https.host, https.port, https.path) == ("gateway.example", 443, "/health")
    assert https.url == "https://gateway.example/health"
    assert tcp.host_is_ip and not https.host_is_ip
    assert tcp.dns_server is None


@pytest.mark.parametrize(
    ("text", "kind", "host", "port", "extra"),
    [
        ("tcp:Gateway.Example:8443", "tcp", "gateway.example", 8443, None),
        ("tcp:[2001:db8::1]:443", "tcp", "2001:db8::1", 443, None),
        ("tcp:2001:db8::1:443", "tcp", "2001:db8::1", 443, None),
        ("  TCP:10.0.0.1:22  ", "tcp", "10.0.0.1", 22, None),
        ("dns:[2001:db8::53]:example.com.", "dns", "2001:db8::53", 53, "example.com"),
        ("dns:2001:db8::53:example.com", "dns", "2001:db8::53", 53, "example.com"),
        ("dns:8.8.8.8:_probe.Example.COM", "dns", "8.8.8.8", 53, "_probe.example.com"),
        ("http://10.0.0.1:8080/h?x=1", "http", "10.0.0.1", 8080, "http://10.0.0.1:8080/h?x=1"),
        ("HTTPS://GW.example", "https", "gw.example", 443, "https://gw.example/"),
        ("https://[2001:db8::1]:8443/health", "https", "2001:db8::1", 8443,
         "https://[2001:db8::1]:8443/health"),
        ("icmp:1.1.1.1", "icmp", "1.1.1.1", None, None),
        ("icmp:[2001:db8::1]", "icmp", "2001:db8::1", None, None),
        ("icmp:one.one.one.one", "icmp", "one.one.one.one", None, None),
    ],
)
def test_valid_targets(
    text: str, kind: str, host: str, port: int | None, extra: str | None
) -> None:
    t = parse_target(text)
    assert (t.kind.value, t.host, t.port) == (kind, host, port)
    if kind == "dns":
        assert t.qname == extra
    elif kind in ("http", "https"):
        assert t.url == extra
    assert parse_target(t.text) == t  # the canonical form parses back to the same target
    assert str(t) == t.text


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty target"),
        ("   ", "empty target"),
        ("203.0.113.10", "expected tcp:HOST:PORT"),
        ("ftp://example.com/", "unknown probe kind 'ftp'"),
        ("udp:1.2.3.4:53", "unknown probe kind 'udp'"),
        ("tcp:example.com", "missing ':PORT'"),
        ("tcp:example.com:", "port '' is not a number"),
        ("tcp::443", "missing host"),
        ("tcp:host:0", "port 0 is out of range"),
        ("tcp:host:65536", "port 65536 is out of range"),
        ("tcp:host:https", "port 'https' is not a number"),
        ("tcp:300.1.2.3:80", "'300.1.2.3' is not a valid IPv4 address"),
        ("tcp:bad_host!:80", "not a valid host name"),
        ("tcp:-bad.example:80", "not a valid host name"),
        ("tcp:[2001:db8::1:443", "unclosed '['"),
        ("tcp:[2001:db8::1]443", "expected ':PORT' after ']'"),
        ("tcp:[nothex::zz]:443", "not a valid IPv6 address"),
        ("dns:resolver.example:example.com", "DNS server 'resolver.example' must be an IP"),
        ("dns:1.1.1.1:", "missing DNS name"),
        ("dns:1.1.1.1:bad..name", "'bad..name' is not a valid DNS name"),
        ("dns:1.1.1.1:" + "a" * 64 + ".com", "is not a valid DNS name"),
        ("dns:1.1.1.1", "missing ':NAME'"),
        ("https://", "missing host in URL"),
        ("https:/gateway.example/health", "expected https://HOST/PATH"),
        ("https://user:pw@gateway.example/", "credentials in probe URLs"),
        ("https://gateway.example/#frag", "fragment"),
        ("http://gateway.example:0/", "port 0 is out of range"),
        ("http://gateway.example:99999/", "bad URL"),
        ("icmp:", "missing host"),
    ],
)
def test_bad_targets_say_what_is_wrong(text: str, reason: str) -> None:
    with pytest.raises(TargetError) as info:
        parse_target(text)
    err = info.value
    assert isinstance(err, FailoverError)
    assert err.text == text
    assert reason in err.reason, err.reason
    assert str(err) == f"bad probe target {text!r}: {err.reason}"


def test_non_string_is_a_target_error() -> None:
    with pytest.raises(TargetError, match="expected a string, got int"):
        parse_target(443)  # type: ignore[arg-type]


def test_parse_targets_stops_at_the_first_bad_one() -> None:
    with pytest.raises(TargetError) as info:
        parse_targets(["icmp:1.1.1.1", "tcp:x", "nonsense"])
    assert info.value.text == "tcp:x"


ipv4 = st.ip_addresses(v=4).map(str)
ipv6 = st.ip_addresses(v=6).map(str)
ports = st.integers(1, 65535)
label = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
names = st.lists(label, min_size=2, max_size=4).map(".".join).filter(
    lambda n: not n.replace(".", "").isdigit()
)


@given(host=st.one_of(ipv4, ipv6, names), port=ports)
def test_tcp_targets_round_trip(host: str, port: int) -> None:
    shown = f"[{host}]" if ":" in host else host
    t = parse_target(f"tcp:{shown}:{port}")
    assert (t.kind, t.port) == (TargetKind.TCP, port)
    if ":" in host:
        assert ipaddress.ip_address(t.host) == ipaddress.ip_address(host)
    else:
        assert t.host == host
    assert parse_target(t.text) == t


@given(server=st.one_of(ipv4, ipv6), qname=names)
def test_dns_targets_round_trip(server: str, qname: str) -> None:
    t = parse_target(f"dns:{server}:{qname}")
    assert ipaddress.ip_address(t.host) == ipaddress.ip_address(server)
    assert t.qname == qname
    assert parse_target(t.text) == t


@given(st.text(max_size=40))
def test_anything_either_parses_or_raises_target_error(text: str) -> None:
    try:
        t = parse_target(text)
    except TargetError as exc:
        assert exc.text == text
    else:
        assert parse_target(t.text) == t
