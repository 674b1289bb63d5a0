"""Loss tolerance (package docs): hedged connections for TCP and HTTP, retransmitted
datagrams for single-exchange probes (DNS, ICMP)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import TypeVar

from failover.probes.options import ProbeOptions

__all__ = ["hedged", "udp_exchange"]

T = TypeVar("T")


async def hedged(attempt: Callable[[], Awaitable[T]], attempts: int, retry_after_s: float) -> T:
    """Start ``attempt``; while nothing has answered, start another every retry_after_s.

    The first attempt to return wins; the first to raise fails the whole (an
    error is an answer, not loss). Losers are cancelled and awaited.
    """
    tasks: list[asyncio.Task[T]] = []
    try:
        while True:
            if len(tasks) < attempts:
                tasks.append(asyncio.ensure_future(attempt()))
            wait = retry_after_s if len(tasks) < attempts else None
            done, _ = await asyncio.wait(tasks, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            if done:
                winners = [t for t in done if not t.cancelled() and t.exception() is None]
                return (winners[0] if winners else next(iter(done))).result()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def udp_exchange(
    sock: socket.socket,
    payload: bytes,
    accept: Callable[[bytes], T | None],
    options: ProbeOptions,
    wire: list[int],
    overhead: int,
    make_payload: Callable[[int], bytes] | None = None,
    recv_overhead: int | None = None,
) -> T:
    """Send, resend every retry_after_s (up to attempts), return the first accepted reply.

    ``wire`` accumulates [sent, received] bytes including ``overhead`` per datagram
    (``recv_overhead`` for received ones when it differs: raw IPv4 sockets
    receive the IP header).
    """
    in_overhead = overhead if recv_overhead is None else recv_overhead
    loop = asyncio.get_running_loop()
    sends = 0
    while True:
        if sends < options.attempts:
            data = make_payload(sends) if make_payload is not None else payload
            await loop.sock_sendall(sock, data)
            wire[0] += len(data) + overhead
            sends += 1
        wait = options.retry_after_s if sends < options.attempts else None
        try:
            async with asyncio.timeout(wait):
                while True:
                    reply = await loop.sock_recv(sock, 4096)
                    wire[1] += len(reply) + in_overhead
                    result = accept(reply)
                    if result is not None:
                        return result
        except TimeoutError:
            continue
