"""Latency at an ISP: every packet the box sends through it held `delay_s` before it goes on.

This kernel has neither netem (`tc qdisc ... netem`) nor nft's `queue` statement (no
NFT_QUEUE), so the delay is a userspace relay of whole packets, in the ISP's namespace:

    box --cust0--> [isp: ip rule "iif cust0 lookup 4242"] --> sbxdelay (TUN)
        --> relay process: holds each packet delay_s, writes it back into sbxdelay
        --> [isp: main table] --> core0 --> the internet

Every protocol is delayed alike (TCP, UDP, ICMP: the probes and the payments), in
order, per packet; the answers come back undelayed, so a round trip through the ISP
takes `delay_s` longer (the direction does not matter for a round trip). Traffic to the
ISP's own addresses (the local table, before the rule) is not delayed. Faults of
`lab.faults` combine with it: their nft chains see the packets before the rule does.

The relay is a child process (`python -m lab.latency`), not a thread: it holds and
releases packets on its own clock, unaffected by the engine or the bench in the
calling process. It owns the TUN device, so the device and its routes vanish with it;
it exits when its stdin closes (`remove_latency`, or the parent dying), first sending
on the packets it still holds (the line healed: what was in flight arrives now). At
most `limit` packets are held; more are dropped (a router's queue, not a memory leak).

`add_latency(ns, ifname, delay_s)` starts it (replacing a previous latency of that
namespace), `remove_latency(ns)` ends it; `lab.faults.heal` ends it too.
"""

from __future__ import annotations

import argparse
import fcntl
import os
import select
import struct
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

from lab.errors import DrillError

DEVICE = "sbxdelay"
TABLE = "4242"
RULE_PREF = "4242"
LIMIT = 10_000
READY_TIMEOUT_S = 20.0
_TUNSETIFF = 0x400454CA
_IFF_TUN = 0x0001
_IFF_NO_PI = 0x1000


# --------------------------------------------------------------------------- the relay


def open_tun(name: str) -> int:
    """A non-blocking TUN device `name` (no packet info header) in this namespace."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    try:
        fcntl.ioctl(fd, _TUNSETIFF, struct.pack("16sH", name.encode(), _IFF_TUN | _IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


def _drain(fd: int, most: int = 256) -> Iterator[bytes]:
    for _ in range(most):
        try:
            yield os.read(fd, 65535)
        except BlockingIOError:
            return


def relay(tun: int, control: int, delay_s: float, limit: int = LIMIT,
          monotonic: Callable[[], float] = time.monotonic) -> tuple[int, int]:
    """Hold each packet read from `tun` for `delay_s`, then write it back; until `control`
    reaches EOF, then send on what is still held. Returns (passed, dropped)."""
    held: deque[tuple[float, bytes]] = deque()
    passed = dropped = 0
    while True:
        timeout = max(0.0, held[0][0] - monotonic()) if held else None
        ready, _, _ = select.select([tun, control], [], [], timeout)
        if control in ready and not os.read(control, 64):
            break
        if tun in ready:
            due = monotonic() + delay_s
            for packet in _drain(tun):
                if len(held) >= limit:
                    dropped += 1
                else:
                    held.append((due, packet))
        now = monotonic()
        while held and held[0][0] <= now:
            passed += _send(tun, held.popleft()[1])
    while held:
        passed += _send(tun, held.popleft()[1])
    return passed, dropped


def _send(tun: int, packet: bytes) -> int:
    try:
        os.write(tun, packet)
    except OSError:
        return 0  # the device went away; the packet is lost like any other
    return 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.latency", description=__doc__)
    parser.add_argument("--dev", default=DEVICE)
    parser.add_argument("--delay-s", type=float, required=True)
    parser.add_argument("--limit", type=int, default=LIMIT)
    args = parser.parse_args(argv)
    tun = open_tun(args.dev)
    print("ready", flush=True)
    passed, dropped = relay(tun, sys.stdin.fileno(), args.delay_s, args.limit)
    print(f"passed {passed} dropped {dropped}", flush=True)
    return 0


# --------------------------------------------------------------------------- the fault


def _ip(ns: str, *args: str, check: bool = True) -> None:
    proc = subprocess.run(["ip", "-n", ns, *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise DrillError(f"latency: ip {' '.join(args)} in {ns}",
                         proc.stderr.strip() or f"exit {proc.returncode}")


class Latency:
    """The relay process of one ISP namespace and the rules that route into it."""

    def __init__(self, ns: str, ifname: str, delay_s: float, limit: int = LIMIT) -> None:
        if not (isinstance(delay_s, int | float) and 0 < delay_s <= 60):
            raise DrillError("latency", f"delay_s {delay_s!r} is not in (0, 60] seconds")
        self.ns, self.ifname, self.delay_s, self.limit = ns, ifname, float(delay_s), limit
        self.passed: int | None = None  # the relay's counts, once it has exited
        self.dropped: int | None = None
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self._proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, sys.executable, "-m", "lab.latency", "--dev", DEVICE,
             "--delay-s", repr(self.delay_s), "--limit", str(limit)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        try:
            self._await_ready()
            self._route()
        except BaseException:
            self.stop()
            raise

    def _await_ready(self) -> None:
        assert self._proc.stdout is not None
        ready, _, _ = select.select([self._proc.stdout], [], [], READY_TIMEOUT_S)
        line = self._proc.stdout.readline() if ready else b""
        if line.strip() != b"ready":
            self._proc.kill()
            _, err = self._proc.communicate()
            raise DrillError(f"latency relay in {self.ns}",
                             err.decode().strip() or f"not ready within {READY_TIMEOUT_S}s")

    def _route(self) -> None:
        _ip(self.ns, "link", "set", DEVICE, "up")
        subprocess.run(["ip", "netns", "exec", self.ns, "sysctl", "-qw",
                        f"net.ipv4.conf.{DEVICE}.rp_filter=0"], check=True)
        for family in ("-4", "-6"):
            _ip(self.ns, family, "route", "add", "default", "dev", DEVICE, "table", TABLE)
            _ip(self.ns, family, "rule", "add", "iif", self.ifname, "lookup", TABLE,
                "pref", RULE_PREF)

    def stop(self) -> None:
        """Rules out, the relay told to finish (it sends on what it holds) and reaped."""
        for family in ("-4", "-6"):
            _ip(self.ns, family, "rule", "del", "pref", RULE_PREF, check=False)
        if self._proc.returncode is not None:
            return
        try:
            out, _ = self._proc.communicate(timeout=10.0)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            out, _ = self._proc.communicate()
        words = out.decode().split()
        if words[:1] == ["passed"] and len(words) == 4:
            self.passed, self.dropped = int(words[1]), int(words[3])


_active: dict[str, Latency] = {}


def add_latency(ns: str, ifname: str, delay_s: float, limit: int = LIMIT) -> Latency:
    """Delay every packet arriving on `ifname` in namespace `ns` by `delay_s` (module docs);
    replaces the namespace's previous latency. DrillError when it cannot be set up."""
    remove_latency(ns)
    _active[ns] = latency = Latency(ns, ifname, delay_s, limit)
    return latency


def remove_latency(ns: str) -> Latency | None:
    """End the latency of namespace `ns` (nothing to do when there is none); the ended
    relay, with its counts, or None."""
    latency = _active.pop(ns, None)
    if latency is not None:
        latency.stop()
    return latency


if __name__ == "__main__":
    sys.exit(main())
