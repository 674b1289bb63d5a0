"""A box with two uplinks to two "ISP" namespaces, with services on the far side.

    box ns                        isp-a ns (wired ISP)           isp-b ns (LTE ISP)
    up0 10.71.0.2/24  <--veth-->  isp0 10.71.0.1/24
    up1 10.72.0.2/24  <--veth-->                                 isp1 10.72.0.1/24

Both ISPs carry the same "internet" addresses on their loopback (like the
real internet seen through two providers): 198.51.100.10 (TCP 7000, HTTP 80,
HTTPS 443 as gateway.test) and 198.51.100.53 (a tiny DNS responder). Services
record which box address reached them, so a test can tell which uplink a
probe really used. The box has a default route per uplink (up0 metric 100,
up1 metric 200), as the route controller keeps them.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import cast

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lab.faults import blackhole, dropped, nft, random_loss
from tests.support.netns import inside, namespace, run

SERVER = "198.51.100.10"
RESOLVER = "198.51.100.53"
TCP_PORT = 7000
TLS_NAME = "gateway.test"
BOX_ADDR = {"up0": "10.71.0.2", "up1": "10.72.0.2"}


@dataclass
class Lab:
    box: str
    isp: dict[str, str]  # box interface -> ISP namespace
    peer: dict[str, str]  # box interface -> ISP-side interface

    def box_ip(self, *args: str) -> str:
        return run("ip", "-n", self.box, *args).stdout


__all__ = ["blackhole", "nft", "nft_drops", "random_loss"]
nft_drops = dropped


@contextmanager
def topology() -> Iterator[Lab]:
    with ExitStack() as stack:
        box = stack.enter_context(namespace("sbxbox"))
        isp_a = stack.enter_context(namespace("sbxispa"))
        isp_b = stack.enter_context(namespace("sbxispb"))
        for up, isp_if, isp, net in (("up0", "isp0", isp_a, "71"), ("up1", "isp1", isp_b, "72")):
            run("ip", "-n", box, "link", "add", up, "type", "veth", "peer", "name", isp_if,
                "netns", isp)
            run("ip", "-n", box, "addr", "add", f"10.{net}.0.2/24", "dev", up)
            run("ip", "-n", box, "link", "set", up, "up")
            # a real ISP router does not answer ARP for internet addresses
            run("ip", "netns", "exec", isp, "sysctl", "-qw", "net.ipv4.conf.all.arp_ignore=1")
            run("ip", "-n", isp, "addr", "add", f"10.{net}.0.1/24", "dev", isp_if)
            run("ip", "-n", isp, "link", "set", isp_if, "up")
            run("ip", "-n", isp, "addr", "add", f"{SERVER}/32", "dev", "lo")
            run("ip", "-n", isp, "addr", "add", f"{RESOLVER}/32", "dev", "lo")
        run("ip", "-n", box, "route", "add", "default", "via", "10.71.0.1", "dev", "up0",
            "metric", "100")
        run("ip", "-n", box, "route", "add", "default", "via", "10.72.0.1", "dev", "up1",
            "metric", "200")
        for conf in ("all", "default", "up0", "up1"):
            run("ip", "netns", "exec", box, "sysctl", "-qw", f"net.ipv4.conf.{conf}.rp_filter=2")
        yield Lab(box=box, isp={"up0": isp_a, "up1": isp_b}, peer={"up0": "isp0", "up1": "isp1"})


# --------------------------------------------------------------------------- TLS material


@dataclass(frozen=True)
class Pki:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    def server_context(self, tmp: str) -> ssl.SSLContext:
        cert = os.path.join(tmp, "cert.pem")
        key = os.path.join(tmp, "key.pem")
        with open(cert, "wb") as f:
            f.write(self.cert_pem)
        with open(key, "wb") as f:
            f.write(self.key_pem)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(cert, key)
        return ctx

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.ca_pem.decode())


def make_pki(names: Sequence[str] = (TLS_NAME,)) -> Pki:
    """A throw-away CA and one server certificate for `names` (the first is its CN)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "storebox test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    return Pki(
        ca_pem=ca.public_bytes(serialization.Encoding.PEM),
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


