"""The box's own firewall (docs/openapi.json), chain `input` of table `inet storebox`.

In the shop (`lab.shop`): a stand-in for the POS API listens on every address
of the box; the POS on the LAN reaches it, a host on the wired ISP and one on the
internet do not (their connection attempts time out: dropped, not refused, and counted);
the box's probes over both uplinks, DHCP replies and the LAN's own traffic still work.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import AsyncIterator, Iterator

import pytest

from failover.errors import NftConfigError
from failover.nft import LanForwarding, private_gateways
from failover.probes.accounting import ByteCounter
from failover.probes.round import probe
from failover.routes import Uplink, UplinkName, switch_uplink
from failover.routes_netlink import NetlinkRoutes
from failover.targets import parse_target
from firmware.config.schema import RoutingConfig
from lab.health import serve_health
from lab.netns import inside
from tests.failover.conftest import (
    GATEWAY_IP,
    LAN_BOX,
    LAN_CLIENT,
    LTE_ADDR,
    LTE_GW,
    OTHER_IP,
    WIRED_ADDR,
    EchoServer,
    Shop,
    connect,
    ipn,
    seen_source,
    sh,
)
from tests.failover.netlab import _DnsProtocol
from tests.support.netns import tcp_state

UPLINKS = [Uplink("wired", "wan0"), Uplink("lte", "wwan0")]
API_PORT = 8470
SSH_PORT = 22
#: How long a dropped connection attempt is given before it counts as dropped.
DROPPED_AFTER_S = 0.6


class Listener:
    """TCP listeners on 0.0.0.0 in the box: accept, send "hi", close (from one thread)."""

    def __init__(self, ns: str, ports: list[int]) -> None:
        self.socks: list[socket.socket] = []
        with inside(ns):
            for port in ports:
                s = socket.create_server(("0.0.0.0", port))
                s.settimeout(0.1)
                self.socks.append(s)
        self.accepted = 0
        self._stop = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop:
            for s in self.socks:
                try:
                    conn, _ = s.accept()
                except (TimeoutError, OSError):
                    continue
                self.accepted += 1
                with contextlib.suppress(OSError):
                    conn.sendall(b"hi\n")
                conn.close()

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        for s in self.socks:
            s.close()


def reach(ns: str, host: str, port: int) -> str:
    """"open" (greeted), "refused" (RST or ICMP error) or "dropped" (no answer)."""
    return tcp_state(ns, host, port, timeout_s=DROPPED_AFTER_S, greeted=_greets)


def _greets(s: socket.socket) -> None:
    assert s.recv(16) == b"hi\n"


def pings(ns: str, host: str) -> bool:
    return sh("ip", "netns", "exec", ns, "ping", "-c", "1", "-W", str(DROPPED_AFTER_S), host,
              check=False).returncode == 0


def counters(ns: str) -> dict[str, int]:
    out = sh("ip", "netns", "exec", ns, "nft", "-j", "list", "counters", "table", "inet",
             "storebox").stdout
    return {c["counter"]["name"]: int(c["counter"]["packets"])
            for c in json.loads(out)["nftables"] if "counter" in c}


@pytest.fixture
def listener(shop: Shop) -> Iterator[Listener]:
    lis = Listener(shop.box, [API_PORT, SSH_PORT])
    yield lis
    lis.close()


@pytest.fixture
async def box(shop: Shop) -> AsyncIterator[tuple[NetlinkRoutes, LanForwarding]]:
    routes = NetlinkRoutes(UPLINKS, netns=shop.box)
    lan = LanForwarding(lan_interfaces=["lan0"], uplinks=UPLINKS, netns=shop.box,
                        api_ports=[API_PORT])
    # hosts on the ISPs' side that know a way to the shop's LAN (a hostile ISP or a
    # neighbour on the same segment can always add one)
    ipn(shop.isp_wired, "route", "add", "192.168.50.0/24", "via", WIRED_ADDR)
    ipn(shop.isp_lte, "route", "add", "192.168.50.0/24", "via", LTE_ADDR)
    yield routes, lan
    await lan.remove()
    await routes.close()


# the attackers: the wired ISP's host, the LTE carrier's, a server on the internet
OUTSIDE = [("isp_wired", WIRED_ADDR), ("isp_wired", LAN_BOX), ("isp_lte", LTE_ADDR),
           ("isp_lte", LAN_BOX), ("internet", WIRED_ADDR), ("internet", LTE_ADDR)]


async def test_the_api_answers_the_lan_only(
        shop: Shop, listener: Listener, box: tuple[NetlinkRoutes, LanForwarding]) -> None:
    routes, lan = box
    # Without the table every one of them gets in: what the firewall must change.
    for ns, address in OUTSIDE:
        assert reach(getattr(shop, ns), address, API_PORT) == "open", (ns, address)
    assert pings(shop.internet, WIRED_ADDR)

    await switch_uplink("wired", routes=routes, forwarding=lan)
    before = counters(shop.box)
    assert before["api_refused"] == 0
    for ns, address in OUTSIDE:
        assert reach(getattr(shop, ns), address, API_PORT) == "dropped", (ns, address)
        assert reach(getattr(shop, ns), address, SSH_PORT) == "dropped", (ns, address)
    assert not pings(shop.internet, WIRED_ADDR)
    assert not pings(shop.isp_lte, LTE_ADDR)
    after = counters(shop.box)
    assert after["api_refused"] >= len(OUTSIDE)  # each SYN (and retransmission) counted
    assert after["uplink_dropped"] >= len(OUTSIDE) + 2
    accepted = listener.accepted

    # The POS on the LAN, and the box itself, still get in; so does the LAN's ssh.
    assert reach(shop.client, LAN_BOX, API_PORT) == "open"
    assert reach(shop.client, LAN_BOX, SSH_PORT) == "open"
    assert reach(shop.client, WIRED_ADDR, API_PORT) == "open"  # the box's other address
    assert reach(shop.box, "127.0.0.1", API_PORT) == "open"
    assert reach(shop.box, LAN_BOX, API_PORT) == "open"
    assert pings(shop.client, LAN_BOX)
    assert listener.accepted == accepted + 5

    # The same on LTE and in offline mode.
    actives: tuple[UplinkName | None, ...] = ("lte", None)
    for active in actives:
        await lan.apply(active)
        for ns, address in OUTSIDE:
            assert reach(getattr(shop, ns), address, API_PORT) == "dropped", (active, ns)
        assert reach(shop.client, LAN_BOX, API_PORT) == "open"

    # Removed with the table: the box is as open as before.
    assert await lan.remove() is True
    assert reach(shop.isp_wired, WIRED_ADDR, API_PORT) == "open"


async def test_the_lan_still_goes_out_and_replies_come_back(
        shop: Shop, box: tuple[NetlinkRoutes, LanForwarding]) -> None:
    routes, lan = box
    await switch_uplink("wired", routes=routes, forwarding=lan)
    assert seen_source(shop.client, GATEWAY_IP) == WIRED_ADDR
    await switch_uplink("lte", routes=routes, forwarding=lan)
    assert seen_source(shop.client, OTHER_IP) == LTE_ADDR
    # the box's own connections (the forwarder to the gateway, the fleet agent)
    assert seen_source(shop.box, GATEWAY_IP) == LTE_ADDR
    assert seen_source(shop.box, GATEWAY_IP, device="wan0") == WIRED_ADDR


@pytest.fixture
async def far_services(shop: Shop) -> AsyncIterator[None]:
    """DNS on the gateway's address, HTTP /health on the other server (the internet)."""
    loop = asyncio.get_running_loop()
    with inside(shop.internet):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((GATEWAY_IP, 53))
        http = socket.create_server((OTHER_IP, 80))
    transport, _ = await loop.create_datagram_endpoint(lambda: _DnsProtocol([]), sock=udp)
    runner = await serve_health(http)
    yield
    await runner.cleanup()
    transport.close()


