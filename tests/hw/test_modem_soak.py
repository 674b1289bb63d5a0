"""Issue #10 part 6, the short soak in `make test`: one hour of virtual time against the
simulator with quirks injected (URCs inside answers, noise, odd and broken layouts, NR5G
and busy answers) and a reboot every 10 minutes: no reset for a quirk, every reboot
recovered to data up. The 24 h soak is `benchmarks/bench_modem_soak.py`."""

from __future__ import annotations

import pytest

from tests.hw.modem_soak import run_soak

pytestmark = pytest.mark.timeout(240)


async def test_one_hour_soak_with_quirks_and_reboots() -> None:
    result = await run_soak(3600.0, seed=10, reboot_every_s=600.0, quirk_probability=0.3)
    assert result.virtual_s >= 3600.0 and result.ticks == 360
    assert result.reset_reasons == {} and result.resets == 0, result.as_dict()
    assert result.reboots_injected == 6 and result.reboots_seen == 6
    assert result.reboots_recovered == 6 and result.data_up_at_end
    assert result.recovery_ticks_max <= 2  # data up again at the tick that saw the reboot
    # the quirks really were served and really were quirky
    assert result.quirks["raced_urc"] > 50 and result.quirks["odd_answer"] > 50
    assert result.quirks["noise"] > 10 and result.garbage_bytes > 0
    assert result.parse_errors > 10 and result.busy_retries > 0


async def test_a_burst_of_quirks_without_reboots_costs_no_reset() -> None:
    result = await run_soak(10**9, seed=11, reboot_every_s=None, quirk_probability=1.0,
                            max_quirks=300)
    assert result.quirky_answers >= 300 and result.resets == 0, result.as_dict()
    assert result.data_up_at_end and result.reboots_seen == 0
