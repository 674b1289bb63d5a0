"""Probes in real namespaces: bound to their uplink, blackholes, random loss, bytes."""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import AsyncIterator

import pytest

from failover.config import MonitorConfig
from failover.decision import LinkMonitor
from failover.errors import ProbeConfigError
from failover.link import LinkState
from failover.probes.accounting import ByteCounter
from failover.probes.dns import build_dns_query, parse_dns_response
from failover.probes.kinds import _icmp_socket
from failover.probes.options import ProbeOptions
from failover.probes.round import probe, probe_round
from failover.targets import parse_target
from tests.failover.netlab import (
    BOX_ADDR,
    RESOLVER,
    SERVER,
    TCP_PORT,
    TLS_NAME,
    Lab,
    Pki,
    Services,
    blackhole,
    nft,
    nft_drops,
    random_loss,
    serving_topology,
)
from tests.support.clock import ManualClock
from tests.support.netns import inside, run

TCP = parse_target(f"tcp:{SERVER}:{TCP_PORT}")
DNS = parse_target(f"dns:{RESOLVER}:{TLS_NAME}")
ICMP = parse_target(f"icmp:{SERVER}")
HTTP = parse_target(f"http://{SERVER}/health")
HTTPS = parse_target(f"https://{TLS_NAME}/health")
CHEAP = (TCP, DNS, ICMP)


class Env:
    def __init__(self, lab: Lab, pki: Pki, services: dict[str, Services]) -> None:
        self.lab = lab
        self.pki = pki
        self.services = services  # box interface -> the ISP's services
        self.options = ProbeOptions(ssl=pki.client_context(), dns_servers=(RESOLVER,))


@pytest.fixture
async def env(pki: Pki, tmp_path: object) -> AsyncIterator[Env]:
    async with serving_topology(pki, str(tmp_path)) as (lab, _, services):
        with inside(lab.box):  # the probes' sockets are created in the box
            yield Env(lab, pki, services)


def carrier_up(lab: Lab, iface: str) -> bool:
    return "LOWER_UP" in run("ip", "-n", lab.box, "link", "show", iface).stdout


# --------------------------------------------------------------------------- binding


async def test_each_uplink_is_probed_through_itself_whatever_the_default_route(env: Env) -> None:
    # an unbound socket follows the default route: wired (up0, ISP A)
    loop = asyncio.get_running_loop()
    plain = socket.socket()
    plain.setblocking(False)
    await asyncio.wait_for(loop.sock_connect(plain, (SERVER, TCP_PORT)), 2)
    plain.close()
    assert env.services["up0"].all_peers == {BOX_ADDR["up0"]}

    counter = ByteCounter()
    lte = await probe_round(
        (TCP, DNS, ICMP, HTTP, HTTPS), "up1", 2.0, 5, options=env.options, counter=counter
    )
    assert lte.ok and lte.succeeded == 5, lte.errors
    assert env.services["up1"].all_peers == {BOX_ADDR["up1"]}
    assert env.services["up1"].tcp_peers and env.services["up1"].http_peers
    assert BOX_ADDR["up1"] not in env.services["up0"].all_peers

    # now LTE is the default; the wired probes still go out of up0 to ISP A
    run("ip", "-n", env.lab.box, "route", "replace", "default", "via", "10.72.0.1", "dev",
        "up1", "metric", "50")
    before = len(env.services["up0"].tcp_peers)
    wired = await probe_round(CHEAP, "up0", 2.0, 3, options=env.options, counter=counter)
    assert wired.ok, wired.errors
    assert len(env.services["up0"].tcp_peers) == before + 1
    assert set(env.services["up0"].tcp_peers) == {BOX_ADDR["up0"]}
    assert wired.median_latency_ms is not None and wired.median_latency_ms < 500


