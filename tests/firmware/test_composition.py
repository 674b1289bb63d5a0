"""firmware.daemon.compose: which components the daemon builds, in what order, and what
each is handed from another (no slot one factory fills and a later one reads)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import firmware.daemon
from firmware.components.context import BoxContext
from firmware.components.failover import FailoverComponent
from firmware.components.fleet import box_commands
from firmware.components.modem import ModemComponent
from firmware.components.payments import PaymentsComponent
from firmware.config import load_config
from firmware.daemon import Daemon
from firmware.fleet.auth import CommandRefused
from firmware.state import BoxState
from tests.support.daemon import write_config

FLEET = '[fleet]\nmqtt_url = "mqtt://127.0.0.1:9"\n'


@pytest.fixture
async def built(tmp_path: Path) -> AsyncIterator[Daemon]:
    daemon = Daemon(load_config(write_config(tmp_path, routing='backend = "none"',
                                             extra=FLEET)))
    await daemon._build()
    try:
        yield daemon
    finally:
        await daemon._close()


async def test_the_builtin_components_in_start_order(built: Daemon) -> None:
    assert [c.name for c in built.components] == [
        "payments", "modem", "failover", "leds", "fleet"]


async def test_the_ledger_has_nothing_to_supervise_but_follows_the_state(
        built: Daemon) -> None:
    assert "ledger" not in [c.name for c in built.components]
    assert (Path(built.config.device.state_dir) / "outages.sqlite3").exists()


def spy_on(monkeypatch: pytest.MonkeyPatch, name: str) -> dict[str, Any]:
    """Record the keywords `firmware.daemon` hands the factory `name`."""
    real = getattr(firmware.daemon, name)
    seen: dict[str, Any] = {}

    async def spy(context: BoxContext, **handed: Any) -> Any:
        seen.update(handed)
        return await real(context, **handed)

    monkeypatch.setattr(firmware.daemon, name, spy)
    return seen


@pytest.mark.parametrize("dual_sim", [True, False])
async def test_failover_is_handed_the_modems_switch_sim_only_with_dual_sim(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dual_sim: bool) -> None:
    seen = spy_on(monkeypatch, "build_failover")
    lte = f'simulator = "SKT"\ndual_sim = {str(dual_sim).lower()}'
    daemon = Daemon(load_config(write_config(tmp_path, routing='backend = "none"', lte=lte)))
    await daemon._build()
    try:
        modem = next(c for c in daemon.components if isinstance(c, ModemComponent))
        assert any(isinstance(c, FailoverComponent) for c in daemon.components)
        if dual_sim:
            assert seen["switch_sim"] == modem.switch_sim
        else:
            assert seen["switch_sim"] is None
    finally:
        await daemon._close()


async def test_the_fleet_agent_is_handed_the_queue_drain_and_the_reload(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = spy_on(monkeypatch, "build_fleet")
    daemon = Daemon(load_config(write_config(tmp_path, extra=FLEET)))
    await daemon._build()
    try:
        payments = next(c for c in daemon.components if isinstance(c, PaymentsComponent))
        assert seen["drain_queue"] == payments.drain_queue
        assert seen["reload_config"] == daemon.reload
    finally:
        await daemon._close()


@pytest.mark.parametrize("name", ["queue_drain", "config_reload"])
async def test_without_the_capability_a_changing_command_is_unavailable(name: str) -> None:
    """Built alone (no payments, no daemon), the fleet's changing commands are refused."""
    commands = {c.name: c for c in box_commands(BoxState("store-x", "1.0"))}
    with pytest.raises(CommandRefused) as refused:
        await commands[name].run({})
    assert refused.value.code == "unavailable"
