"""A shop in network namespaces: the box between two ISPs and a LAN, an "internet" behind both.

    client eth0 192.168.50.10  (the POS and the shop's other devices)
      |
    lan0 192.168.50.1  [box]  wan0 10.1.0.2 --- 10.1.0.1 [isp-w] --+
                              wwan0 10.2.0.2 --- 10.2.0.1 [isp-l] --+-- [internet]
                                               198.51.100.10 (payment gateway)
                                               203.0.113.20 (some other server)

The internet routes each ISP's customer block back through that ISP, so a server sees
the uplink address a connection came through (the box masquerades LAN traffic).
The ISPs install no NAT. The box's uplink addresses and OS default routes are what
a DHCP client would have installed (`proto dhcp`, metrics 1024/1025), unless asked
for none (NetworkManager tests let NetworkManager configure them).

Used by `storebox drill` and by the failover tests and benchmarks. Everything lives in
namespaces created here and deleted on exit; the host is never touched.
"""

from __future__ import annotations

import asyncio
import json
import select
import socket
import subprocess
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field

from lab.errors import DrillError
from lab.netns import inside, namespace

GATEWAY_IP = "198.51.100.10"  # the payment gateway: on the LTE allowlist
OTHER_IP = "203.0.113.20"  # anything else on the internet
PORT = 8443
WIRED_ADDR, WIRED_GW = "10.1.0.2", "10.1.0.1"
LTE_ADDR, LTE_GW = "10.2.0.2", "10.2.0.1"
WIRED_ADDR6, WIRED_GW6 = "2001:db8:1::2", "2001:db8:1::1"
LTE_ADDR6, LTE_GW6 = "2001:db8:2::2", "2001:db8:2::1"
LAN_BOX, LAN_CLIENT = "192.168.50.1", "192.168.50.10"


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(args, capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise DrillError(" ".join(args), proc.stderr.strip() or f"exit {proc.returncode}")
    return proc


def ipn(ns: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return sh("ip", "-n", ns, *args, check=check)


def sysctl(ns: str, key: str, value: str) -> None:
    sh("ip", "netns", "exec", ns, "sysctl", "-qw", f"{key}={value}")


class EchoServer:
    """TCP servers in a namespace: on connect they send the peer address and a newline,
    then echo. Sockets are created inside the namespace and served from one thread."""

    def __init__(self, ns: str, addresses: list[str], port: int = PORT) -> None:
        self._listeners: list[socket.socket] = []
        with inside(ns):
            for address in addresses:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((address, port))
                s.listen(64)
                self._listeners.append(s)
        self._wake_r, self._wake_w = socket.socketpair()
        self._conns: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            ready, _, _ = select.select([*self._listeners, *self._conns, self._wake_r], [], [])
            if self._wake_r in ready:
                return
            for s in ready:
                if s in self._listeners:
                    conn, peer = s.accept()
                    conn.sendall(f"{peer[0]}\n".encode())
                    self._conns.append(conn)
                    continue
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                if data:
                    try:
                        s.sendall(data)
                        continue
                    except OSError:
                        pass
                s.close()
                self._conns.remove(s)

    def close(self) -> None:
        self._wake_w.send(b"x")
        self._thread.join(5)
        for s in [*self._listeners, *self._conns, self._wake_r, self._wake_w]:
            s.close()


def connect(ns: str, host: str, port: int = PORT, *, device: str | None = None,
            timeout: float = 3.0) -> tuple[socket.socket, str]:
    """A TCP connection from namespace `ns` (optionally bound to `device`, as probes
    are). Returns it with the source address the server saw."""
    with inside(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if device is not None:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
        s.settimeout(timeout)
        s.connect((host, port))
        seen = b""
        while not seen.endswith(b"\n"):
            chunk = s.recv(64)
            if not chunk:
                raise ConnectionError("server closed before greeting")
            seen += chunk
    except BaseException:
        s.close()
        raise
    return s, seen.decode().strip()


async def recv_line(s: socket.socket, what: str) -> bytes:
    """One line from an `EchoServer` over the non-blocking `s` (its greeting, naming the
    source it saw, or an echo), without blocking the loop; `ConnectionError` naming `what`
    when the server closes first."""
    loop = asyncio.get_running_loop()
    line = b""
    while not line.endswith(b"\n"):
        chunk = await loop.sock_recv(s, 64)
        if not chunk:
            raise ConnectionError(f"closed before the {what}")
        line += chunk
    return line


def seen_source(ns: str, host: str, port: int = PORT, *, device: str | None = None) -> str:
    s, seen = connect(ns, host, port, device=device)
    s.close()
    return seen


def route_dev(ns: str, dst: str, *extra: str) -> str:
    """The interface the kernel in `ns` routes `dst` out of (`ip route get`)."""
    out = ipn(ns, "-j", "route", "get", dst, *extra).stdout
    return str(json.loads(out)[0]["dev"])


@dataclass
class Shop:
    box: str
    isp_wired: str
    isp_lte: str
    internet: str
    client: str
    servers: list[EchoServer] = field(default_factory=list)


def _veth(ns_a: str, name_a: str, ns_b: str, name_b: str) -> None:
    ipn(ns_a, "link", "add", name_a, "type", "veth", "peer", "name", name_b, "netns", ns_b)
    ipn(ns_a, "link", "set", name_a, "up")
    ipn(ns_b, "link", "set", name_b, "up")


def _box_addresses(box: str, *, lte_point_to_point: bool, ipv6: bool) -> None:
    """The uplink addresses a DHCP client (or the modem's PPP link) would have set."""
    ipn(box, "addr", "add", f"{WIRED_ADDR}/24", "dev", "wan0")
    if lte_point_to_point:
        ipn(box, "addr", "add", LTE_ADDR, "peer", f"{LTE_GW}/32", "dev", "wwan0")
    else:
        ipn(box, "addr", "add", f"{LTE_ADDR}/24", "dev", "wwan0")
    if ipv6:
        ipn(box, "addr", "add", f"{WIRED_ADDR6}/64", "dev", "wan0", "nodad")
        ipn(box, "addr", "add", f"{LTE_ADDR6}/64", "dev", "wwan0", "nodad")


def _dhcp_routes(box: str, *, lte_point_to_point: bool, ipv6: bool) -> None:
    """What the DHCP clients installed: a default route per uplink, wired preferred."""
    ipn(box, "route", "add", "default", "via", WIRED_GW, "dev", "wan0",
        "proto", "dhcp", "metric", "1024")
    if lte_point_to_point:
        ipn(box, "route", "add", "default", "dev", "wwan0", "metric", "1025")
    else:
        ipn(box, "route", "add", "default", "via", LTE_GW, "dev", "wwan0",
            "proto", "dhcp", "metric", "1025")
    if ipv6:
        ipn(box, "-6", "route", "add", "default", "via", WIRED_GW6, "dev", "wan0",
            "proto", "ra", "metric", "1024")
        ipn(box, "-6", "route", "add", "default", "via", LTE_GW6, "dev", "wwan0",
            "proto", "ra", "metric", "1025")


@contextmanager
def build_shop(*, os_routes: bool = True, box_addresses: bool = True, ipv6: bool = False,
               lte_point_to_point: bool = False, prefix: str = "sbx") -> Iterator[Shop]:
    """Build the shop; namespaces are named `<prefix>box-<pid>-<n>` and so on."""
    with ExitStack() as stack:
        box, isp_w, isp_l, inet, client = (
            stack.enter_context(namespace(prefix + p))
            for p in ("box", "ispw", "ispl", "inet", "cli"))
        shop = Shop(box, isp_w, isp_l, inet, client)
        _veth(box, "wan0", isp_w, "cust0")
        _veth(box, "wwan0", isp_l, "cust0")
        _veth(box, "lan0", client, "eth0")
        _veth(isp_w, "core0", inet, "isp-w")
        _veth(isp_l, "core0", inet, "isp-l")
        for ns in (box, isp_w, isp_l):
            sysctl(ns, "net.ipv4.ip_forward", "1")
        # ISPs: customer side, core side.
        ipn(isp_w, "addr", "add", f"{WIRED_GW}/24", "dev", "cust0")
        if lte_point_to_point:
            ipn(isp_l, "addr", "add", LTE_GW, "peer", f"{LTE_ADDR}/32", "dev", "cust0")
            sysctl(isp_l, "net.ipv4.conf.cust0.proxy_arp", "1")
        else:
            ipn(isp_l, "addr", "add", f"{LTE_GW}/24", "dev", "cust0")
        ipn(isp_w, "addr", "add", "10.9.1.1/30", "dev", "core0")
        ipn(isp_l, "addr", "add", "10.9.2.1/30", "dev", "core0")
        ipn(isp_w, "route", "add", "default", "via", "10.9.1.2")
        ipn(isp_l, "route", "add", "default", "via", "10.9.2.2")
        # The internet: two servers, routes back to each ISP's customers.
        ipn(inet, "addr", "add", "10.9.1.2/30", "dev", "isp-w")
        ipn(inet, "addr", "add", "10.9.2.2/30", "dev", "isp-l")
        for address in (GATEWAY_IP, OTHER_IP):
            ipn(inet, "addr", "add", f"{address}/32", "dev", "lo")
        ipn(inet, "route", "add", "10.1.0.0/24", "via", "10.9.1.1")
        ipn(inet, "route", "add", "10.2.0.0/24", "via", "10.9.2.1")
        # The LAN.
        ipn(box, "addr", "add", f"{LAN_BOX}/24", "dev", "lan0")
        ipn(client, "addr", "add", f"{LAN_CLIENT}/24", "dev", "eth0")
        ipn(client, "route", "add", "default", "via", LAN_BOX)
        if ipv6:
            ipn(isp_w, "addr", "add", f"{WIRED_GW6}/64", "dev", "cust0", "nodad")
            ipn(isp_l, "addr", "add", f"{LTE_GW6}/64", "dev", "cust0", "nodad")
        if box_addresses:
            _box_addresses(box, lte_point_to_point=lte_point_to_point, ipv6=ipv6)
        if os_routes:
            _dhcp_routes(box, lte_point_to_point=lte_point_to_point, ipv6=ipv6)
        server = EchoServer(inet, [GATEWAY_IP, OTHER_IP])
        stack.callback(server.close)
        shop.servers.append(server)
        yield shop