# --------------------------------------------------------------------------- far-side services


def _dns_answer(query: bytes) -> bytes | None:
    if len(query) < 17:
        return None
    qid, _flags = struct.unpack_from("!HH", query, 0)
    off = 12
    labels = []
    while query[off]:
        n = query[off]
        labels.append(query[off + 1 : off + 1 + n].decode().lower())
        off += 1 + n
    question = query[12 : off + 5]
    name = ".".join(labels)
    if name.startswith("nx."):
        return struct.pack("!HHHHHH", qid, 0x8183, 1, 0, 0, 0) + question
    answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(SERVER)
    return struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0) + question + answer


class _DnsProtocol(asyncio.DatagramProtocol):
    def __init__(self, seen: list[str]) -> None:
        self.seen = seen
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.seen.append(addr[0])
        reply = _dns_answer(data)
        if reply is not None and self.transport is not None:
            self.transport.sendto(reply, addr)


@dataclass
class Services:
    """Servers in one ISP namespace; `peers` lists the client addresses seen."""

    tcp_peers: list[str] = field(default_factory=list)
    dns_peers: list[str] = field(default_factory=list)
    http_peers: list[str] = field(default_factory=list)

    @property
    def all_peers(self) -> set[str]:
        return set(self.tcp_peers) | set(self.dns_peers) | set(self.http_peers)


async def start_services(ns: str, server_ssl: ssl.SSLContext) -> tuple[Services, list[object]]:
    svc = Services()
    loop = asyncio.get_running_loop()
    with inside(ns):
        tcp = socket.create_server((SERVER, TCP_PORT), reuse_port=False)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind((RESOLVER, 53))
        http = socket.create_server((SERVER, 80))
        https = socket.create_server((SERVER, 443))

    async def on_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        svc.tcp_peers.append(writer.get_extra_info("peername")[0])
        writer.close()

    tcp_server = await asyncio.start_server(on_tcp, sock=tcp)
    transport, _ = await loop.create_datagram_endpoint(
        lambda: _DnsProtocol(svc.dns_peers), sock=udp
    )

    async def health(request: web.Request) -> web.Response:
        svc.http_peers.append(request.remote or "")
        return web.Response(text="ok")

    async def fail(request: web.Request) -> web.Response:
        return web.Response(status=503, text="down for maintenance")

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("http://portal.example/login")

    app = web.Application()
    app.router.add_get("/health", health)
    app.router.add_get("/fail", fail)
    app.router.add_get("/redirect", redirect)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.SockSite(runner, http).start()
    await web.SockSite(runner, https, ssl_context=server_ssl).start()
    return svc, [tcp_server, transport, runner]


async def stop_services(handles: list[object]) -> None:
    for h in handles:
        if isinstance(h, web.AppRunner):
            await h.cleanup()
        else:  # asyncio.Server, the DNS responder's datagram transport
            cast(asyncio.BaseTransport, h).close()


@asynccontextmanager
async def serving_topology(
    pki: Pki, tmp_dir: str
) -> AsyncIterator[tuple[Lab, ssl.SSLContext, dict[str, Services]]]:
    """``topology()`` with the far-side services on both ISPs: (lab, the servers' TLS
    context, box interface -> that ISP's services). Skips the test without root."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    with topology() as lab:
        server_ssl = pki.server_context(tmp_dir)
        svc_a, h_a = await start_services(lab.isp["up0"], server_ssl)
        svc_b, h_b = await start_services(lab.isp["up1"], server_ssl)
        try:
            yield lab, server_ssl, {"up0": svc_a, "up1": svc_b}
        finally:
            await stop_services(h_a + h_b)