TARGETS = [f"tcp:{GATEWAY_IP}:8443", f"dns:{GATEWAY_IP}:gateway.example", f"icmp:{GATEWAY_IP}",
           f"http://{OTHER_IP}/health"]


@pytest.mark.usefixtures("far_services")
@pytest.mark.parametrize("active", ["wired", "lte", None])
async def test_probes_through_both_uplinks_still_answer(
        shop: Shop, box: tuple[NetlinkRoutes, LanForwarding], active: UplinkName | None) -> None:
    routes, lan = box
    await switch_uplink("wired", routes=routes, forwarding=lan)
    await lan.apply(active)
    dropped = counters(shop.box)["uplink_dropped"]
    with inside(shop.box):  # the probes' sockets are created in the box
        for interface in ("wan0", "wwan0"):
            for text in TARGETS:
                result = await probe(parse_target(text), interface, 2.0, counter=ByteCounter())
                assert result.ok, (interface, text, result.error)
    assert counters(shop.box)["uplink_dropped"] == dropped  # no reply was taken for an attack


def udp_from(ns: str, source_port: int, to: str, port: int) -> None:
    with inside(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with s:
        s.bind(("0.0.0.0", source_port))
        s.sendto(b"offer", (to, port))


async def test_dhcp_replies_pass_other_udp_does_not(
        shop: Shop, box: tuple[NetlinkRoutes, LanForwarding]) -> None:
    routes, lan = box
    await switch_uplink("wired", routes=routes, forwarding=lan)
    with inside(shop.box):
        client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        client.bind(("0.0.0.0", 68))
        client.settimeout(DROPPED_AFTER_S)
        udp_from(shop.isp_wired, 1067, WIRED_ADDR, 68)  # not a DHCP server's port
        with pytest.raises(TimeoutError):
            client.recv(64)
        udp_from(shop.isp_wired, 67, WIRED_ADDR, 68)  # a DHCP server's answer
        assert client.recv(64) == b"offer"
        udp_from(shop.isp_lte, 67, LTE_ADDR, 68)
        assert client.recv(64) == b"offer"


def test_the_input_chain_is_rendered_with_the_rest() -> None:
    lan = LanForwarding(lan_interfaces=["lan0"], uplinks=UPLINKS, api_ports=[8470, 8443])
    text = lan.render("wired")
    assert text.count("delete table inet storebox") == 1  # one transaction, one table
    body = text.split("\tchain input {\n", 1)[1].split("\t}\n", 1)[0]
    rules = [line.strip() for line in body.splitlines()]
    assert rules[0] == "type filter hook input priority filter; policy accept;"
    assert rules[1:4] == ['iif "lo" accept', "ct state established,related accept",
                          'iifname { "lan0" } accept']
    assert rules[-2:] == ['tcp dport { 8443, 8470 } counter name "api_refused" drop',
                          'iifname { "wan0", "wwan0" } counter name "uplink_dropped" drop']
    assert "chain input" not in LanForwarding(lan_interfaces=["lan0"], uplinks=UPLINKS,
                                              firewall=False).render("wired")


# --------------------------------------------------------------------------- from the start


async def test_guard_before_any_decision(shop: Shop, listener: Listener) -> None:
    """No uplink chosen yet (the engine's first `apply` may never come): `guard()` alone
    keeps the uplinks' side away from the API, and from the LAN."""
    ipn(shop.isp_wired, "route", "add", "192.168.50.0/24", "via", WIRED_ADDR)
    ipn(shop.isp_lte, "route", "add", "192.168.50.0/24", "via", LTE_ADDR)
    with inside(shop.client):
        lan_host = socket.create_server(("0.0.0.0", 8080))
    lan = LanForwarding(lan_interfaces=["lan0"], uplinks=UPLINKS, netns=shop.box,
                        api_ports=[API_PORT])
    try:
        assert reach(shop.isp_wired, WIRED_ADDR, API_PORT) == "open"  # what guard changes
        await lan.guard()
        assert lan.applied and lan.active is None  # as in offline mode
        for ns, address in OUTSIDE:
            assert reach(getattr(shop, ns), address, API_PORT) == "dropped", (ns, address)
        assert reach(shop.client, LAN_BOX, API_PORT) == "open"
        assert counters(shop.box)["api_refused"] >= len(OUTSIDE)
        # nothing from an uplink reaches the LAN, the LAN reaches no uplink yet
        with inside(shop.isp_wired):
            s = socket.socket()
        s.settimeout(DROPPED_AFTER_S)
        with s, pytest.raises(TimeoutError):
            s.connect((LAN_CLIENT, 8080))
        assert reach(shop.client, GATEWAY_IP, 8443) == "refused"
    finally:
        lan_host.close()
        await lan.remove()


async def test_guard_keeps_the_previous_runs_forwarding(
        shop: Shop, listener: Listener, box: tuple[NetlinkRoutes, LanForwarding]) -> None:
    """A restart: the table the last run left keeps the LAN on its uplink; only the input
    chain is made anew from this run's configuration (here: another API port)."""
    routes, before = box
    await switch_uplink("wired", routes=routes, forwarding=before)
    assert seen_source(shop.client, GATEWAY_IP) == WIRED_ADDR
    after = LanForwarding(lan_interfaces=["lan0"], uplinks=UPLINKS, netns=shop.box,
                          api_ports=[SSH_PORT])
    await after.guard()
    assert seen_source(shop.client, GATEWAY_IP) == WIRED_ADDR  # no gap for the LAN
    ruleset = sh("ip", "netns", "exec", shop.box, "nft", "list", "table", "inet",
                 "storebox").stdout
    assert ruleset.count("chain input") == 1
    assert "tcp dport 22 counter" in ruleset and "tcp dport 8470" not in ruleset
    assert reach(shop.isp_wired, WIRED_ADDR, SSH_PORT) == "dropped"
    assert reach(shop.client, LAN_BOX, SSH_PORT) == "open"


# --------------------------------------------------------------------------- the modem

MODEM_IP = "192.168.225.1"  # a Quectel in ECM mode answers here


@pytest.fixture
def modem(shop: Shop) -> Iterator[None]:
    """The modem's management stands on the LTE side: on the carrier's namespace here,
    at 192.168.225.1 and at the LTE gateway (a private address, as a modem's is)."""
    ipn(shop.isp_lte, "addr", "add", f"{MODEM_IP}/32", "dev", "lo")
    server = EchoServer(shop.isp_lte, [MODEM_IP, LTE_GW])
    yield
    server.close()


def answers(ns: str, host: str, port: int = 8443) -> bool:
    try:
        s, _ = connect(ns, host, port, timeout=DROPPED_AFTER_S)
    except TimeoutError:
        return False
    s.close()
    return True


@pytest.mark.usefixtures("modem")
async def test_the_lan_cannot_reach_the_modems_management(
        shop: Shop, box: tuple[NetlinkRoutes, LanForwarding]) -> None:
    routes, _ = box
    lan = LanForwarding(lan_interfaces=["lan0"], uplinks=UPLINKS, netns=shop.box,
                        modem_management=RoutingConfig().modem_management)
    # Without the block the LAN reaches them through LTE: what must change.
    unguarded = LanForwarding(lan_interfaces=["lan0"], uplinks=UPLINKS, netns=shop.box,
                              modem_management=[], modem_gateway=False)
    await switch_uplink("lte", routes=routes, forwarding=unguarded)
    assert answers(shop.client, MODEM_IP) and answers(shop.client, LTE_GW)

    await lan.guard()  # learns the LTE gateway (10.2.0.1: private) from the routes
    assert lan.lte_gateways == (LTE_GW,)
    # a restart: the last run's table still carries the LAN on LTE, and the guard alone
    # (before any decision of this run) already closes the modem to it
    assert seen_source(shop.client, OTHER_IP) == LTE_ADDR
    assert not answers(shop.client, MODEM_IP)
    assert not answers(shop.client, LTE_GW)
    await switch_uplink("lte", routes=routes, forwarding=lan)
    assert not answers(shop.client, MODEM_IP)
    assert not answers(shop.client, LTE_GW)
    assert counters(shop.box)["modem_blocked"] >= 2
    # the box itself still talks to its modem; the LAN still reaches the internet via LTE
    assert seen_source(shop.box, MODEM_IP) == LTE_ADDR
    assert seen_source(shop.box, LTE_GW) == LTE_ADDR
    assert seen_source(shop.client, OTHER_IP) == LTE_ADDR
    # and while wired carries the LAN, the modem's addresses stay closed to the LAN
    await switch_uplink("wired", routes=routes, forwarding=lan)
    ipn(shop.box, "route", "add", f"{MODEM_IP}/32", "via", LTE_GW, "dev", "wwan0")
    assert not answers(shop.client, MODEM_IP)


async def test_a_new_lte_gateway_is_blocked_when_seen(
        shop: Shop, box: tuple[NetlinkRoutes, LanForwarding]) -> None:
    routes, lan = box
    await switch_uplink("lte", routes=routes, forwarding=lan)
    assert lan.lte_gateways == ()  # not looked up yet
    assert await lan.refresh_modem_gateway() is True
    assert "10.2.0.1" in sh("ip", "netns", "exec", shop.box, "nft", "list", "set", "inet",
                            "storebox", "modem_mgmt4").stdout
    assert lan.active == "lte"
    assert await lan.refresh_modem_gateway() is False  # unchanged: nothing applied


def test_the_modem_block_is_rendered_before_any_accept() -> None:
    lan = LanForwarding(lan_interfaces=["lan0"], uplinks=UPLINKS,
                        modem_management=["192.168.225.0/24", "fd00::1"])
    lan.lte_gateways = ("10.2.0.1", "192.168.225.1")
    text = lan.render("lte")
    assert ("set modem_mgmt4 { type ipv4_addr; flags interval; "
            "elements = { 10.2.0.1/32, 192.168.225.0/24 } }") in text
    assert "set modem_mgmt6 { type ipv6_addr; flags interval; elements = { fd00::1/128 } }" \
        in text
    body = text.split("\tchain modem_guard {\n", 1)[1].split("\t}\n", 1)[0]
    rules = [line.strip() for line in body.splitlines()]
    assert rules[0] == "type filter hook forward priority filter - 1; policy accept;"
    assert text.index("chain modem_guard") < text.index("chain forward")
    assert rules[1:3] == [
        'iifname { "lan0" } oifname "wwan0" ip daddr @modem_mgmt4 counter name '
        '"modem_blocked" drop',
        'iifname { "lan0" } oifname "wwan0" ip6 daddr @modem_mgmt6 counter name '
        '"modem_blocked" drop']
    wired_only = LanForwarding(lan_interfaces=["lan0"], uplinks=UPLINKS[:1])
    assert "modem_mgmt" not in wired_only.render("wired")
    with pytest.raises(NftConfigError, match=r"modem_management='192.168.225.1/24'"):
        LanForwarding(lan_interfaces=["lan0"], uplinks=UPLINKS,
                      modem_management=["192.168.225.1/24"])


def test_private_gateways() -> None:
    assert private_gateways([{"gateway": "192.168.225.1"}, {"gateway": "100.64.0.1"},
                             {"gateway": "1.1.1.1"}, {"gateway": "fe80::1"}, {"dev": "wwan0"},
                             {"gateway": "fd00::1"}, {"gateway": "bogus"}]) \
        == ["192.168.225.1", "fd00::1"]
