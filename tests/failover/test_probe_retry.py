"""Which attempt answered (failover/probes/retry.py): the round trips a probe's retries
lost, and a late answer not taken for a lost one. In-process: coroutines and a UDP
socketpair; the same through real namespaces is in test_probes.py."""

from __future__ import annotations

import asyncio
import socket

import pytest

from failover.probes.options import ProbeOptions
from failover.probes.retry import Attempts, hedged, udp_exchange


async def test_hedged_names_the_attempt_that_answered() -> None:
    started: list[int] = []

    async def attempt() -> str:
        started.append(len(started) + 1)
        if len(started) < 3:  # the first two are lost: never answered
            await asyncio.Event().wait()
        return "answer"

    tally = Attempts()
    assert await hedged(attempt, 4, 0.01, tally) == "answer"
    assert (tally.started, tally.answered) == (3, 3)
    assert tally.lost() == (2, 3)


async def test_hedged_a_late_first_answer_is_not_a_loss() -> None:
    """A slow line: every attempt is answered after 20 retry intervals; the first one
    started answers first, so nothing was lost although more were started."""
    async def attempt() -> str:
        await asyncio.sleep(0.2)
        return "slow answer"

    tally = Attempts()
    assert await hedged(attempt, 4, 0.01, tally) == "slow answer"
    assert tally.started >= 2 and tally.answered == 1
    assert tally.lost() == (0, 1)


async def test_hedged_an_error_is_an_answer() -> None:
    async def attempt() -> None:
        raise ConnectionRefusedError

    tally = Attempts()
    with pytest.raises(ConnectionRefusedError):
        await hedged(attempt, 4, 0.01, tally)
    assert tally.lost() == (0, 1)


def test_nothing_answered_lost_every_attempt_started() -> None:
    assert Attempts(started=4).lost() == (4, 4)
    assert Attempts(started=2).lost() == (2, 2)
    assert Attempts().lost() == (1, 1)  # could not even send: its one exchange is lost


async def _udp_exchange(reply_to: int, delay_s: float, attempts: int = 4) -> Attempts:
    """A peer that answers only the `reply_to`-th (0-based) datagram, after `delay_s`."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    ours.setblocking(False)
    theirs.setblocking(False)
    loop = asyncio.get_running_loop()

    async def peer() -> None:
        for n in range(attempts):
            data = await loop.sock_recv(theirs, 64)
            if n == reply_to:
                await asyncio.sleep(delay_s)
                await loop.sock_sendall(theirs, b"re:" + data)
                return

    tally = Attempts()
    server = asyncio.create_task(peer())
    try:
        answer = await udp_exchange(
            ours, b"", lambda data: data if data.startswith(b"re:") else None,
            ProbeOptions(attempts=attempts, retry_after_s=0.01), [0, 0], 0,
            make_payload=lambda n: bytes([n]), tally=tally, answered_by=lambda data: data[3])
        assert answer == b"re:" + bytes([reply_to])
    finally:
        await server
        ours.close()
        theirs.close()
    return tally


async def test_udp_exchange_names_the_datagram_answered() -> None:
    tally = await _udp_exchange(reply_to=2, delay_s=0.0)
    assert tally.lost() == (2, 3)


async def test_udp_exchange_a_late_answer_to_the_first_is_not_a_loss() -> None:
    tally = await _udp_exchange(reply_to=0, delay_s=0.2)
    assert tally.started >= 2
    assert tally.lost() == (0, 1)