async def test_bound_probe_needs_a_route_on_its_interface(env: Env) -> None:
    assert (await probe(TCP, "up1", 0.5, options=env.options, counter=ByteCounter())).ok
    run("ip", "-n", env.lab.box, "route", "del", "default", "dev", "up1")
    # no route through up1: the kernel assumes the target is on-link and ARPs for it
    # on up1; nobody answers, so the probe times out though LTE itself is fine
    result = await probe(TCP, "up1", 0.5, options=env.options, counter=ByteCounter())
    assert not result.ok
    assert result.error == "no answer within 0.5s"
    # the wired uplink, which kept its route, is unaffected
    assert (await probe(TCP, "up0", 0.5, options=env.options, counter=ByteCounter())).ok


async def test_strict_reverse_path_filter_kills_probes_on_the_standby_uplink(env: Env) -> None:
    for conf in ("all", "up1"):
        run("ip", "netns", "exec", env.lab.box, "sysctl", "-qw",
            f"net.ipv4.conf.{conf}.rp_filter=1")
    strict = await probe(ICMP, "up1", 0.5, options=env.options, counter=ByteCounter())
    assert not strict.ok  # answers from ISP B fail the reverse-path check
    assert (await probe(ICMP, "up0", 0.5, options=env.options, counter=ByteCounter())).ok
    for conf in ("all", "up1"):
        run("ip", "netns", "exec", env.lab.box, "sysctl", "-qw",
            f"net.ipv4.conf.{conf}.rp_filter=2")
    assert (await probe(ICMP, "up1", 0.5, options=env.options, counter=ByteCounter())).ok


# --------------------------------------------------------------------------- failures


async def test_blackhole_with_link_up_fails_every_probe_within_its_deadline(env: Env) -> None:
    blackhole(env.lab.isp["up0"], "isp0")
    assert carrier_up(env.lab, "up0")  # the KT-2021 case: the link looks fine
    timeout = 0.6
    started = time.monotonic()
    wired = await probe_round(
        (TCP, DNS, ICMP, HTTP), "up0", timeout, 1, options=env.options, counter=ByteCounter()
    )
    elapsed = time.monotonic() - started
    assert not wired.ok and wired.succeeded == 0
    assert wired.loss == 1.0 and wired.median_latency_ms is None
    assert all(r.error == "no answer within 0.6s" for r in wired.results), wired.errors
    assert timeout <= elapsed < timeout + 0.3
    assert nft_drops(env.lab.isp["up0"]) > 0
    # retransmissions/hedges were sent into the void and counted
    assert all(r.bytes_sent > 0 and r.bytes_received == 0 for r in wired.results)
    lte = await probe_round(CHEAP, "up1", timeout, 3, options=env.options, counter=ByteCounter())
    assert lte.ok, lte.errors


async def test_twenty_percent_random_loss_does_not_fail_rounds(env: Env) -> None:
    config = MonitorConfig()
    clock = ManualClock(monotonic=0.0)
    monitor = LinkMonitor(config, monotonic=clock.monotonic)
    for _ in range(config.startup_rounds):
        clock.advance(config.round_interval_s)
        monitor.observe_round(await probe_round(CHEAP, "up0", 1.0, 2, options=env.options))
    assert monitor.state is LinkState.UP
    random_loss(env.lab.isp["up0"], "isp0", 20)
    rounds = await asyncio.gather(
        *(
            probe_round(CHEAP, "up0", config.probe_timeout_s, config.quorum,
                        options=env.options, counter=ByteCounter())
            for _ in range(20)
        )
    )
    assert nft_drops(env.lab.isp["up0"]) > 0  # the loss really happened
    single = {"dns": 61, "icmp": 44}
    retried = [
        r for rr in rounds for r in rr.results
        if r.target.kind in single and r.bytes_sent > single[r.target.kind]
    ]
    assert retried, "no probe needed a retransmission: was there loss?"
    assert sum(rr.ok for rr in rounds) >= 18, [rr.errors for rr in rounds if not rr.ok]
    for rr in rounds:
        clock.advance(config.round_interval_s)
        monitor.observe_round(rr)
        assert monitor.status().state is not LinkState.DOWN


