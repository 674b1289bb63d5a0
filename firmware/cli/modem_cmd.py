"""`storebox modem info|at --port PORT`: talk AT to a modem directly, for a technician.

The daemon opens the AT port exclusively while it runs; these commands open it the
same way, so a second user is told the port is taken instead of interleaving commands.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import errno
from typing import Any

from firmware.cli.status_view import _RULE, _Layout
from firmware.errors import FirmwareError
from hw.modem.carriers import carrier_for
from hw.modem.errors import CommandError, CommandTimeout, ModemError, PortClosed, PortOpenError
from hw.modem.modem import Modem
from hw.modem.ports import resolve_port
from hw.modem.status import ModemStatus

INFO_TIMEOUT_S = 60.0


class ModemUnavailable(FirmwareError):
    """The modem could not be asked; `reason` is the one line the technician sees."""

    def __init__(self, port: str, reason: str) -> None:
        self.port = port
        self.reason = reason
        super().__init__(f"{port}: {reason}")


def _port_problem(port: str, exc: ModemError) -> ModemUnavailable:
    text = str(exc)
    if isinstance(exc, PortOpenError) and ("exclusively lock" in text
                                           or f"Errno {errno.EAGAIN}" in text
                                           or "Resource temporarily unavailable" in text):
        return ModemUnavailable(port, "the port is in use: the storebox daemon owns it while "
                                      "it runs (see `storebox status`, or stop the daemon)")
    if isinstance(exc, PortOpenError):
        return ModemUnavailable(port, f"cannot open the port ({exc.reason})")
    if isinstance(exc, CommandTimeout):
        return ModemUnavailable(port, f"no answer to {exc.command} within {exc.timeout_s:g}s "
                                      "(no modem on this port, or it is not responding)")
    if isinstance(exc, PortClosed):
        return ModemUnavailable(port, f"the port closed ({exc.reason})")
    return ModemUnavailable(port, text)


async def _open(port: str, baudrate: int, timeout_s: float) -> Modem:
    try:
        port = resolve_port(port)  # "auto": the AT port found by USB ids
        return await Modem.open(port, baudrate=baudrate,
                                channel_options={"serial_options": {"exclusive": True},
                                                 "default_timeout": timeout_s})
    except ModemError as exc:
        raise _port_problem(port, exc) from exc


async def modem_info(port: str, baudrate: int = 115200, timeout_s: float = 5.0,
                     wired_carrier: str = "") -> ModemStatus:
    modem = await _open(port, baudrate, timeout_s)
    try:
        async with asyncio.timeout(INFO_TIMEOUT_S):
            await modem.initialise()
            await modem.refresh()
        return modem.snapshot(wired_carrier or None)
    except ModemError as exc:
        raise _port_problem(port, exc) from exc
    except TimeoutError as exc:
        raise ModemUnavailable(port, f"no complete answer within {INFO_TIMEOUT_S:g}s") from exc
    finally:
        await modem.close()


async def modem_at(port: str, command: str, baudrate: int = 115200,
                   timeout_s: float = 10.0) -> tuple[list[str], str]:
    """Send one raw command; return its lines and the final result code."""
    modem = await _open(port, baudrate, timeout_s)
    try:
        response = await modem.channel.command(command, timeout=timeout_s)
        return list(response.lines), response.final
    except CommandError as exc:
        return [], exc.final
    except ModemError as exc:
        raise _port_problem(port, exc) from exc
    finally:
        await modem.close()


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.name.lower()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in dataclasses.asdict(value).items()}
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def status_json(port: str, snap: ModemStatus) -> dict[str, Any]:
    doc: dict[str, Any] = {"port": port}
    for f in dataclasses.fields(snap):
        doc[f.name] = _plain(getattr(snap, f.name))
    return doc


def _v(value: Any, suffix: str = "") -> str:
    if value is None:
        return "--"
    if isinstance(value, enum.Enum):
        return value.name.lower().replace("_", " ")
    if isinstance(value, float):
        return f"{value:.1f}{suffix}"
    return f"{value}{suffix}"


def render_modem(port: str, snap: ModemStatus, colour: bool = False) -> str:
    """The modem in the layout of `mmcli -m 0`: sections, right-aligned labels."""
    layout = _Layout(colour)
    ident = snap.identity
    layout.section("General", [("port", port), ("vendor profile", _v(snap.vendor))])
    layout.section("Hardware", [
        ("manufacturer", _v(ident.manufacturer if ident else None)),
        ("model", _v(ident.model if ident else None)),
        ("firmware revision", _v(ident.revision if ident else None)),
        ("equipment id", _v(ident.imei if ident else None)),
    ])
    home = carrier_for(snap.sim_mcc_mnc) if snap.sim_mcc_mnc else None
    sim_rows = [("state", _v(snap.sim_state)), ("slot", _v(snap.sim_slot)),
                ("iccid", _v(snap.iccid)),
                ("home network", _v(snap.sim_mcc_mnc) + (f" ({home.name})" if home else "")),
                ("imsi", _v(snap.imsi))]
    if snap.sim_fault:
        sim_rows.append(("fault", layout.paint("failed") + f" {snap.sim_fault}"))
    layout.section("SIM", sim_rows)
    registered = "unknown" if snap.registered is None else ("yes" if snap.registered else "no")
    rows = [
        ("registration", layout.paint(registered) + f" ({_v(snap.registration)})"),
        ("operator name", _v(snap.operator)),
        ("operator id", _v(snap.mcc_mnc)),
        ("access tech", _v(snap.rat)),
        ("tracking area", f"{snap.tac:X}" if snap.tac is not None else "--"),
        ("cell id", f"{snap.cell_id:X}" if snap.cell_id is not None else "--"),
    ]
    if snap.reject_cause is not None:
        rows.append(("reject cause", f"EMM #{snap.reject_cause}"))
    if snap.radio_on is False:
        rows.append(("radio", layout.paint("off")))
    if snap.same_carrier:
        rows.append(("carrier diversity", layout.paint("none")
                     + ": the SIM is on the wired line's carrier; one outage takes both"))
    layout.section("3GPP", rows)
    layout.section("Signal", [("rssi", _v(snap.signal_dbm, " dBm")),
                              ("rsrp", _v(snap.rsrp_dbm, " dBm")),
                              ("rsrq", _v(snap.rsrq_db, " dB")),
                              ("s/n", _v(snap.sinr_db, " dB"))])
    connected = None if snap.data_up is None else ("yes" if snap.data_up else "no")
    bearer = [("connected", _v(connected)), ("address", _v(snap.ip))]
    if snap.dns:
        bearer.append(("dns", ", ".join(snap.dns)))
    if snap.not_connected_reason:
        bearer.append(("why not", snap.not_connected_reason))
    layout.section("Bearer", bearer)
    layout.lines.append(_RULE)
    return "\n".join(layout.lines)
