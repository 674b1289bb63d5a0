"""What keeps one LAN client from starving the POS API of time or file descriptors.

The TCP listener is `LimitedSite`, an aiohttp site with its own accept loop:

- **Connection caps.** At most `max_connections_per_address` connections from one source
  (an IPv4 address or an IPv6 /64) and `budget` in all, where the budget is
  `api.max_connections` lowered to stay well below the process's open-file limit
  (`connection_budget`: the descriptors open at start plus a headroom stay free for the
  database, the gateway client, probes and MQTT). A new connection beyond a cap takes
  the place of the oldest *quiet* connection (no request under way: fresh, mid-handshake
  or idle kept-alive) of that source, or of the busiest source for the total; when none
  is quiet it is refused (reset at once). The loop never runs into EMFILE under a flood,
  so nothing is left in the kernel's backlog for long and `/healthz` and payments from
  other terminals keep their latency.
- **Timeouts.** A TLS handshake must finish within `tls_handshake_timeout_s` (asyncio's
  server-side handshake timeout). A request must arrive whole, headers and body, within
  `request_timeout_s` of its first byte (for a new connection: of the connection); the
  check looks at the request the handler holds (`content.is_eof()`), so a slow *handler*
  (an online authorization) is never cut, only a slow *client*. An idle kept-alive
  connection is closed after `keepalive_timeout_s` (aiohttp's keep-alive timer, which
  also bounds the time from a response to the next request's complete headers).
- **Sizes.** Request line, header fields and header count are capped by aiohttp's parser
  (`runner_kwargs`); the body by the application's `client_max_size`; an unread body is
  drained for at most `lingering_time_s` before the connection closes.
- **Bounded logs.** Refusals, evictions, timeouts, failed handshakes and accept errors are
  counted (`ConnectionCounters`, shown in the status) and logged as one summary line per
  `log_window_s`, never one line, let alone a traceback, per connection. Tracebacks that
  aiohttp would log for a handler whose client went away are dropped the same way.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import errno
import functools
import ipaddress
import logging
import os
import resource
import socket
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from firmware.config.schema import ApiConfig
from firmware.state import ConnectionCounters

log = logging.getLogger("storebox.api.limits")
#: aiohttp's per-request error log, filtered (see `quiet_server_logger`).
SERVER_LOGGER = "storebox.api.server"

#: errno values of accept() that mean "out of a resource", not "this client is odd".
_RESOURCE_ERRORS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
ACCEPT_BATCH = 256
ACCEPT_PAUSE_S = 0.1


@dataclass(frozen=True)
class Limits:
    request_timeout_s: float = 20.0
    keepalive_timeout_s: float = 30.0
    tls_handshake_timeout_s: float = 10.0
    max_connections: int = 256
    max_connections_per_address: int = 32
    max_line_size: int = 4096
    max_field_size: int = 8190
    max_headers: int = 64
    lingering_time_s: float = 2.0
    log_window_s: float = 60.0

    @classmethod
    def from_config(cls, api: ApiConfig) -> Limits:
        return cls(request_timeout_s=api.request_timeout_s,
                   keepalive_timeout_s=api.keepalive_timeout_s,
                   tls_handshake_timeout_s=api.tls_handshake_timeout_s,
                   max_connections=api.max_connections,
                   max_connections_per_address=api.max_connections_per_address,
                   lingering_time_s=min(2.0, api.request_timeout_s))

    def runner_kwargs(self) -> dict[str, Any]:
        """aiohttp `AppRunner`/`Server` options (passed on to every `RequestHandler`)."""
        return {"keepalive_timeout": self.keepalive_timeout_s,
                "max_line_size": self.max_line_size,
                "max_field_size": self.max_field_size,
                "max_headers": self.max_headers,
                "lingering_time": self.lingering_time_s,
                "logger": quiet_server_logger()}


# ---------------------------------------------------------------------------------------
# file descriptors


def raise_nofile_limit(target: int = 65536) -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (at most `target`); (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = target if hard == resource.RLIM_INFINITY else min(hard, target)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
    return soft, hard


def open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def connection_budget(configured: int, soft_limit: int | None = None,
                      open_now: int | None = None) -> int:
    """`configured`, lowered so that the API's connections plus what is open now plus a
    headroom (a quarter of the limit, at least 32) stay under the open-file limit."""
    if soft_limit is None:
        soft_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft_limit == resource.RLIM_INFINITY:
        return configured
    if open_now is None:
        open_now = open_fds()
    headroom = max(32, soft_limit // 4)
    return max(4, min(configured, soft_limit - open_now - headroom))


def source_key(address: Any) -> str:
    """The unit a per-address cap counts: the IPv4 address, or the IPv6 /64."""
    host = str(address[0]) if isinstance(address, tuple) else str(address)
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network(f"{ip}/64", strict=False))
    return str(ip)


# ---------------------------------------------------------------------------------------
# bounded logging


class WindowLog:
    """Counts events and logs them as one summary line per window (the first at once)."""

    def __init__(self, logger: logging.Logger, window_s: float,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.window_s = window_s
        self.monotonic = monotonic
        self.kinds: collections.Counter[str] = collections.Counter()
        self.sources: collections.Counter[str] = collections.Counter()
        self._last = float("-inf")
        self._handle: asyncio.TimerHandle | None = None

    def note(self, kind: str, source: str | None = None) -> None:
        self.kinds[kind] += 1
        if source:
            self.sources[source] += 1
        now = self.monotonic()
        if now - self._last >= self.window_s:
            self.flush()
        elif self._handle is None:
            with contextlib.suppress(RuntimeError):  # no running loop: next note flushes
                self._handle = asyncio.get_running_loop().call_later(
                    self._last + self.window_s - now, self.flush)

    def flush(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if not self.kinds:
            return
        self._last = self.monotonic()
        what = ", ".join(f"{n} {kind.replace('_', ' ')}" for kind, n in sorted(self.kinds.items()))
        top = ", ".join(f"{s} ({n})" for s, n in self.sources.most_common(3))
        self.logger.warning("API connections: %s%s (at most one such line per %.0f s)",
                            what, f"; from {top}" if top else "", self.window_s)
        self.kinds.clear()
        self.sources.clear()


class _ConnectionLossFilter(logging.Filter):
    """Drop aiohttp's "Error handling request" when the client went away (we closed a
    slow client, or it hung up): no traceback per connection."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, ConnectionError | asyncio.CancelledError)


