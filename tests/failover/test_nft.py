"""LanForwarding: the LAN client reaches the internet only through the active uplink."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections.abc import AsyncIterator

import pytest

from failover.errors import NftConfigError, NftError
from failover.nft import LanForwarding
from failover.routes import Uplink, UplinkName, switch_uplink
from failover.routes_netlink import NetlinkRoutes
from tests.failover.conftest import (
    GATEWAY_IP,
    LTE_ADDR,
    OTHER_IP,
    WIRED_ADDR,
    Shop,
    connect,
    seen_source,
    sh,
)

UPLINKS = [Uplink("wired", "wan0"), Uplink("lte", "wwan0")]


@pytest.fixture
async def routes(shop: Shop) -> AsyncIterator[NetlinkRoutes]:
    controller = NetlinkRoutes(UPLINKS, netns=shop.box)
    yield controller
    await controller.close()


def nft(ns: str, *args: str) -> str:
    return sh("ip", "netns", "exec", ns, "nft", *args).stdout


def refused(ns: str, host: str) -> bool:
    """True when a connection is refused at once (a reject), False when it works."""
    try:
        s, _ = connect(ns, host, timeout=3.0)
    except (ConnectionRefusedError, OSError) as exc:
        assert not isinstance(exc, TimeoutError), "dropped silently instead of rejected"
        return True
    s.close()
    return False


async def wait_for(predicate: object, timeout: float = 3.0) -> None:
    assert callable(predicate)
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_lan_client_goes_out_through_the_active_uplink(shop: Shop,
                                                           routes: NetlinkRoutes) -> None:
    lan = LanForwarding(lan_interfaces=["lan0"], uplinks=UPLINKS, netns=shop.box)
    await switch_uplink("wired", routes=routes, forwarding=lan)
    assert seen_source(shop.client, GATEWAY_IP) == WIRED_ADDR
    assert seen_source(shop.client, OTHER_IP) == WIRED_ADDR

    await switch_uplink("lte", routes=routes, forwarding=lan)
    assert seen_source(shop.client, GATEWAY_IP) == LTE_ADDR
    assert seen_source(shop.client, OTHER_IP) == LTE_ADDR

    await switch_uplink("wired", routes=routes, forwarding=lan)
    assert seen_source(shop.client, OTHER_IP) == WIRED_ADDR
    state = await lan.describe()
    assert state["present"] and state["active"] == "wired"


async def test_lte_allowlist_passes_the_gateway_and_blocks_the_rest(
        shop: Shop, routes: NetlinkRoutes) -> None:
    lan = LanForwarding(lan_interfaces=["lan0"], uplinks=UPLINKS, netns=shop.box,
                        lte_allowlist=[f"{GATEWAY_IP}/32", "2001:db8:77::/48"])
    await switch_uplink("wired", routes=routes, forwarding=lan)
    assert not refused(shop.client, OTHER_IP)  # on wired, everything goes
    kept, seen = connect(shop.client, OTHER_IP)  # a flow that started on wired
    assert seen == WIRED_ADDR

    await switch_uplink("lte", routes=routes, forwarding=lan)
    assert seen_source(shop.client, GATEWAY_IP) == LTE_ADDR
    assert refused(shop.client, OTHER_IP)
    # The flow that started on wired cannot keep spending the LTE budget either.
    blocked = (await lan.describe())["counters"]["lte_blocked"]
    kept.sendall(b"still there?\n")

    async def more_blocked() -> bool:
        return bool((await lan.describe())["counters"]["lte_blocked"] > blocked)

    await wait_for(more_blocked)
    kept.close()

    # Back on wired: no restriction.
    await switch_uplink("wired", routes=routes, forwarding=lan)
    assert seen_source(shop.client, OTHER_IP) == WIRED_ADDR
    # Dropping the allowlist lifts the restriction on LTE at once.
    await switch_uplink("lte", routes=routes, forwarding=lan)
    await lan.set_lte_allowlist(None)
    assert seen_source(shop.client, OTHER_IP) == LTE_ADDR


async def test_offline_cuts_the_lan_off(shop: Shop, routes: NetlinkRoutes) -> None:
    lan = LanForwarding(lan_interfaces=["lan0"], uplinks=UPLINKS, netns=shop.box)
    await switch_uplink("lte", routes=routes, forwarding=lan)
    assert seen_source(shop.client, GATEWAY_IP) == LTE_ADDR
    await switch_uplink(None, routes=routes, forwarding=lan)
    assert refused(shop.client, GATEWAY_IP)
    # The box itself still reaches the internet for its probes.
    assert seen_source(shop.box, GATEWAY_IP, device="wwan0") == LTE_ADDR


async def test_remove_deletes_only_our_table(shop: Shop, routes: NetlinkRoutes) -> None:
    foreign = """
