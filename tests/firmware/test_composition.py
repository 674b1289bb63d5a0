"""firmware.daemon.compose: which components the daemon builds, in what order, and what
each is handed from another (no slot one factory fills and a later one reads)."""

from __future__ import annotations

import ast
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

import firmware.components
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

FLEET = {"mqtt_url": "mqtt://127.0.0.1:9"}


@contextlib.asynccontextmanager
async def composed(tmp_path: Path, **config: dict[str, Any]) -> AsyncIterator[Daemon]:
    """A daemon with its components built (not running): what `compose` made of `config`
    (`tests.support.daemon.write_config` keywords)."""
    routing = {"backend": "none", "failover": True}
    daemon = Daemon(load_config(write_config(tmp_path, routing=routing, **config)))
    await daemon._build()
    try:
        yield daemon
    finally:
        await daemon._close()


@pytest.fixture
async def built(tmp_path: Path) -> AsyncIterator[Daemon]:
    async with composed(tmp_path, fleet=FLEET) as daemon:
        yield daemon


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
    lte = {"simulator": "SKT", "dual_sim": dual_sim}
    async with composed(tmp_path, lte=lte) as daemon:
        modem = next(c for c in daemon.components if isinstance(c, ModemComponent))
        assert any(isinstance(c, FailoverComponent) for c in daemon.components)
        if dual_sim:
            assert seen["switch_sim"] == modem.switch_sim
        else:
            assert seen["switch_sim"] is None


@pytest.mark.parametrize(("quiet", "wired_quiet"), [(None, 0.4), (0.6, 0.6), (0, None)])
async def test_the_wired_lines_quiet_pacing_comes_from_probes_quiet_interval_s(
        tmp_path: Path, quiet: float | None, wired_quiet: float | None) -> None:
    probes = {} if quiet is None else {"quiet_interval_s": quiet}
    async with composed(tmp_path, probes=probes) as daemon:
        component = next(c for c in daemon.components if isinstance(c, FailoverComponent))
        engine = component._build(component)
        assert engine._configs["wired"].quiet_interval_s == wired_quiet
        assert engine._configs["lte"].quiet_interval_s is None  # LTE: the rounds test


async def test_the_fleet_agent_is_handed_the_queue_drain_and_the_reload(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = spy_on(monkeypatch, "build_fleet")
    async with composed(tmp_path, fleet=FLEET) as daemon:
        payments = next(c for c in daemon.components if isinstance(c, PaymentsComponent))
        assert seen["drain_queue"] == payments.drain_queue
        assert seen["reload_config"] == daemon.reload


@pytest.mark.parametrize("name", ["queue_drain", "config_reload"])
async def test_without_the_capability_a_changing_command_is_unavailable(name: str) -> None:
    """Built alone (no payments, no daemon), the fleet's changing commands are refused."""
    commands = {c.name: c for c in box_commands(BoxState("store-x", "1.0"))}
    with pytest.raises(CommandRefused) as refused:
        await commands[name].run({})
    assert refused.value.code == "unavailable"


def imported(node: ast.AST) -> list[str]:
    """The modules an import statement may bind (`from a import b`: `a` and `a.b`)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if isinstance(node, ast.ImportFrom) and node.module:
        return [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    return []


def test_no_component_imports_the_daemon() -> None:
    """The daemon composes the components; a component importing it back is the cycle
    `firmware.components` exists to remove (function-level imports count)."""
    folder = Path(firmware.components.__file__).parent
    importers = []
    for path in sorted(folder.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if any(name == "firmware.daemon" for name in imported(node)):
                importers.append(f"{path.name}:{node.lineno}")
    assert importers == []