def quiet_server_logger() -> logging.Logger:
    logger = logging.getLogger(SERVER_LOGGER)
    if not any(isinstance(f, _ConnectionLossFilter) for f in logger.filters):
        logger.addFilter(_ConnectionLossFilter())
    return logger


# ---------------------------------------------------------------------------------------
# connections


class _Connection:
    """One accepted socket, from accept() until its transport is gone."""

    __slots__ = ("closing", "handed_over", "opened_at", "protocol", "released", "sock",
                 "source")

    def __init__(self, sock: socket.socket, source: str, opened_at: float) -> None:
        self.sock = sock
        self.source = source
        self.opened_at = opened_at
        self.protocol: LimitedProtocol | None = None
        #: the socket belongs to an asyncio transport (which closes it)
        self.handed_over = False
        #: evicted: still counted until its descriptor is closed
        self.closing = False
        self.released = False

    def quiet(self) -> bool:
        """No request under way: in its TLS handshake, fresh, or idle between requests."""
        return self.protocol is None or self.protocol.quiet()

    def reading(self) -> bool:
        """Its request is not whole yet (a slow client or a slowloris, perhaps): may make
        room for a new connection when nothing is quiet. One whose whole request a
        handler holds (a payment under way) never is."""
        return self.protocol is None or not self.protocol.request_in()

    def close(self) -> None:
        if self.protocol is not None:
            self.protocol.abort()
        else:
            # before or in its handshake: the transport owns (or will own) the descriptor;
            # a shutdown makes the handshake fail at once and the transport close it
            # (closing it here could race a reused descriptor number)
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)


