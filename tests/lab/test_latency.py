"""The latency fault (lab/latency.py) in a real shop of namespaces: a round trip through
the ISP takes its delay longer and still gets through; the other ISP and the ISP itself
are not delayed; healing ends it with nothing left behind."""

from __future__ import annotations

import os
import re
import time

import pytest

from lab.errors import DrillError
from lab.faults import heal, random_loss
from lab.latency import DEVICE, RULE_PREF, add_latency, remove_latency
from lab.netns import run
from lab.shop import GATEWAY_IP, LTE_ADDR, WIRED_ADDR, WIRED_GW, build_shop, connect

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces need root")]

DELAY_S = 2.0


def _echo_round_trip(box: str, *, device: str | None = None) -> tuple[float, str]:
    """(seconds for one echoed line on an open connection, the source the server saw)."""
    s, seen = connect(box, GATEWAY_IP, device=device, timeout=3 * DELAY_S + 5)
    try:
        started = time.monotonic()
        s.sendall(b"pay\n")
        assert s.recv(64) == b"pay\n"
        return time.monotonic() - started, seen
    finally:
        s.close()


def _ping_ms(ns: str, address: str, *, wait_s: float) -> float:
    out = run("ip", "netns", "exec", ns, "ping", "-c1", "-W", str(int(wait_s)), address).stdout
    found = re.search(r"time=([\d.]+) ms", out)
    assert found, out
    return float(found.group(1))


def _leftovers(ns: str) -> str:
    rules = run("ip", "-n", ns, "rule").stdout + run("ip", "-n", ns, "-6", "rule").stdout
    links = run("ip", "-n", ns, "link").stdout
    return "\n".join(line for line in (rules + links).splitlines()
                     if f"{RULE_PREF}:" in line or DEVICE in line)


def test_latency_adds_its_delay_to_round_trips_and_traffic_still_passes() -> None:
    with build_shop() as shop:
        fast, _ = _echo_round_trip(shop.box)
        latency = add_latency(shop.isp_wired, "cust0", DELAY_S)
        try:
            slow, seen = _echo_round_trip(shop.box)
            assert seen == WIRED_ADDR
            assert slow >= 0.9 * DELAY_S, (fast, slow)
            # ICMP is delayed alike (the probes' third kind; DNS is UDP, a packet like these)
            assert _ping_ms(shop.box, GATEWAY_IP, wait_s=3 * DELAY_S) >= 900 * DELAY_S
            # only what goes through that ISP: not LTE, nor the ISP's own address
            quick, via = _echo_round_trip(shop.box, device="wwan0")
            assert via == LTE_ADDR
            assert quick < DELAY_S / 2
            assert _ping_ms(shop.box, WIRED_GW, wait_s=3 * DELAY_S) < 500 * DELAY_S
        finally:
            heal(shop.isp_wired)  # ends the latency, like every other fault
        assert latency.passed is not None and latency.passed > 0
        assert latency.dropped == 0
        assert _leftovers(shop.isp_wired) == ""
        healed, _ = _echo_round_trip(shop.box)
        assert healed < DELAY_S / 2


def test_latency_combines_with_loss_and_is_replaced_by_a_new_one() -> None:
    with build_shop() as shop:
        add_latency(shop.isp_wired, "cust0", DELAY_S)
        random_loss(shop.isp_wired, "cust0", 0)  # an nft fault beside it: still delayed
        slow, _ = _echo_round_trip(shop.box)
        assert slow >= 0.9 * DELAY_S
        add_latency(shop.isp_wired, "cust0", DELAY_S / 4)  # replaces the 2 s one
        quicker, _ = _echo_round_trip(shop.box)
        assert 0.9 * DELAY_S / 4 <= quicker < 0.9 * DELAY_S
        assert remove_latency(shop.isp_wired) is not None
        assert remove_latency(shop.isp_wired) is None
        assert _leftovers(shop.isp_wired) == ""
        heal(shop.isp_wired)


def test_latency_out_of_range_is_refused_naming_the_value() -> None:
    with pytest.raises(DrillError, match=r"delay_s -1"):
        add_latency("no-such-namespace", "cust0", -1)