async def test_each_probe_reports_the_round_trips_its_retries_lost(env: Env) -> None:
    """The ISP drops the first two of every four SYNs, DNS queries and echo requests
    (nft's per-rule packet counter, so the drops are exact): every fresh probe still
    answers, on its third attempt, and reports 2 of its 3 round trips lost -- the loss the
    steer judges (failover/steer.py). On a clean line each reports 0 of 1."""
    options = ProbeOptions(ssl=env.pki.client_context(), dns_servers=(RESOLVER,),
                           attempts=4, retry_after_s=0.1)
    clean = [await probe(t, "up0", 1.0, options=options, counter=ByteCounter()) for t in CHEAP]
    assert [(r.ok, r.exchange_loss()) for r in clean] == [(True, (0, 1))] * 3, clean
    nft(env.lab.isp["up0"], """
        table inet lossy {
          chain in { type filter hook prerouting priority -300; policy accept;
            iifname "isp0" tcp flags syn numgen inc mod 4 < 2 counter drop
            iifname "isp0" udp dport 53 numgen inc mod 4 < 2 counter drop
            iifname "isp0" icmp type echo-request numgen inc mod 4 < 2 counter drop
          }
        }
        """)
    lossy = [await probe(t, "up0", 1.0, options=options, counter=ByteCounter()) for t in CHEAP]
    assert [(r.ok, r.exchanges, r.exchanges_lost) for r in lossy] == [(True, 3, 2)] * 3, lossy
    assert all(r.latency_ms is not None and r.latency_ms >= 150.0 for r in lossy)


# --------------------------------------------------------------------------- answers that say no


async def test_answers_that_say_no_fail_at_once_with_a_reason(env: Env) -> None:
    c = ByteCounter()

    async def err(text: str, **kw: object) -> str | None:
        opts = ProbeOptions(**{"ssl": env.pki.client_context(), "dns_servers": (RESOLVER,), **kw})  # type: ignore[arg-type]
        started = time.monotonic()
        r = await probe(parse_target(text), "up1", 2.0, options=opts, counter=c)
        assert time.monotonic() - started < 1.0, text
        assert not r.ok and r.latency_ms is None
        return r.error

    assert await err(f"tcp:{SERVER}:7001") == "connection refused (ECONNREFUSED)"
    assert await err(f"http://{SERVER}/fail") == "HTTP 503"
    assert await err(f"http://{SERVER}/redirect") == "HTTP 302"  # captive portals redirect
    assert await err(f"dns:{RESOLVER}:nx.{TLS_NAME}") == "DNS NXDOMAIN"
    assert await err(f"dns:{SERVER}:{TLS_NAME}") == "connection refused (ECONNREFUSED)"
    tls = await err(f"https://{TLS_NAME}/health", ssl=True)  # system store: test CA unknown
    assert tls is not None and tls.startswith("TLS certificate rejected"), tls
    ok = await probe(HTTPS, "up1", 2.0, options=ProbeOptions(ssl=False, dns_servers=(RESOLVER,)),
                     counter=c)
    assert ok.ok, ok.error
    missing = await probe(TCP, "nosuch0", 1.0, options=env.options, counter=c)
    assert missing.error == "no such interface 'nosuch0'"


# --------------------------------------------------------------------------- bytes