table inet other {
    chain c1 {
        type filter hook forward priority 10; policy accept;
        counter accept comment "not ours"
    }
}
table ip keepme {
    set s { type ipv4_addr; elements = { 192.0.2.1 }; }
}
"""
    proc = subprocess.run(["ip", "netns", "exec", shop.box, "nft", "-f", "-"],
                          input=foreign, text=True, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    before = nft(shop.box, "list", "table", "inet", "other")
    lan = LanForwarding(lan_interfaces=["lan0"], uplinks=UPLINKS, netns=shop.box)
    await lan.apply("wired")
    await lan.apply("lte")
    assert "table inet storebox" in nft(shop.box, "list", "tables")
    assert await lan.remove() is True
    tables = nft(shop.box, "list", "tables")
    assert "storebox" not in tables
    assert "table inet other" in tables and "table ip keepme" in tables
    assert nft(shop.box, "list", "table", "inet", "other") == before
    assert await lan.remove() is False
    assert not await lan.present()


async def test_a_failed_switch_changes_nothing(shop: Shop, routes: NetlinkRoutes,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    lan = LanForwarding(lan_interfaces=["lan0"], uplinks=UPLINKS, netns=shop.box)
    await switch_uplink("wired", routes=routes, forwarding=lan)
    before = nft(shop.box, "list", "table", "inet", "storebox")
    render = lan.render
    # nft rejects the last line of the transaction: the delete and re-create before it
    # must not have happened either.
    monkeypatch.setattr(lan, "render", lambda active, also=(): render(active, also)
                        + "add rule inet storebox nope accept\n")
    with pytest.raises(NftError, match=r"nft apply failed \(exit 1\)"):
        await lan.apply("lte")
    assert nft(shop.box, "list", "table", "inet", "storebox") == before
    assert seen_source(shop.client, GATEWAY_IP) == WIRED_ADDR
    assert lan.active == "wired"


def test_the_ruleset_shape() -> None:
    uplinks: dict[UplinkName, str] = {"wired": "eth0", "lte": "wwan0"}
    lan = LanForwarding(lan_interfaces=["lan0", "lan1"], uplinks=uplinks,
                        lte_allowlist=["198.51.100.10", "198.51.100.0/28", "10.0.0.0/8"])
    text = lan.render("lte")
    assert text.startswith("table inet storebox\ndelete table inet storebox\ntable inet storebox {")
    assert "elements = { 10.0.0.0/8, 198.51.100.0/28 }" in text  # merged
    assert 'iifname { "lan0", "lan1" } oifname "wwan0" ip daddr @lte_allow4 accept' in text
    assert 'oifname "wwan0" ct mark set ct mark and 0xffff00ff or 0x200 masquerade' in text
    assert 'oifname "eth0" ct mark set' not in text
    wired = lan.render("wired")
    assert 'oifname "wwan0" ip daddr @lte_allow4 accept' not in wired
    assert 'oifname "eth0" accept' in wired
    offline = lan.render(None)
    assert "masquerade" not in offline and 'oifname "eth0" accept' not in offline
    # Only our table is named anywhere.
    for line in text.splitlines():
        if line.startswith(("table", "delete")):
            assert line.removeprefix("delete ").split()[:3] == ["table", "inet", "storebox"]


def rules(text: str, chain: str) -> list[str]:
    """The rules of `chain` in a rendered transaction, without indentation."""
    body = text.split(f"\tchain {chain} {{\n", 1)[1].split("\t}\n", 1)[0]
    return [line.strip() for line in body.splitlines()[1:]]


def test_the_sticky_flow_marks() -> None:
    uplinks: dict[UplinkName, str] = {"wired": "eth0", "lte": "wwan0"}
    lan = LanForwarding(lan_interfaces=["lan0"], uplinks=uplinks)
    pre = [
        'iifname { "lan0" } ct mark and 0xff00 == 0x100 '
        "meta mark set meta mark and 0xffff00ff or 0x100",
        'iifname { "lan0" } ct mark and 0xff00 == 0x200 '
        "meta mark set meta mark and 0xffff00ff or 0x200",
    ]
    for active in ("wired", "lte", None):
        text = lan.render(active)
        assert "type filter hook prerouting priority mangle; policy accept;" in text
        assert rules(text, "prerouting") == pre  # whatever is active
    # The first packet's masquerade records the uplink in the conntrack mark.
    wired = lan.render("wired")
    assert rules(wired, "postrouting") == [
        'iifname { "lan0" } oifname "eth0" ct mark set ct mark and 0xffff00ff or 0x100 '
        "masquerade"]
    # Flows marked for the uplink left may keep it; nothing else goes out through it.
    # (the modem's management is its own chain before this one: `modem_guard`)
    assert rules(wired, "forward")[2:] == [
        'iifname { "lan0" } oifname "eth0" accept',
        'iifname { "lan0" } oifname "wwan0" ct mark and 0xff00 == 0x200 accept',
        'iifname { "lan0" } oifname { "eth0", "wwan0" } counter name "standby_blocked" '
        "reject with icmpx admin-prohibited"]
    assert rules(lan.render("lte"), "forward")[2:4] == [
        'iifname { "lan0" } oifname "wwan0" accept',
        'iifname { "lan0" } oifname "eth0" ct mark and 0xff00 == 0x100 accept']
    # While the routes move both uplinks are open anyway: no sticky rule needed.
    bridge = lan.render("wired", also=["lte"])
    assert "ct mark and 0xff00 == 0x200 accept" not in bridge
    assert rules(bridge, "postrouting") == [
        'iifname { "lan0" } oifname "eth0" ct mark set ct mark and 0xffff00ff or 0x100 '
        "masquerade",
        'iifname { "lan0" } oifname "wwan0" ct mark set ct mark and 0xffff00ff or 0x200 '
        "masquerade"]
    # Offline: the LAN reaches no uplink, pinned or not.
    offline = rules(lan.render(None), "forward")
    assert not any("accept" in r for r in offline if r.startswith('iifname { "lan0" }'))


def test_sticky_lte_flows_stay_on_the_allowlist() -> None:
    uplinks: dict[UplinkName, str] = {"wired": "eth0", "lte": "wwan0"}
    lan = LanForwarding(lan_interfaces=["lan0"], uplinks=uplinks,
                        lte_allowlist=["198.51.100.10"])
    assert rules(lan.render("wired"), "forward")[3:5] == [
        'iifname { "lan0" } oifname "wwan0" ct mark and 0xff00 == 0x200 '
        "ip daddr @lte_allow4 accept",
        'iifname { "lan0" } oifname "wwan0" ct mark and 0xff00 == 0x200 '
        "ip6 daddr @lte_allow6 accept"]


async def test_flows_are_marked_with_their_uplink_and_other_bits_kept(
        shop: Shop, routes: NetlinkRoutes) -> None:
    # Someone else's conntrack mark bits (before our NAT) must survive ours.
    foreign = """
