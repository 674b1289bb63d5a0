"""Issues 11 and 13: idle CPU of the daemon while it probes, and cold start to READY=1.

The real daemon (`storebox run`) in the test shop's box namespace (lab/shop.py):
netlink route control, nft LAN forwarding, the wired line's probe rounds (quorum 2 of 3;
every 0.2 s, 0.4 s while quiet: failover/quiet.py) and the LTE standby budget, the EC25
simulator (in the daemon's process, as the config chooses it: its CPU is counted too),
mock LEDs; no payments, no fleet broker. CPU is the process's utime+stime plus its
reaped children's (nft, conntrack) from /proc/PID/stat over STOREBOX_BENCH_IDLE_S
seconds (default 300), after the uplinks settled.

STOREBOX_BENCH_IDLE_DETECTOR ("rounds" or "sequential"; default the schema's
`probes.detector`) picks the wired line's down test: the sequential one probes every
0.2 s with 4 tries per probe. STOREBOX_BENCH_IDLE_TARGETS picks the targets: "default"
(the default: the schema's, a TCP connect, a DNS query and an HTTPS GET of
gateway.example, what an installed box probes), "tcp" (issue 11's set: TCP x2, ICMP)
or "https" (three HTTPS GETs). For all but "tcp" the internet serves 203.0.113.10 (TCP
443, HTTPS with a throw-away CA the daemon trusts through SSL_CERT_FILE) and
203.0.113.53 (DNS), and the names resolve through each uplink's own resolver (wired's
configured, LTE's learnt from the modem's data call).

Start: process start to READY=1 on $NOTIFY_SOCKET (.pyc already written, as the .deb
ships them). The packaged daemon's start under a real systemd is measured by
tests/packaging/package_root.py (ExecMainStart to ActiveEnter).
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest

from benchmarks.report import record
from firmware.cli.client import get_json
from firmware.config.schema import ProbesConfig
from lab.box import BoxDaemon, configure, new_secret, write_config
from lab.dns import DnsResponder
from lab.drill.config import drill_config
from lab.health import serve_health
from lab.netns import inside
from lab.shop import GATEWAY_IP, OTHER_IP, PORT, Shop, build_shop, ipn
from tests.failover.netlab import make_pki

pytestmark = pytest.mark.timeout(1800)
IDLE_S = float(os.environ.get("STOREBOX_BENCH_IDLE_S", "300"))
DETECTOR = os.environ.get("STOREBOX_BENCH_IDLE_DETECTOR", ProbesConfig().detector)
TARGETS = os.environ.get("STOREBOX_BENCH_IDLE_TARGETS", "default")
#: The default targets' servers on the internet: the site (TCP, HTTPS) and a resolver.
SITE, RESOLVER = "203.0.113.10", "203.0.113.53"
WIRED_DNS, SKT_DNS = "10.1.0.1", "210.220.163.82"  # wired's configured, the SKT modem's
HTTPS_NAMES = ("gateway.example", "pay.example", "status.example")
TARGET_SETS = {
    "tcp": [f"tcp:{GATEWAY_IP}:{PORT}", f"tcp:{OTHER_IP}:{PORT}", f"icmp:{GATEWAY_IP}"],
    "default": list(ProbesConfig().targets),
    "https": [f"https://{name}/health" for name in HTTPS_NAMES],
}
SETTLE_S = 10.0
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_split(pid: int) -> tuple[int, int]:
    """(utime + cutime, stime + cstime) of `pid` (fields 14-17 of /proc/PID/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = [int(x) for x in stat[stat.rindex(")") + 2:].split()[11:15]]
    return fields[0] + fields[2], fields[1] + fields[3]


def machine_ticks() -> tuple[int, int]:
    """(busy, all) ticks of every CPU since boot (/proc/stat's first line): what else
    ran on the machine while the daemon was measured."""
    values = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]  # idle, iowait
    return sum(values[:8]) - idle, sum(values[:8])


def daemon_health(daemon: BoxDaemon, token: str) -> tuple[str, str, float | None, str]:
    """The wired and LTE uplinks' states as the daemon shows them, wired's probe loss (0
    when every target answers: the CPU measured is that of probes that work), and the
    status's uplink section (to show when they are not as expected)."""
    uplink = get_json(f"unix:{daemon.admin_socket}", "/v1/status", token)["uplink"]
    return (uplink["wired"]["state"], uplink["lte"]["state"], uplink["wired"]["loss_pct"],
            str(uplink))


def idle_config(workdir: Path, token: str) -> Path:
    config = drill_config(workdir, merchant_key=new_secret(), token=token,
                          lte_carrier="SKT", failback_after_s=5.0)
    config = configure(config, probes={"targets": TARGET_SETS[TARGETS], "detector": DETECTOR},
                       wired={"interface": "wan0", "carrier": "KT", "dns": [WIRED_DNS]},
                       fleet={"mqtt_url": ""})
    return write_config(workdir / "storebox.toml", config, by="bench_idle")


