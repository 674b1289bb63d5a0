"""The box's own firewall (CONTRACTS 3a), chain `input` of table `inet storebox`.

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
from aiohttp import web

from failover.nft import LanForwarding
from failover.probes.accounting import ByteCounter
from failover.probes.round import probe
from failover.routes import Uplink, UplinkName, switch_uplink
from failover.routes_netlink import NetlinkRoutes
from failover.targets import parse_target
from lab.netns import inside
from tests.failover.conftest import (
    GATEWAY_IP,
    LAN_BOX,
    LTE_ADDR,
    OTHER_IP,
    WIRED_ADDR,
    Shop,
    ipn,
    seen_source,
    sh,
)
from tests.failover.netlab import _DnsProtocol

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
    with inside(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(DROPPED_AFTER_S)
    try:
        s.connect((host, port))
        assert s.recv(16) == b"hi\n"
        return "open"
    except TimeoutError:
        return "dropped"
    except OSError:
        return "refused"
    finally:
        s.close()


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

    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/health", health)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.SockSite(runner, http).start()
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
