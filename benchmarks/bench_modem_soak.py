"""The modem soak (issue #10): 24 h of virtual time against the EC25 simulator with quirks
injected at random (URCs inside answers, noise bytes, odd and broken layouts, NR5G and
busy answers) and a reboot every 30 minutes; and a burst of 1,000 quirky answers.

Targets: 0 resets caused by quirks, every reboot recovered (registered, data up again);
a burst of 1,000 quirky answers costs 0 resets. The soak driver is
`tests/hw/modem_soak.py` (its 1 h version runs in `make test`).

Run with `make bench` (or `python -m benchmarks.bench_modem_soak`). Knobs:
`STOREBOX_BENCH_SOAK_HOURS` (24), `STOREBOX_BENCH_SOAK_SEED` (10).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable

import pytest

from benchmarks.report import record
from tests.hw.modem_soak import SoakResult, run_soak

pytestmark = pytest.mark.timeout(1800)

HOURS = float(os.environ.get("STOREBOX_BENCH_SOAK_HOURS", "24"))
SEED = int(os.environ.get("STOREBOX_BENCH_SOAK_SEED", "10"))
BURST = 1000


async def measure_soak(hours: float = HOURS, seed: int = SEED) -> SoakResult:
    return await run_soak(hours * 3600.0, seed=seed, reboot_every_s=1800.0,
                          quirk_probability=0.3)


async def measure_burst(quirks: int = BURST, seed: int = SEED) -> SoakResult:
    return await run_soak(10.0**9, seed=seed + 1, reboot_every_s=None,
                          quirk_probability=1.0, max_quirks=quirks)


def report_soak(soak: SoakResult, burst: SoakResult) -> None:
    record("modem_soak", [
        ("soak virtual hours", round(soak.virtual_s / 3600, 2), "h of virtual time"),
        ("soak wall seconds", round(soak.wall_s, 1), "s on this machine"),
        ("soak polls", soak.ticks, "supervisor ticks (10 s apart)"),
        ("soak AT commands", soak.commands, "sent to the simulator"),
        ("soak quirky answers", soak.quirky_answers,
         ", ".join(f"{k} {v}" for k, v in sorted(soak.quirks.items()))),
        ("soak parse errors", soak.parse_errors, "degraded readings, last good value kept"),
        ("soak busy retries", soak.busy_retries, "+CME 14/515 retried with backoff"),
        ("soak noise bytes", soak.garbage_bytes, "framed as garbage"),
        ("soak reboots injected", soak.reboots_injected, "one every 30 min"),
        ("soak reboots recovered", soak.reboots_recovered, "= injected (target)"),
        ("soak polls to recover", soak.recovery_ticks_max, "max, reboot -> data up"),
        ("soak resets", soak.resets, "0 (target)"),
        ("burst quirky answers", burst.quirky_answers, f">= {BURST}"),
        ("burst resets", burst.resets, "0 (target)"),
    ])


async def test_soak_24h_and_quirk_burst(record_property: Callable[[str, object], None]) -> None:
    soak = await measure_soak()
    burst = await measure_burst()
    report_soak(soak, burst)
    record_property("modem_soak", soak.as_dict())
    record_property("modem_quirk_burst", burst.as_dict())
    assert soak.virtual_s >= HOURS * 3600
    assert soak.resets == 0 and soak.reset_reasons == {}, soak.as_dict()
    assert soak.reboots_recovered == soak.reboots_injected == soak.reboots_seen
    assert soak.data_up_at_end
    assert burst.quirky_answers >= BURST and burst.resets == 0, burst.as_dict()


async def _main() -> int:
    report_soak(await measure_soak(), await measure_burst())
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(_main()))