class HttpsSite:
    """An HTTPS `/health` (and a bare TCP accept) on SITE:443 in `ns`, on its own loop in
    a thread: the bench's main thread only sleeps while measuring."""

    def __init__(self, ns: str, ssl_context: ssl.SSLContext) -> None:
        with inside(ns):
            self._sock = socket.create_server((SITE, 443))
        self._ssl = ssl_context
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._loop.run_until_complete,
                                        args=(self._serve(),), daemon=True, name="bench-https")
        self._thread.start()
        assert self._ready.wait(10), "the HTTPS site did not start"

    async def _serve(self) -> None:
        runner = await serve_health(self._sock, self._ssl)
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def handshakes(self) -> int:
        """TLS handshakes the site completed (each a new HTTPS connection: #13 keeps the
        probe's connection, so few while the daemon probes). Not ``accept``: that counts
        the TCP target's bare connects to the same port too."""
        return int(self._ssl.session_stats()["accept_good"])

    def close(self) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(5)
        self._loop.close()


@contextmanager
def internet_services(shop: Shop, workdir: Path
                      ) -> Iterator[tuple[dict[str, str], HttpsSite, DnsResponder]]:
    """The default targets' servers and each uplink's resolver: the daemon's extra env,
    the HTTPS site, the internet's resolver (the DNS probe's target)."""
    pki = make_pki(HTTPS_NAMES)
    ca = workdir / "ca.pem"
    ca.write_bytes(pki.ca_pem)
    for ns, address in ((shop.internet, SITE), (shop.internet, RESOLVER),
                        (shop.isp_lte, SKT_DNS)):
        ipn(ns, "addr", "add", f"{address}/32", "dev", "lo")
    with ExitStack() as stack:
        resolvers = [DnsResponder(ns, address, SITE)
                     for ns, address in ((shop.internet, RESOLVER), (shop.isp_wired, WIRED_DNS),
                                         (shop.isp_lte, SKT_DNS))]
        for resolver in resolvers:
            stack.callback(resolver.close)
        site = HttpsSite(shop.internet, pki.server_context(str(workdir)))
        stack.callback(site.close)
        yield {"SSL_CERT_FILE": str(ca)}, site, resolvers[0]


def test_idle_cpu_while_probing(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("the shop's network namespaces need root (CI runs as root)")
    load0 = os.getloadavg()[0]
    with build_shop() as shop, ExitStack() as stack:
        workdir = tmp_path / "idle"
        workdir.mkdir()
        env, site, resolver = stack.enter_context(internet_services(shop, workdir)) \
            if TARGETS != "tcp" else ({}, None, None)
        began = time.monotonic()
        token = new_secret()
        daemon = BoxDaemon(shop.box, idle_config(workdir, token), env=env)
        try:
            daemon.wait_ready()
            ready_s = time.monotonic() - began
            time.sleep(SETTLE_S)  # measuring: the uplinks come up, LTE data is set up
            pid = daemon.proc.pid
            t0, (u0, s0), m0 = time.monotonic(), cpu_split(pid), machine_ticks()
            h0 = site.handshakes() if site is not None else 0
            q0 = resolver.queries if resolver is not None else 0
            time.sleep(IDLE_S)  # measuring window
            t1, (u1, s1), m1 = time.monotonic(), cpu_split(pid), machine_ticks()
            handshakes = site.handshakes() - h0 if site is not None else 0
            queries = resolver.queries - q0 if resolver is not None else 0
            assert daemon.proc.poll() is None, daemon.log_tail()
            health = daemon_health(daemon, token)
        finally:
            daemon.stop()
    cpu = (u1 + s1 - u0 - s0) / TICKS / (t1 - t0) * 100
    user_share = (u1 - u0) / max(1, u1 + s1 - u0 - s0) * 100
    machine_busy = (m1[0] - m0[0]) / max(1, m1[1] - m0[1]) * 100
    record("idle", [
        ("start to READY=1 (s)", round(ready_s, 2), "<= 2 s"),
        (f"daemon CPU while probing ({DETECTOR} detector, {TARGETS} targets), "
         f"{t1 - t0:.0f} s (% of one core)",
         round(cpu, 2), "<= 1 %"),
        ("of which user time (%; the rest is the kernel's, with the lab's packet path)",
         round(user_share), "-"),
        ("the whole machine busy in the window (% of all CPUs, the daemon included)",
         round(machine_busy, 2), "-"),
        ("LTE at the end", health[1], "standby"),
        ("TLS handshakes at the HTTPS site in the window (kept connections: few)",
         handshakes, "-"),
        # the DNS probe's queries a second: wired's rounds a second (one query a round
        # when the first attempt answers), 2.5 while quiet pacing holds, 5 at full rate
        ("DNS probe queries a second (quiet rounds 2.5, full rate 5)",
         round(queries / (t1 - t0), 2) if resolver is not None else "-", "-"),
        ("load average at start / end", f"{load0:.2f} / {os.getloadavg()[0]:.2f}",
         "shared machine"),
    ])
    # every wired target answered; LTE is standby, or with HTTPS-only targets may still
    # await its verdict (a failed boot round ends the fast probing, and three HTTPS probes
    # a round leave the 5 MB budget one standby round in hours: failover.engine)
    assert health[0] == "up" and health[2] == 0.0, health[3]
    assert health[1] == "standby" or TARGETS == "https", health[3]
    # the targets of record: issue 11's TCP set and the schema's default (issue 13, with
    # quiet pacing: failover/quiet.py); three HTTPS targets are measured only
    if TARGETS in ("tcp", "default"):
        assert ready_s <= 2.0
        assert cpu <= 1.0
