"""The shop LAN's DHCP and DNS (`firmware.lan`, `firmware.components.lan_services`).

In the shop of namespaces each ISP runs its own resolver (wired 10.1.0.1, LTE 10.2.0.1)
and the internet a public one (203.0.113.53), each answering every name with its own
address, so the LAN client can tell who answered. The real daemon serves the LAN with
dnsmasq: the client gets a lease (busybox udhcpc), resolves through the box before,
during and after a failover (the upstream moves to the LTE carrier's resolver and back),
and keeps resolving when only the wired ISP's resolver dies (the public fallback, over
wired still).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from failover.nft import LanForwarding
from failover.probes.dns import build_dns_query, parse_dns_response
from firmware.cli.client import get_json
from firmware.components.lan_services import LanServices
from firmware.components.modem import apply_snapshot
from firmware.config import load_config
from firmware.errors import ConfigError
from firmware.lan.dnsmasq import LanFiles, count_leases, render_conf, render_servers
from firmware.lan.resolvers import NetworkManagerResolvers, upstream_for
from firmware.state import BoxState
from firmware.status import status_document
from hw.modem.status import ModemStatus
from lab.box import configure
from lab.dns import DnsResponder, answer
from lab.faults import blackhole, heal, nft
from tests.failover.conftest import (
    GATEWAY_IP,
    LAN_BOX,
    LTE_ADDR,
    LTE_GW,
    OTHER_IP,
    PORT,
    WIRED_ADDR,
    WIRED_GW,
    Shop,
    build_shop,
    ipn,
)
from tests.support.daemon import TOKEN, DaemonProcess, base_config, write_config
from tests.support.netns import inside
from tests.support.nm import NMConnection, network_manager

PUBLIC_DNS = "203.0.113.53"
#: SK Telecom's primary resolver, what the simulated SKT modem reports (AT+CGCONTRDP).
SKT_DNS = "210.220.163.82"
#: What each resolver answers for every name.
FROM_WIRED, FROM_LTE, FROM_PUBLIC = "192.0.2.1", "192.0.2.2", "192.0.2.3"
LEASES = "192.168.50.100-192.168.50.150"


def lan_config(tmp: Path, **lan: Any) -> Any:
    return configure(base_config(tmp), routing={"lan_interfaces": ["lan0"]},
                     wired={"interface": "wan0", "dns": ["10.1.0.1"]},
                     lte={"interface": "wwan0", "dns": ["10.2.0.1"]},
                     lan={"enabled": True, "fallback_dns": [PUBLIC_DNS], **lan})


# -- the pieces ------------------------------------------------------------------------


def test_the_upstream_is_the_active_uplinks_resolvers_then_the_fallback(tmp_path: Path
                                                                         ) -> None:
    config = lan_config(tmp_path)
    wired = upstream_for(config, "wired")
    assert wired.servers == ("10.1.0.1", PUBLIC_DNS) and wired.interface == "wan0"
    assert render_servers(upstream_for(config, "lte")).splitlines()[1:] == [
        "server=10.2.0.1@wwan0", f"server={PUBLIC_DNS}@wwan0"]
    # nothing configured: what was learnt (NetworkManager), and the fallback still
    learnt = configure(config, lte={"interface": "wwan0", "dns": []})
    assert upstream_for(learnt, "lte", ("10.2.0.9",)).servers == ("10.2.0.9", PUBLIC_DNS)
    assert upstream_for(learnt, "lte").servers == (PUBLIC_DNS,)


def test_lte_without_configured_resolvers_takes_the_modems(tmp_path: Path) -> None:
    """The box's own modem reports its data call's resolvers (AT+CGCONTRDP, `modem.dns`
    in the state): the LTE upstream when `lte.dns` is not configured; configured (and
    NetworkManager's) win, and wired never takes them."""
    config = configure(lan_config(tmp_path), lte={"interface": "wwan0", "dns": []})
    modem = (SKT_DNS, "219.250.36.130")
    assert upstream_for(config, "lte", modem=modem).servers == (*modem, PUBLIC_DNS)
    assert upstream_for(config, "lte", ("10.2.0.9",), modem).servers == ("10.2.0.9",
                                                                         PUBLIC_DNS)
    assert upstream_for(lan_config(tmp_path), "lte", modem=modem).servers == (
        "10.2.0.1", PUBLIC_DNS)
    assert upstream_for(config, "wired", modem=modem).servers == ("10.1.0.1", PUBLIC_DNS)


async def test_the_lan_component_forwards_lte_to_the_resolvers_the_modem_reports(
        tmp_path: Path) -> None:
    config = configure(lan_config(tmp_path), lte={"interface": "wwan0", "dns": []})
    state = BoxState("store-0001", "1.2.3")

    async def answers(servers: tuple[str, ...], interface: str) -> bool:
        return True

    lan = LanServices(config, state, LanFiles(tmp_path / "lan"), check=answers)
    lan.follow("lte")
    apply_snapshot(state, ModemStatus(present=True, registered=True, data_up=True,
                                      ip=LTE_ADDR, dns=(SKT_DNS,)))
    assert state.modem.dns == [SKT_DNS]
    assert status_document(state)["modem"]["dns"] == [SKT_DNS]
    assert (await lan._upstream()).servers == (SKT_DNS, PUBLIC_DNS)
    apply_snapshot(state, ModemStatus(present=True, registered=True, data_up=False))
    assert state.modem.dns == []
    assert (await lan._upstream()).servers == (PUBLIC_DNS,)


def test_the_dnsmasq_configuration_serves_the_lan_only(tmp_path: Path) -> None:
    files = LanFiles(tmp_path / "lan")
    conf = render_conf(lan_config(tmp_path, dhcp_ranges=[LEASES], domain="shop.lan",
                                  lease_time_s=3600), files, user="storebox")
    lines = conf.splitlines()
    for line in ("interface=lan0", "except-interface=lo", "bind-dynamic", "no-resolv",
                 f"servers-file={files.servers}", "user=storebox",
                 "dhcp-range=192.168.50.100,192.168.50.150,3600",
                 f"dhcp-leasefile={files.leases}", "local=/shop.lan/"):
        assert line in lines, conf
    dns_only = render_conf(lan_config(tmp_path), files, user="storebox")
    assert "dhcp-range" not in dns_only and "dhcp-leasefile" not in dns_only
    if shutil.which("dnsmasq"):
        files.write(files.conf, conf)
        check = subprocess.run(["dnsmasq", "--test", f"--conf-file={files.conf}"],
                               capture_output=True, text=True)
        assert check.returncode == 0, check.stderr


def test_files_are_replaced_whole_with_their_mode(tmp_path: Path) -> None:
    files = LanFiles(tmp_path / "lan")
    files.write(files.servers, "server=10.1.0.1@wan0\n")
    files.write(files.servers, "server=10.2.0.1@wwan0\n")
    assert files.servers.read_text() == "server=10.2.0.1@wwan0\n"
    assert files.servers.stat().st_mode & 0o777 == 0o644
    assert files.directory.stat().st_mode & 0o777 == 0o700
    assert [p.name for p in files.directory.iterdir()] == ["servers"]


def test_leases_are_counted_until_they_expire(tmp_path: Path) -> None:
    path = tmp_path / "dnsmasq.leases"
    assert count_leases(path, 1000.0) == 0
    path.write_text("2000 aa:bb:cc:dd:ee:01 192.168.50.100 till-1 01:aa:bb:cc:dd:ee:01\n"
                    "500 aa:bb:cc:dd:ee:02 192.168.50.101 * *\n"
                    "0 aa:bb:cc:dd:ee:03 192.168.50.102 printer *\n"
                    "duid 00:01:00:01:2c:aa:bb:cc\n")
    assert count_leases(path, 1000.0) == 2


def test_config_lan_needs_lan_interfaces_and_good_ranges(tmp_path: Path) -> None:
    base = "[device]\nid = \"b\"\n[payments]\ngateway_url = \"https://g.example\"\n"
    path = tmp_path / "c.toml"
    path.write_text(base + "[lan]\nenabled = true\n")
    with pytest.raises(ConfigError, match=r"lan\.enabled: needs routing\.lan_interfaces"):
        load_config(path)
    path.write_text(base + "[routing]\nlan_interfaces = [\"eth1\"]\n[lan]\nenabled = true\n"
                    "dhcp_ranges = [\"192.168.50.200-192.168.50.100\"]\n"
                    "[wired]\ndns = [\"ns.example\"]\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    text = str(caught.value)
    assert "FIRST <= LAST" in text and "'ns.example' is not an IP address" in text


def test_the_firewall_takes_dns_and_dhcp_from_the_lan_only() -> None:
    forwarding = LanForwarding(lan_interfaces=["lan0"], uplinks={"wired": "wan0"},
                               lan_services=True)
    chain = forwarding.render("wired").split("chain input", 1)[1]
    lan_accept = chain.index('iifname { "lan0" } udp dport { 53, 67 } accept')
    assert chain.index('iifname { "lan0" } tcp dport 53 accept') > lan_accept
    refused = chain.index('udp dport { 53, 67 } counter name "lan_services_refused" drop')
    assert refused > chain.index('iifname { "lan0" } accept') > lan_accept
    assert 'tcp dport 53 counter name "lan_services_refused" drop' in chain
    assert "counter lan_services_refused" in forwarding.render_guard()
    plain = LanForwarding(lan_interfaces=["lan0"], uplinks={"wired": "wan0"})
    assert "dport 53" not in plain.render("wired")


def test_the_responder_answers_a_questions_with_its_address() -> None:
    query = build_dns_query(0x1234, "till.example")
    got = parse_dns_response(answer(query, FROM_LTE, 0) or b"", query)
    assert got is not None and got.rcode == 0 and got.addresses == (FROM_LTE,)


async def test_resolvers_are_learnt_from_networkmanager() -> None:
    """With the NM backend an uplink's resolvers are what NetworkManager holds for its
    device (here a static profile's; a DHCP lease's the same way)."""
    if os.geteuid() != 0 or shutil.which("NetworkManager") is None:
        pytest.skip("needs root and NetworkManager (make deps)")
    with build_shop(os_routes=False, box_addresses=False) as shop:
        connections = [
            NMConnection("wired", "wan0", f"{WIRED_ADDR}/24", WIRED_GW, 100,
                         dns4=("10.1.0.1", "10.1.0.53")),
            NMConnection("lte", "wwan0", f"{LTE_ADDR}/24", LTE_GW, 600)]
        with network_manager(shop.box, connections) as nm:
            learn = NetworkManagerResolvers(bus_address=nm.bus_address)
            try:
                assert await learn("wan0") == ("10.1.0.1", "10.1.0.53")
                assert await learn("wwan0") == ()
                assert await learn("nosuch0") == ()  # logged once, not raised
            finally:
                await learn.close()


# -- the box in the shop ---------------------------------------------------------------


@dataclass
class Lan:
    shop: Shop
    daemon: DaemonProcess
    tmp: Path

    def status(self) -> dict[str, Any]:
        return get_json(self.daemon.socket_address, "/v1/status", TOKEN)

    async def wait(self, check: Any, what: str, timeout: float = 15.0) -> float:
        started = time.monotonic()
        while not check(self.status()):
            assert time.monotonic() - started < timeout, f"{what}: {self.status()['lan']}"
            await asyncio.sleep(0.05)
        return time.monotonic() - started


def resolve(ns: str, name: str, *, server: str = LAN_BOX, tries: int = 3,
            timeout: float = 1.0) -> str | None:
    """The address `server` gives for `name`, asked from namespace `ns` as a stub resolver
    does (the same query again after each timeout); None when nothing answered."""
    with inside(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.settimeout(timeout)
        s.connect((server, 53))
        query = build_dns_query(secrets.randbits(16), name)
        for _ in range(tries):
            s.send(query)
            try:
                got = parse_dns_response(s.recv(4096), query)
            except (TimeoutError, ConnectionRefusedError):
                continue
            if got is not None and got.addresses:
                return got.addresses[0]
        return None
    finally:
        s.close()


async def resolve_async(ns: str, name: str, **kwargs: Any) -> str | None:
    return await asyncio.to_thread(resolve, ns, name, **kwargs)


def fresh(label: str) -> str:
    """A name never asked before (so no cache answers it)."""
    return f"{label}-{secrets.token_hex(4)}.shop-test.example"


@pytest.fixture
def resolvers(shop: Shop) -> Iterator[dict[str, DnsResponder]]:
    if shutil.which("dnsmasq") is None:
        pytest.skip("dnsmasq is not installed (Debian dnsmasq-base: make deps)")
    ipn(shop.internet, "addr", "add", f"{PUBLIC_DNS}/32", "dev", "lo")
    found = {"wired": DnsResponder(shop.isp_wired, "10.1.0.1", FROM_WIRED),
             "lte": DnsResponder(shop.isp_lte, "10.2.0.1", FROM_LTE),
             "public": DnsResponder(shop.internet, PUBLIC_DNS, FROM_PUBLIC)}
    try:
        yield found
    finally:
        for responder in found.values():
            responder.close()


@pytest.fixture
async def lan(shop: Shop, resolvers: dict[str, DnsResponder], tmp_path: Path
              ) -> AsyncIterator[Lan]:
    async with serving(shop, tmp_path, lte_dns=["10.2.0.1"]) as running:
        yield running


@asynccontextmanager
async def serving(shop: Shop, tmp_path: Path, *, lte_dns: list[str]) -> AsyncIterator[Lan]:
    """The daemon serving the LAN, its LTE modem the simulator with an SKT SIM."""
    config = write_config(
        tmp_path,
        routing={"backend": "netlink", "failover": True, "failback_after_s": 2.0,
                 "lan_interfaces": ["lan0"]},
        lte={"interface": "wwan0", "simulator": "SKT", "dns": lte_dns},
        wired={"interface": "wan0", "carrier": "KT", "dns": ["10.1.0.1"]},
        lan={"enabled": True, "dhcp_ranges": [LEASES], "lease_time_s": 600,
             "fallback_dns": [PUBLIC_DNS]},
        probes={"targets": [f"tcp:{GATEWAY_IP}:{PORT}", f"tcp:{OTHER_IP}:{PORT}",
                            f"icmp:{GATEWAY_IP}"]})
    daemon = DaemonProcess(shop.box, config)
    try:
        daemon.notify.wait_for("READY", "1")
        yield Lan(shop, daemon, tmp_path)
    finally:
        assert daemon.stop() == 0, daemon.log()[-3000:]
    assert "dnsmasq" not in subprocess.run(["ip", "netns", "pids", shop.box],
                                           capture_output=True, text=True).stdout


def udhcpc(ns: str, tmp: Path) -> dict[str, str]:
    """A DHCP lease for the client (busybox udhcpc, one try; its script only records
    what the server offered, the interface keeps its address)."""
    out = tmp / "lease.env"
    script = tmp / "udhcpc.sh"
    script.write_text(f"#!/bin/sh\n[ \"$1\" = bound ] && env > {out}\nexit 0\n")
    script.chmod(0o755)
    proc = subprocess.run(["ip", "netns", "exec", ns, "udhcpc", "-i", "eth0", "-f", "-q",
                           "-n", "-t", "5", "-T", "1", "-s", str(script)],
                          capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    return dict(line.split("=", 1) for line in out.read_text().splitlines() if "=" in line)


async def test_a_lan_client_gets_a_lease_naming_the_box(lan: Lan) -> None:
    if shutil.which("udhcpc") is None:
        pytest.skip("udhcpc is not installed (Debian udhcpc: make deps)")
    lease = await asyncio.to_thread(udhcpc, lan.shop.client, lan.tmp)
    first, last = (int(a.rsplit(".", 1)[1]) for a in LEASES.split("-"))
    assert lease["ip"].startswith("192.168.50.") and \
        first <= int(lease["ip"].rsplit(".", 1)[1]) <= last, lease
    assert lease["router"] == LAN_BOX and lease["dns"].split() == [LAN_BOX], lease
    assert lease["lease"] == "600"
    await lan.wait(lambda s: s["lan"]["leases"] == 1, "the lease in the status")
    status = lan.status()["lan"]
    assert status["enabled"] and status["dhcp"] and status["interfaces"] == ["lan0"]
    leases = LanFiles.under(str(lan.tmp / "state")).leases
    assert lease["ip"] in leases.read_text()


async def test_the_lans_dns_follows_the_uplink_through_a_failover(
        lan: Lan, resolvers: dict[str, DnsResponder]) -> None:
    shop = lan.shop
    await lan.wait(lambda s: s["uplink"]["active"] == "wired", "wired active at start")
    assert await resolve_async(shop.client, fresh("before")) == FROM_WIRED
    upstream = lan.status()["lan"]["upstream"]
    assert upstream["uplink"] == "wired" and upstream["interface"] == "wan0"
    assert upstream["servers"] == ["10.1.0.1", PUBLIC_DNS]

    blackhole(shop.isp_wired, "cust0")  # the wired ISP's resolver is gone with the rest
    await lan.wait(lambda s: s["uplink"]["active"] == "lte", "failover to LTE")
    await lan.wait(lambda s: s["lan"]["upstream"]["uplink"] == "lte", "the LAN's upstream")
    assert lan.status()["lan"]["upstream"]["servers"] == ["10.2.0.1", PUBLIC_DNS]
    started = time.monotonic()
    answers = [await resolve_async(shop.client, fresh("during")) for _ in range(5)]
    assert answers == [FROM_LTE] * 5, answers  # the carrier's resolver, over LTE
    assert time.monotonic() - started < 2.5  # none waited for a retry

    heal(shop.isp_wired)
    await lan.wait(lambda s: s["uplink"]["active"] == "wired", "back on wired", 30)
    await lan.wait(lambda s: s["lan"]["upstream"]["uplink"] == "wired", "upstream back")
    assert await resolve_async(shop.client, fresh("after")) == FROM_WIRED
    assert lan.status()["components"]["lan"]["restarts"] == 0


async def test_the_lan_keeps_resolving_when_only_the_wired_isps_resolver_dies(
        lan: Lan, resolvers: dict[str, DnsResponder]) -> None:
    shop = lan.shop
    await lan.wait(lambda s: s["uplink"]["active"] == "wired", "wired active at start")
    assert await resolve_async(shop.client, fresh("before")) == FROM_WIRED
    nft(shop.isp_wired, """
        table inet resolverdown {
          chain in { type filter hook input priority 0; policy accept;
            udp dport 53 drop
          }
        }
        """)
    lte_queries = resolvers["lte"].queries
    # the box asks wired's resolver itself and puts the public one first
    took = await lan.wait(lambda s: s["lan"]["upstream"]["servers"] == [PUBLIC_DNS, "10.1.0.1"],
                          "the fallback first")
    assert took < 8
    started = time.monotonic()
    answers = [await resolve_async(shop.client, fresh("resolver-down")) for _ in range(5)]
    assert answers == [FROM_PUBLIC] * 5, answers  # the fallback, over wired still
    assert time.monotonic() - started < 1.0  # none waited for a client's retry
    assert lan.status()["uplink"]["active"] == "wired"  # a resolver is not a line
    assert lan.status()["lan"]["upstream"]["interface"] == "wan0"
    assert resolvers["lte"].queries == lte_queries  # no LAN query went over LTE
    nft(shop.isp_wired, "delete table inet resolverdown")  # it answers again
    await lan.wait(lambda s: s["lan"]["upstream"]["servers"] == ["10.1.0.1", PUBLIC_DNS],
                   "the ISP's resolver first again")
    assert await resolve_async(shop.client, fresh("back")) == FROM_WIRED


async def test_on_lte_the_lan_forwards_to_the_resolvers_the_modem_reports(
        shop: Shop, resolvers: dict[str, DnsResponder], tmp_path: Path) -> None:
    """No `lte.dns`: after the failover the LAN forwards to the resolver the SKT modem
    reported for its data call (AT+CGCONTRDP), here served by the LTE ISP."""
    ipn(shop.isp_lte, "addr", "add", f"{SKT_DNS}/32", "dev", "lo")
    carrier = DnsResponder(shop.isp_lte, SKT_DNS, FROM_LTE)
    try:
        async with serving(shop, tmp_path, lte_dns=[]) as lan:
            await lan.wait(lambda s: s["modem"]["dns"][:1] == [SKT_DNS], "the modem's DNS")
            await lan.wait(lambda s: s["uplink"]["active"] == "wired", "wired at start")
            assert lan.status()["lan"]["upstream"]["servers"] == ["10.1.0.1", PUBLIC_DNS]
            blackhole(shop.isp_wired, "cust0")
            await lan.wait(lambda s: s["lan"]["upstream"]["uplink"] == "lte", "on LTE")
            upstream = lan.status()["lan"]["upstream"]
            assert upstream["servers"][:2] == [SKT_DNS, "219.250.36.130"], upstream
            assert await resolve_async(shop.client, fresh("carrier")) == FROM_LTE
            assert carrier.queries >= 1 and resolvers["lte"].queries == 0
            heal(shop.isp_wired)
    finally:
        carrier.close()


async def test_dnsmasq_is_restarted_when_it_dies(lan: Lan) -> None:
    await lan.wait(lambda s: s["lan"]["upstream"]["uplink"] == "wired", "serving")
    pids = subprocess.run(["pgrep", "-x", "dnsmasq"], capture_output=True, text=True)
    box_pids = set(subprocess.run(["ip", "netns", "pids", lan.shop.box], capture_output=True,
                                  text=True).stdout.split())
    mine = [p for p in pids.stdout.split() if p in box_pids]
    assert len(mine) == 1, (pids.stdout, box_pids)
    os.kill(int(mine[0]), 9)
    await lan.wait(lambda s: s["components"]["lan"]["restarts"] == 1, "the restart")
    await lan.wait(lambda s: s["components"]["lan"]["state"] == "running", "running", 10)
    for _ in range(40):  # back after the supervisor's backoff (0.5-1 s)
        if await resolve_async(lan.shop.client, fresh("again"), tries=1) == FROM_WIRED:
            break
    else:
        pytest.fail("dnsmasq did not come back")
