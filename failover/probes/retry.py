"""Loss tolerance (package docs): hedged connections for TCP and HTTP, retransmitted
datagrams for single-exchange probes (DNS, ICMP).

Both tell an ``Attempts`` tally which attempt answered: the ones before it went
unanswered while a later one got through, so they count as lost round trips. That is
the packet-level loss a probe's retries hide (a probe that answers on its third
attempt succeeded, but two of its three exchanges were lost), and what the steering
policy judges a brownout by (`failover.steer`). A reply that merely comes late is not
counted lost: attempts are retried every ``retry_after_s`` (0.1 s), so on a slow line
the first attempt's answer still arrives first and is the one that answered."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from failover.probes.options import ProbeOptions

__all__ = ["Attempts", "hedged", "udp_exchange"]

T = TypeVar("T")


@dataclass(slots=True)
class Attempts:
    """One probe's attempts: how many were started, and which (1-based) answered."""

    started: int = 0
    answered: int | None = None

    def lost(self) -> tuple[int, int]:
        """(lost, exchanges) so far: up to the answer when there is one, else all
        started (at least one: a probe that could not even send lost its exchange)."""
        if self.answered is not None:
            return self.answered - 1, self.answered
        started = max(self.started, 1)
        return started, started


async def hedged(attempt: Callable[[], Awaitable[T]], attempts: int, retry_after_s: float,
                 tally: Attempts | None = None) -> T:
    """Start ``attempt``; while nothing has answered, start another every retry_after_s.

    The first attempt to return wins; the first to raise fails the whole (an
    error is an answer, not loss). Losers are cancelled and awaited. ``tally`` hears
    each start and which attempt answered.
    """
    tally = tally if tally is not None else Attempts()
    tasks: list[asyncio.Task[T]] = []
    try:
        while True:
            if len(tasks) < attempts:
                tasks.append(asyncio.ensure_future(attempt()))
                tally.started = len(tasks)
            wait = retry_after_s if len(tasks) < attempts else None
            done, _ = await asyncio.wait(tasks, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
            if done:
                winners = [t for t in done if not t.cancelled() and t.exception() is None]
                answer = min(winners or done, key=tasks.index)
                tally.answered = tasks.index(answer) + 1
                return answer.result()
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
    tally: Attempts | None = None,
    answered_by: Callable[[bytes], int] | None = None,
) -> T:
    """Send, resend every retry_after_s (up to attempts), return the first accepted reply.

    ``wire`` accumulates [sent, received] bytes including ``overhead`` per datagram
    (``recv_overhead`` for received ones when it differs: raw IPv4 sockets
    receive the IP header). ``make_payload(n)`` makes the n-th (0-based) datagram and
    ``accept`` returns, for a reply it accepts, a result; when every datagram differs
    (ICMP's sequence numbers, DNS query ids) ``answered_by(reply)`` names the 0-based
    datagram an accepted reply answers, else the latest sent is assumed. ``tally`` hears
    each send and which answered.
    """
    tally = tally if tally is not None else Attempts()
    in_overhead = overhead if recv_overhead is None else recv_overhead
    loop = asyncio.get_running_loop()
    sends = 0
    while True:
        if sends < options.attempts:
            data = make_payload(sends) if make_payload is not None else payload
            await loop.sock_sendall(sock, data)
            wire[0] += len(data) + overhead
            sends += 1
            tally.started = sends
        wait = options.retry_after_s if sends < options.attempts else None
        try:
            async with asyncio.timeout(wait):
                while True:
                    reply = await loop.sock_recv(sock, 4096)
                    wire[1] += len(reply) + in_overhead
                    result = accept(reply)
                    if result is not None:
                        index = answered_by(reply) if answered_by is not None else sends - 1
                        tally.answered = min(max(index, 0), sends - 1) + 1
                        return result
        except TimeoutError:
            continue