table inet other {
    chain stamp {
        type filter hook postrouting priority 50; policy accept;
        ct state new ct mark set 0x10001
    }
}
"""
    proc = subprocess.run(["ip", "netns", "exec", shop.box, "nft", "-f", "-"],
                          input=foreign, text=True, capture_output=True)
    assert proc.returncode == 0, proc.stderr
    lan = LanForwarding(lan_interfaces=["lan0"], uplinks=UPLINKS, netns=shop.box)
    await switch_uplink("wired", routes=routes, forwarding=lan)
    via_wired, seen = connect(shop.client, GATEWAY_IP)
    assert seen == WIRED_ADDR
    await switch_uplink("lte", routes=routes, forwarding=lan)
    via_lte, seen = connect(shop.client, OTHER_IP)
    assert seen == LTE_ADDR
    marks = {}
    for line in sh("ip", "netns", "exec", shop.box, "conntrack", "-L", "-p", "tcp").stdout \
            .splitlines():
        if "src=192.168.50.10" in line:
            marks[line.split("dst=")[1].split()[0]] = line.split("mark=")[1].split()[0]
    assert marks == {GATEWAY_IP: str(0x10101), OTHER_IP: str(0x10201)}
    via_wired.close()
    via_lte.close()


@pytest.mark.parametrize("kwargs, message", [
    ({"lan_interfaces": ['lan0" ; flush ruleset ; "']}, r"lan_interfaces='lan0\" ; flush"),
    ({"lan_interfaces": ["x" * 16]}, r"longer than 15"),
    ({"lan_interfaces": "lan0"}, r"lan_interfaces='lan0': must be a list"),
    ({"lan_interfaces": []}, r"at least one"),
    ({"lan_interfaces": ["wan0"]}, r"both LAN and uplink"),
    ({"lte_allowlist": ["198.51.100.1/24"]}, r"lte_allowlist='198.51.100.1/24': .*host bits"),
    ({"lte_allowlist": ["gateway.example"]}, r"lte_allowlist='gateway.example': not an IP"),
    ({"lte_allowlist": ["0.0.0.0/0"]}, r"matches everything"),
    ({"lte_allowlist": "198.51.100.10"}, r"must be a list"),
    ({"uplinks": {"wifi": "wlan0"}}, r"uplinks='wifi'"),
])
def test_inputs_are_validated(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"lan_interfaces": ["lan0"], "uplinks": UPLINKS}
    args.update(kwargs)
    with pytest.raises(NftConfigError, match=message):
        LanForwarding(**args)  # type: ignore[arg-type]


def test_unknown_active_uplink_is_refused() -> None:
    only_wired: dict[UplinkName, str] = {"wired": "eth0"}
    lan = LanForwarding(lan_interfaces=["lan0"], uplinks=only_wired)
    with pytest.raises(NftConfigError, match=r"active='lte'"):
        lan.render("lte")