async def test_bytes_are_counted_per_probe_and_per_interface(env: Env) -> None:
    counter = ByteCounter()
    results = {}
    for target in (TCP, DNS, ICMP, HTTP, HTTPS):
        results[target.kind.value] = await probe(
            target, "up1", 2.0, options=env.options, counter=counter
        )
    assert all(r.ok for r in results.values()), {k: r.error for k, r in results.items()}
    icmp, dns, tcp = results["icmp"], results["dns"], results["tcp"]
    assert (icmp.bytes_sent, icmp.bytes_received) == (44, 44)
    query = build_dns_query(0, TLS_NAME)
    assert dns.bytes_sent == len(query) + 28
    assert dns.bytes_received == len(query) + 16 + 28  # one A record, compressed name
    # SYN 60 + ACK 52 (+ FIN, ACK) out; SYN-ACK 60 (+ ACK, FIN) in
    assert tcp.bytes_sent == 60 + 52 + 2 * 52
    assert tcp.bytes_received == 60 + 2 * 52
    https = results["https"]
    # the name was resolved over up1 too (one DNS exchange) and the cert chain came in
    assert https.bytes_sent > 500 and https.bytes_received > 1000
    total = counter.totals("up1")
    assert total.sent == sum(r.bytes_sent for r in results.values())
    assert total.received == sum(r.bytes_received for r in results.values())
    assert total.probes == 5
    assert counter.totals("up0").total == 0
    print({k: (r.bytes_sent, r.bytes_received) for k, r in results.items()})


async def test_icmp_uses_unprivileged_ping_sockets_when_allowed(env: Env) -> None:
    sock, raw = _icmp_socket(socket.AF_INET, "up1")  # a fresh namespace allows no group
    sock.close()
    assert raw
    run("ip", "netns", "exec", env.lab.box, "sysctl", "-qw",
        "net.ipv4.ping_group_range=0 2147483647")
    sock, raw = _icmp_socket(socket.AF_INET, "up1")
    sock.close()
    assert not raw
    result = await probe(ICMP, "up1", 1.0, options=env.options, counter=ByteCounter())
    assert result.ok, result.error
    assert (result.bytes_sent, result.bytes_received) == (44, 44)


# --------------------------------------------------------------------------- pure parts


def test_dns_response_must_match_the_query() -> None:
    query = build_dns_query(0x1234, "Gateway.Example")
    question = query[12:]
    answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + bytes([203, 0, 113, 10])
    good = struct.pack("!HHHHHH", 0x1234, 0x8180, 1, 1, 0, 0) + question.upper() + answer
    parsed = parse_dns_response(good, query)
    assert parsed is not None and parsed.rcode == 0 and parsed.addresses == ("203.0.113.10",)
    assert parse_dns_response(b"\x12\x34" + good[2:], query) is not None
    assert parse_dns_response(b"\x43\x21" + good[2:], query) is None  # other ID
    assert parse_dns_response(query, query) is None  # QR bit clear: our own query echoed
    other = build_dns_query(0x1234, "other.example")
    assert parse_dns_response(good, other) is None  # other question
    assert parse_dns_response(good[:11], query) is None
    servfail = struct.pack("!HHHHHH", 0x1234, 0x8182, 1, 0, 0, 0) + question
    assert parse_dns_response(servfail, query) == type(parsed)(2, ())
    truncated_answer = good[:-3]  # an A record cut short: rcode still counts, no address
    cut = parse_dns_response(truncated_answer, query)
    assert cut is not None and cut.addresses == ()


async def test_round_arguments_are_checked() -> None:
    with pytest.raises(ProbeConfigError, match="quorum=4"):
        await probe_round(CHEAP, "eth0", 1.0, 4)
    with pytest.raises(ProbeConfigError, match="quorum=0"):
        await probe_round(CHEAP, "eth0", 1.0, 0)
    with pytest.raises(ProbeConfigError, match="targets"):
        await probe_round((), "eth0", 1.0, 1)
    with pytest.raises(ProbeConfigError, match="interface='a/b'"):
        await probe_round(CHEAP, "a/b", 1.0, 1)
    with pytest.raises(ProbeConfigError, match="timeout_s=0"):
        await probe(TCP, "eth0", 0)
    with pytest.raises(ProbeConfigError, match="attempts=0"):
        ProbeOptions(attempts=0)
    with pytest.raises(ProbeConfigError, match=r"dns_servers='dns\.example'"):
        ProbeOptions(dns_servers=("dns.example",))
