"""Fault injection: what the simulated gateway does wrong (`Faults`), and the
`FaultInjector` that applies them to each request before and after it is processed
(see the package docstring for the order)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any, Literal

from aiohttp import web

from lab.gateway_sim.knobs import known_changes
from lab.gateway_sim.ledger import Ledger
from lab.gateway_sim.wire import error

_DownMode = Literal["503", "refuse"]


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class Faults:
    """What the simulator does wrong. The default injects nothing."""

    latency_s: float = 0.0
    jitter_s: float = 0.0
    fail_5xx: float = 0.0
    fail_5xx_status: int = 503
    fail_429: float = 0.0
    retry_after_s: int = 1
    retry_after_http_date: bool = False
    drop_answers: float = 0.0
    down: bool = False
    down_mode: _DownMode = "503"

    def __post_init__(self) -> None:
        for name in ("latency_s", "jitter_s", "fail_5xx", "fail_429", "drop_answers"):
            value = getattr(self, name)
            if not _is_number(value) or value < 0:
                raise ValueError(f"{name} must be a number >= 0")
        for name in ("fail_5xx", "fail_429", "drop_answers"):
            if getattr(self, name) > 1:
                raise ValueError(f"{name} is a fraction and must be <= 1")
        if self.fail_5xx + self.fail_429 > 1:
            raise ValueError("fail_5xx + fail_429 must be <= 1")
        if (not isinstance(self.fail_5xx_status, int) or isinstance(self.fail_5xx_status, bool)
                or not 500 <= self.fail_5xx_status <= 599):
            raise ValueError("fail_5xx_status must be an integer 500..599")
        if (not isinstance(self.retry_after_s, int) or isinstance(self.retry_after_s, bool)
                or self.retry_after_s < 0):
            raise ValueError("retry_after_s must be an integer >= 0")
        for name in ("retry_after_http_date", "down"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a boolean")
        if self.down_mode not in ("503", "refuse"):
            raise ValueError('down_mode must be "503" or "refuse"')

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def merged(self, changes: Mapping[str, Any]) -> Faults:
        """A copy with `changes` applied; unknown names or bad values raise ValueError."""
        values = known_changes(self, changes, "fault")
        # JSON has no int/float distinction: accept 2.0 for an integer knob.
        for name in ("fail_5xx_status", "retry_after_s"):
            value = values.get(name)
            if isinstance(value, float) and value.is_integer():
                values[name] = int(value)
        return dataclasses.replace(self, **values)



class Stopping(Exception):
    """The simulator is shutting down while a request was being processed."""


class FaultInjector:
    """Applies the `faults` in force (replaced by the simulator's `set_faults`), drawing
    from the simulator's one `rng` and counting what it injects in the `ledger`."""

    def __init__(self, faults: Faults, rng: random.Random, ledger: Ledger) -> None:
        self.faults = faults
        self._rng = rng
        self._ledger = ledger

    def front_door(self, request: web.Request) -> web.Response | None:
        """Faults answered before anything is looked at; None to go on."""
        totals = self._ledger.totals
        totals["requests"] += 1
        faults = self.faults
        if faults.down:
            if faults.down_mode == "refuse":
                totals["refused"] += 1
                return reset_connection(request)
            totals["down_503"] += 1
            return error(503, "unavailable", "the gateway is down")
        if faults.fail_429 or faults.fail_5xx:
            draw = self._rng.random()
            if draw < faults.fail_429:
                totals["injected_429"] += 1
                return error(429, "rate_limited", "too many requests",
                             headers={"Retry-After": self._retry_after()})
            if draw < faults.fail_429 + faults.fail_5xx:
                totals["injected_5xx"] += 1
                return error(faults.fail_5xx_status, "injected", "injected server error")
        return None

    def _retry_after(self) -> str:
        faults = self.faults
        if faults.retry_after_http_date:
            when = datetime.now(UTC) + timedelta(seconds=faults.retry_after_s)
            return format_datetime(when, usegmt=True)
        return str(faults.retry_after_s)

    async def delay(self, stopping: asyncio.Event) -> None:
        """The time a request spends being processed; `Stopping` once `stopping` is set."""
        faults = self.faults
        delay = faults.latency_s + (self._rng.uniform(0, faults.jitter_s)
                                    if faults.jitter_s else 0.0)
        if delay > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await stopping.wait()
        if stopping.is_set():
            raise Stopping

    def drop_answer(self) -> bool:
        """Whether to lose this answer (`drop_answers`): one draw when the fault is set."""
        drop = self.faults.drop_answers
        return bool(drop) and self._rng.random() < drop


def reset_connection(request: web.Request) -> web.Response:
    """Reset the connection (RST) so the client gets no answer at all. aiohttp then
    fails to write the returned response and treats it as a client disconnection."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    return web.Response(status=500)