def _victim(groups: list[dict[_Connection, None]]) -> _Connection | None:
    """The oldest quiet connection of the first group that has one, else the oldest one
    still reading its request; the groups in order of preference."""
    for pick in (_Connection.quiet, _Connection.reading):
        for conns in groups:
            victim = next((c for c in conns if not c.closing and pick(c)), None)
            if victim is not None:
                return victim
    return None


class ConnectionGuard:
    """The registry of open API connections and the caps on them."""

    def __init__(self, limits: Limits, counters: ConnectionCounters, budget: int,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.counters = counters
        self.budget = budget
        self.monotonic = monotonic
        self.events = WindowLog(log, limits.log_window_s, monotonic)
        self._all: dict[_Connection, None] = {}
        self._by_source: dict[str, dict[_Connection, None]] = {}
        self._by_handler: dict[RequestHandler, LimitedProtocol] = {}
        self._closing = 0
        self.slack = max(4, budget // 8)
        counters.limit = budget
        counters.per_address_limit = limits.max_connections_per_address

    def __len__(self) -> int:
        return len(self._all)

    def must_wait(self) -> bool:
        """Evicted connections are still closing: accept no more until they are gone (the
        new ones wait in the listen backlog, a loop turn or two)."""
        return self._closing >= self.slack or len(self._all) >= self.budget

    def note(self, kind: str, source: str | None = None) -> None:
        counter = f"{kind}_total"
        setattr(self.counters, counter, getattr(self.counters, counter) + 1)
        self.events.note(kind, source)

    def admit(self, sock: socket.socket, source: str) -> _Connection | None:
        """Register a new connection from `source`; None when there is no room (the
        caller refuses it). Beyond the per-address cap it is refused; at the total cap it
        takes the place of a connection of the busiest source: a quiet one first, else one
        still sending its request, never one whose request a handler holds.

        Evicted connections count until their descriptors are closed: `budget` bounds
        them all; live ones are kept `slack` below it so that a new connection can take
        an old one's place while the old one closes."""
        if len(self._by_source.get(source, {})) >= self.limits.max_connections_per_address:
            self.note("refused", source)  # its own flood: no one else pays for it
            return None
        if len(self._all) - self._closing >= self.budget - self.slack:
            victim = _victim(sorted(self._by_source.values(), key=len, reverse=True))
            if victim is None:
                self.note("refused", source)
                return None
            self._evict(victim)
        if len(self._all) >= self.budget:
            self.note("refused", source)  # too many still closing: this one waits its turn
            return None
        conn = _Connection(sock, source, self.monotonic())
        self._all[conn] = None
        self._by_source.setdefault(source, {})[conn] = None
        self._count()
        return conn

    def _evict(self, conn: _Connection) -> None:
        """Close `conn`; it counts until its transport has closed the descriptor (a burst
        of accepts must not outrun the closes)."""
        self.note("evicted", conn.source)
        conn.closing = True
        self._closing += 1
        conn.close()

    def release(self, conn: _Connection) -> None:
        if conn.released:
            return
        conn.released = True
        if conn.closing:
            self._closing -= 1
        self._all.pop(conn, None)
        conns = self._by_source.get(conn.source)
        if conns is not None:
            conns.pop(conn, None)
            if not conns:
                del self._by_source[conn.source]
        if conn.protocol is not None:
            self._by_handler.pop(conn.protocol.inner, None)
        self._count()

    def _count(self) -> None:
        self.counters.open = len(self._all)
        self.counters.peak = max(self.counters.peak, self.counters.open)

    def attach(self, conn: _Connection, protocol: LimitedProtocol) -> None:
        conn.protocol = protocol
        self._by_handler[protocol.inner] = protocol
        if conn.closing:  # evicted while its handshake finished
            protocol.abort()

    async def on_response_prepare(self, request: web.Request,
                                  response: web.StreamResponse) -> None:
        """The app's `on_response_prepare` signal: the request on that connection is done
        being read (or never will be); its read deadline ends."""
        protocol = self._by_handler.get(request.protocol)
        if protocol is not None:
            protocol.response_started()

    def close_all(self) -> None:
        for conn in list(self._all):
            self.release(conn)
            conn.close()
        self.events.flush()

    def quiet_accept_errors(self, loop: asyncio.AbstractEventLoop) -> Callable[[], None]:
        """Count asyncio's "socket.accept() out of system resource" (the admin socket's
        accept loop, when something else used up the descriptors) instead of logging a
        traceback for each retry; returns the undo."""
        previous = loop.get_exception_handler()

        def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            if context.get("message") == "socket.accept() out of system resource":
                self.note("accept_errors")
            elif previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)

        loop.set_exception_handler(handler)
        return lambda: loop.set_exception_handler(previous)


class LimitedProtocol(asyncio.Protocol):
    """aiohttp's `RequestHandler` behind a read deadline (see the module docstring)."""

    def __init__(self, inner: RequestHandler, conn: _Connection, guard: ConnectionGuard,
                 timeout_s: float) -> None:
        self.inner = inner
        self.conn = conn
        self.guard = guard
        self.timeout_s = timeout_s
        self.transport: asyncio.Transport | None = None
        self._reading_since: float | None = None
        self._request_bytes = 0
        self._timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self._start_reading()
        self.inner.connection_made(transport)
        self.guard.attach(self.conn, self)

    def data_received(self, data: bytes) -> None:
        if self._reading_since is None:
            self._start_reading()
        self._request_bytes += len(data)
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        self.inner.eof_received()
        return None  # as aiohttp: the transport closes its side

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timer()
        self.guard.release(self.conn)
        self.inner.connection_lost(exc)

    # deadlines

    def handling(self) -> bool:
        """A handler holds a request of this connection (e.g. a payment under way)."""
        return getattr(self.inner, "_current_request", None) is not None

    def request_in(self) -> bool:
        """A handler holds a whole request of this connection."""
        request = getattr(self.inner, "_current_request", None)
        return request is not None and bool(request.content.is_eof())

    def quiet(self) -> bool:
        if self.handling():
            return False
        return self._reading_since is None or self._request_bytes == 0

    def response_started(self) -> None:
        self._reading_since = None
        self._request_bytes = 0
        self._cancel_timer()

    def abort(self) -> None:
        self._cancel_timer()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.abort()

    def _start_reading(self) -> None:
        self._reading_since = self._loop.time()
        self._request_bytes = 0
        self._cancel_timer()
        self._timer = self._loop.call_later(self.timeout_s, self._check)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _check(self) -> None:
        self._timer = None
        since = self._reading_since
        if since is None or self.transport is None or self.transport.is_closing():
            return
        left = since + self.timeout_s - self._loop.time()
        if left > 0:
            self._timer = self._loop.call_later(left, self._check)
            return
        request = getattr(self.inner, "_current_request", None)
        if request is not None and request.content.is_eof():
            # the request is in; the handler is at work: no deadline on it
            self._reading_since = None
            return
        self.guard.note("timed_out", self.conn.source)
        self.abort()


# ---------------------------------------------------------------------------------------
# the site


class LimitedSite(web.BaseSite):
    """A TCP site (like `web.TCPSite`) that accepts through a `ConnectionGuard`."""

    __slots__ = ("_accept_paused", "_guard", "_host", "_limits", "_port", "_sockets",
                 "_tasks")

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *,
                 guard: ConnectionGuard, ssl_context: ssl.SSLContext | None = None,
                 backlog: int = 1024) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._host = host
        self._port = port
        self._guard = guard
        self._limits = guard.limits
        self._sockets: list[socket.socket] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._accept_paused = False

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        host = f"[{self._host}]" if ":" in self._host else self._host or "0.0.0.0"
        return f"{scheme}://{host}:{self.port}"

    @property
    def port(self) -> int:
        if self._sockets:
            return int(self._sockets[0].getsockname()[1])
        return self._port

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(self._host or None, self._port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
        seen = set()
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6 and len(infos) > 1:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                sock.listen(self._backlog)
                sock.setblocking(False)
            except OSError:
                sock.close()
                self._close_sockets()
                raise
            self._sockets.append(sock)
        for sock in self._sockets:
            loop.add_reader(sock.fileno(), self._accept, sock)

    async def stop(self) -> None:
        self._close_sockets()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await super().stop()

    def _close_sockets(self) -> None:
        loop = asyncio.get_running_loop()
        for sock in self._sockets:
            with contextlib.suppress(OSError, ValueError):
                loop.remove_reader(sock.fileno())
            sock.close()
        self._sockets = []

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            if self._guard.must_wait():
                return  # level-triggered: called again on the next loop turn
            try:
                client, address = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _RESOURCE_ERRORS:
                    self._guard.note("accept_errors")
                    self._pause_accepting(sock)
                    return
                # ECONNABORTED and the like: that client gave up; next one
                self._guard.note("accept_errors")
                continue
            source = source_key(address)
            conn = self._guard.admit(client, source)
            if conn is None:
                _reset(client)
                continue
            client.setblocking(False)
            task = asyncio.get_running_loop().create_task(self._connect(client, conn))
            self._tasks.add(task)
            task.add_done_callback(functools.partial(self._connected, client, conn))

    def _connected(self, client: socket.socket, conn: _Connection,
                   task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():  # the site stops
            self._guard.release(conn)
            if not conn.handed_over:
                _reset(client)

    def _pause_accepting(self, sock: socket.socket) -> None:
        """Out of descriptors (something else took them): try again shortly; the pending
        connections wait in the kernel's backlog meanwhile."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(OSError, ValueError):
            loop.remove_reader(sock.fileno())

        def resume() -> None:
            if sock in self._sockets:
                loop.add_reader(sock.fileno(), self._accept, sock)

        loop.call_later(ACCEPT_PAUSE_S, resume)

    async def _connect(self, client: socket.socket, conn: _Connection) -> None:
        loop = asyncio.get_running_loop()
        server = self._runner.server
        assert server is not None
        timeout = self._limits.request_timeout_s

        def factory() -> LimitedProtocol:
            return LimitedProtocol(server(), conn, self._guard, timeout)

        conn.handed_over = True
        try:
            if self._ssl_context is None:
                await loop.connect_accepted_socket(factory, client)
            else:
                await loop.connect_accepted_socket(
                    factory, client, ssl=self._ssl_context,
                    ssl_handshake_timeout=self._limits.tls_handshake_timeout_s)
        except (OSError, TimeoutError, ssl.SSLError):
            # a failed or slow handshake: the transport closes the socket
            self._guard.note("handshake_failed", conn.source)
            self._guard.release(conn)


def _reset(client: socket.socket) -> None:
    """Close with a RST: no TIME_WAIT, nothing left to linger."""
    with contextlib.suppress(OSError):
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()


#: asyncio reads TLS into a buffer of `SSLProtocol.max_size` (256 KiB in Python 3.11) per
#: connection, kept for the connection's life; a TLS record is at most 16 KiB.
TLS_READ_BUFFER = 32 * 1024


def cap_tls_read_buffers() -> None:
    """Every TLS connection of the process (POS API, gateway client, broker) reads into a
    32 KiB buffer instead of 256 KiB: 16 kept-alive POS connections cost ~0.5 MB, not
    4 MB, and a flood of idle TLS connections costs an eighth as much."""
    import asyncio.sslproto

    asyncio.sslproto.SSLProtocol.max_size = TLS_READ_BUFFER
