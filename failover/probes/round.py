"""A probe with its deadline, and a round: every target probed at once through one
uplink, ok when ``quorum`` answered. Neither raises for network failures."""

from __future__ import annotations

import asyncio
import logging
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp

from failover.errors import ProbeConfigError
from failover.probes.accounting import ByteCounter, default_counter
from failover.probes.failures import ProbeFailed, describe_failure
from failover.probes.kinds import PROBES
from failover.probes.options import ProbeOptions
from failover.probes.retry import Attempts
from failover.probes.sockets import check_interface
from failover.targets import ProbeTarget

__all__ = ["ProbeResult", "RoundResult", "probe", "probe_round"]

log = logging.getLogger("failover.probes")


@dataclass(frozen=True, slots=True)
class ProbeResult:
    target: ProbeTarget
    interface: str
    ok: bool
    latency_ms: float | None
    error: str | None
    bytes_sent: int = 0
    bytes_received: int = 0
    #: round trips of the probe's own attempts (`failover.probes.retry`): those up to the
    #: one that answered, of which all but it were lost; all started when none did.
    #: None (a result not made by `probe`): one exchange, lost when the probe failed.
    exchanges: int | None = None
    exchanges_lost: int | None = None

    def exchange_loss(self) -> tuple[int, int]:
        """(lost, exchanges) of this probe's round trips (field docs)."""
        if self.exchanges is None or self.exchanges_lost is None:
            return (0 if self.ok else 1), 1
        return self.exchanges_lost, self.exchanges


@dataclass(frozen=True, slots=True)
class RoundResult:
    """All probes of one round on one interface; ``ok`` when ``quorum`` succeeded."""

    interface: str
    quorum: int
    results: tuple[ProbeResult, ...]

    @property
    def attempted(self) -> int:
        return len(self.results)

    @property
    def succeeded(self) -> int:
        return sum(1 for r in self.results if r.ok)

    @property
    def ok(self) -> bool:
        return self.succeeded >= self.quorum

    @property
    def loss(self) -> float:
        """Fraction of probes that failed, 0.0..1.0."""
        return 1.0 - self.succeeded / self.attempted if self.results else 1.0

    @property
    def median_latency_ms(self) -> float | None:
        lat = [r.latency_ms for r in self.results if r.ok and r.latency_ms is not None]
        return statistics.median(lat) if lat else None

    @property
    def bytes_sent(self) -> int:
        return sum(r.bytes_sent for r in self.results)

    @property
    def bytes_received(self) -> int:
        return sum(r.bytes_received for r in self.results)

    @property
    def errors(self) -> dict[str, str]:
        return {r.target.text: r.error for r in self.results if r.error is not None}


def _check_timeout(timeout_s: float) -> None:
    if not (isinstance(timeout_s, int | float) and 0 < timeout_s <= 60):
        raise ProbeConfigError("timeout_s", timeout_s, "must be > 0 and <= 60 seconds")


async def probe(
    target: ProbeTarget,
    interface: str,
    timeout_s: float,
    *,
    options: ProbeOptions | None = None,
    counter: ByteCounter | None = None,
) -> ProbeResult:
    """Run one probe through ``interface`` with a hard deadline; never raises for
    network failures."""
    check_interface(interface)
    _check_timeout(timeout_s)
    opts = options if options is not None else ProbeOptions()
    wire = [0, 0]
    tally = Attempts()
    loop = asyncio.get_running_loop()
    started = loop.time()
    error: str | None = None
    try:
        async with asyncio.timeout(timeout_s):
            await PROBES[target.kind](target, interface, opts, wire, tally)
    except TimeoutError:
        error = f"no answer within {timeout_s:g}s"
    except (OSError, aiohttp.ClientError, ProbeFailed) as exc:
        error = describe_failure(exc, interface)
    except ProbeConfigError:
        raise
    except Exception as exc:  # a bug must not take the monitor down; make it loud
        log.exception("probe %s via %s crashed", target.text, interface)
        error = f"internal error: {type(exc).__name__}: {exc}"
    elapsed_ms = (loop.time() - started) * 1000.0
    (counter if counter is not None else default_counter()).add(interface, wire[0], wire[1])
    lost, exchanges = tally.lost()
    return ProbeResult(
        target=target,
        interface=interface,
        ok=error is None,
        latency_ms=elapsed_ms if error is None else None,
        error=error,
        bytes_sent=wire[0],
        bytes_received=wire[1],
        exchanges=exchanges,
        exchanges_lost=lost,
    )


async def probe_round(
    targets: Sequence[ProbeTarget],
    interface: str,
    timeout_s: float,
    quorum: int,
    *,
    options: ProbeOptions | None = None,
    counter: ByteCounter | None = None,
) -> RoundResult:
    """Probe all ``targets`` concurrently through ``interface``; ok when >= quorum succeed."""
    if not targets:
        raise ProbeConfigError("targets", list(targets), "at least one target is needed")
    if not 1 <= quorum <= len(targets):
        raise ProbeConfigError("quorum", quorum, f"must be 1..{len(targets)} (number of targets)")
    check_interface(interface)
    _check_timeout(timeout_s)
    results = await asyncio.gather(
        *(probe(t, interface, timeout_s, options=options, counter=counter) for t in targets)
    )
    return RoundResult(interface=interface, quorum=quorum, results=tuple(results))
