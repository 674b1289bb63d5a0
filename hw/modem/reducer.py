"""The modem state reducer: an answer or a URC in, a new `ModemState` out. Pure: no I/O,
no clock, no task (it logs what a person should hear of, nothing more).

URCs (`reduce_urc`). `+CREG/+CGREG/+CEREG` (registration, with TAC/cell/AcT once
`initialise()` set `=2`; the EMM reject cause at `<n>` = 3), `+CPIN` (SIM state), `+QIND`
(Quectel csq; SIM/PB done and the rest are informational), `+QNETDEVSTATUS` / `+CGEV` /
`+QIURC: "pdpdeact"` (data call; a network deactivation is remembered as the reason it
is down), `+CFUN` (radio), `+QSIMSTAT` / `+QUSIM` (SIM hot swap: a pulled SIM is
`NOT_INSERTED` at once, an inserted one sets `needs_refresh`), `+CTZE` (the network's time
zone), `RDY` (the modem rebooted: what it said before is forgotten) and `POWERED DOWN`.

Answers. The `Modem` folds what its commands read through the same functions
(`with_registration`, `with_sim_state`) or, for a plain reading, `dataclasses.replace`.

Tested as a table of real modem lines (`tests/hw/test_reducer.py`), like ModemManager's
parser tests: the state before, the line, the state after.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Final, NamedTuple

from hw.modem.parsers.clock import parse_ctze
from hw.modem.parsers.identity import SimState, parse_cpin
from hw.modem.parsers.pdp import PacketEvent, parse_cgev
from hw.modem.parsers.quectel import parse_qiurc, parse_qsimstat, parse_qusim
from hw.modem.parsers.radio import parse_cfun
from hw.modem.parsers.registration import Registration, parse_registration
from hw.modem.parsers.signal import parse_csq
from hw.modem.state import ModemState
from hw.modem.status import DataStatus, RegistrationInfo, SignalReading

__all__ = [
    "NETWORK_DEACTIVATED",
    "SIM_FAULTS",
    "SIM_TRANSIENT",
    "URC_PREFIXES",
    "UrcContext",
    "boot_settled_by",
    "data_down",
    "network_cleared",
    "rebooted",
    "reduce_urc",
    "sim_presence",
    "with_registration",
    "with_sim_state",
]

log = logging.getLogger(__name__)

#: URCs the modem follows.
URC_PREFIXES: Final = (
    "RDY",
    "POWERED DOWN",
    "NORMAL POWER DOWN",
    "+CREG:",
    "+CGREG:",
    "+CEREG:",
    "+CPIN:",
    "+QIND:",
    "+QNETDEVSTATUS:",
    "+CGEV:",
    "+CFUN:",
    "PB DONE",
    "SMS DONE",
    "+QSIMSTAT:",
    "+QUSIM:",
    "+QIURC:",
    "+CTZE:",
)

#: +CPIN states that need a person (no PIN is ever sent in them).
SIM_FAULTS: Final[Mapping[SimState, str]] = {
    SimState.SIM_PUK: "puk_required",
    **dict.fromkeys((SimState.SIM_PUK2, SimState.SIM_PIN2, SimState.PH_SIM_PIN,
                     SimState.PH_FSIM_PIN, SimState.PH_FSIM_PUK, SimState.PH_NET_PIN,
                     SimState.PH_NET_PUK, SimState.PH_NETSUB_PIN, SimState.PH_NETSUB_PUK,
                     SimState.PH_SP_PIN, SimState.PH_SP_PUK, SimState.PH_CORP_PIN,
                     SimState.PH_CORP_PUK), "locked"),
    SimState.FAILURE: "failure",
    SimState.WRONG: "failure",
}

#: +CPIN states that pass by themselves (SIM initialising).
SIM_TRANSIENT: Final = frozenset({SimState.NOT_READY, SimState.BUSY})

#: Why the data call went down, when the modem said so (shown as a reason).
NETWORK_DEACTIVATED: Final = "network_deactivated"


class UrcContext(NamedTuple):
    """What a URC is read against: the data call's context id (`Modem.cid`), and whether
    the modem is still booting (its `+QUSIM: 1` is then part of the boot, not a swap)."""

    cid: int = 1
    booting: bool = False


def boot_settled_by(line: str) -> bool:
    """A boot URC after which the modem takes commands: `PB DONE` (Quectel `+QIND: PB
    DONE`, SIMCom `PB DONE`) or a SIM that will not get there (`+CPIN:` other than
    READY: no SIM, PIN-locked)."""
    upper = line.upper()
    if upper.endswith("PB DONE"):
        return True
    return upper.startswith("+CPIN:") and upper.split(":", 1)[1].strip() != "READY"


# -- transitions -----------------------------------------------------------------------
def network_cleared(state: ModemState) -> ModemState:
    """Registration, operator, signal, data call and reject cause forgotten (radio off,
    SIM swapped, rebooted)."""
    return dataclasses.replace(state, registrations={}, operator=None, signal=None,
                               data=None, cause_type=None, reject_cause=None)


def data_down(state: ModemState, reason: str | None) -> ModemState:
    """The data call went down; `reason` is why, when the modem said so."""
    data = state.data
    if data is not None and data.up:
        data = dataclasses.replace(data, up=False)
    return dataclasses.replace(state, data=data, data_down_reason=reason)


def rebooted(state: ModemState) -> ModemState:
    """`RDY`: the modem answers again but has forgotten its SIM, radio and network."""
    return dataclasses.replace(
        network_cleared(state), reboots_seen=state.reboots_seen + 1, present=True,
        sim_state=None, radio=None, error_report=None, data_down_reason=None)


def _reg_info(reg: Registration) -> RegistrationInfo:
    return RegistrationInfo(status=reg.status, area_code=reg.area_code, cell_id=reg.cell_id,
                            rat=reg.act, source=reg.command)


def with_registration(state: ModemState, reg: Registration) -> ModemState:
    """A `+CREG/+CGREG/+CEREG` reading (answer or URC). Registered clears the reject
    cause (from EPS, or when there was none); a reject cause is kept; losing the best
    registration forgets the operator."""
    before = state.registration()
    changes: dict[str, object] = {"registrations": {**state.registrations,
                                                    reg.command: _reg_info(reg)}}
    if reg.status.registered:
        if reg.command == "+CEREG" or state.reject_cause is None:
            changes.update(cause_type=None, reject_cause=None, error_report=None)
    elif reg.reject_cause is not None:
        if reg.reject_cause != state.reject_cause:
            log.warning("modem: registration rejected, cause %s (type %s) in %s",
                        reg.reject_cause, reg.cause_type, reg.command)
        changes.update(cause_type=reg.cause_type, reject_cause=reg.reject_cause)
    after_state = dataclasses.replace(state, **changes)  # type: ignore[arg-type]
    after = after_state.registration()
    if before is not None and before.registered and after is not None \
            and not after.registered:
        log.warning("modem lost registration: %s (%s)", after.status.value, after.source)
        after_state = dataclasses.replace(after_state, operator=None)
    return after_state


def with_sim_state(state: ModemState, sim_state: SimState) -> ModemState:
    """A `+CPIN` state (answer or URC): a SIM leaving READY takes the data call down; a
    fault state records its fault, READY clears it."""
    if sim_state is SimState.NOT_READY and state.sim_state is SimState.NOT_INSERTED:
        return state  # "+CPIN: NOT READY" after "+QSIMSTAT: 1,0": still no SIM
    data = state.data
    if sim_state is not state.sim_state and sim_state is not SimState.READY and data:
        data = dataclasses.replace(data, up=False)
    fault = SIM_FAULTS.get(sim_state)
    if fault is None and sim_state is not SimState.READY:
        fault = state.sim_fault
    return dataclasses.replace(state, sim_state=sim_state, sim_fault=fault, data=data)


def sim_presence(state: ModemState, inserted: bool | None) -> ModemState:
    """SIM hot swap (`+QSIMSTAT: 1,<inserted>`, `+QUSIM: 1` outside a boot): a removed
    SIM is `NOT_INSERTED` at once; an inserted one is read by the next full refresh
    (`needs_refresh`), PIN rules and all."""
    if inserted is False:
        log.warning("modem: SIM removed")
        return dataclasses.replace(network_cleared(state), sim_state=SimState.NOT_INSERTED,
                                   sim_fault=None, iccid=None, sim_mcc_mnc=None, imsi=None)
    if inserted:
        log.info("modem: SIM inserted or re-initialised; reading it again")
        sim_state = None if state.sim_state is SimState.NOT_INSERTED else state.sim_state
        return dataclasses.replace(state, sim_state=sim_state, needs_refresh=True)
    return state


# -- URCs ------------------------------------------------------------------------------
def _on_qind(state: ModemState, line: str, ctx: UrcContext) -> ModemState:
    body = line.split(":", 1)[1].strip()
    fields = [f.strip().strip('"') for f in body.split(",")]
    kind = fields[0].lower()
    if kind == "csq" and len(fields) >= 3:
        csq = parse_csq(f"+CSQ: {fields[1]},{fields[2]}")
        old = state.signal
        return dataclasses.replace(state, signal=SignalReading(
            rssi_dbm=csq.rssi_dbm, rsrp_dbm=old.rsrp_dbm if old else None,
            rsrq_db=old.rsrq_db if old else None, sinr_db=old.sinr_db if old else None,
            rat=old.rat if old else None, source="+QIND csq"))
    # "SMS DONE" / "PB DONE" (SIM initialised), "act", "FOTA"...: informational
    return state


def _on_netdev(state: ModemState, line: str, ctx: UrcContext) -> ModemState:
    up = line.split(":", 1)[1].strip() == "1"
    data = state.data
    if data is None:
        return dataclasses.replace(state, data=DataStatus(up=up, cid=ctx.cid, ip=None,
                                                          ipv6=None, method="ecm"))
    return dataclasses.replace(state, data=dataclasses.replace(data, up=up))


def _on_cgev(state: ModemState, line: str, ctx: UrcContext) -> ModemState:
    event = parse_cgev(line)
    data = state.data
    if data is None or (event.cid is not None and event.cid != data.cid):
        return state
    if event.kind in (PacketEvent.NW_DEACT, PacketEvent.NW_DETACH):
        log.warning("modem: the network deactivated the data connection (%s)", line)
        return data_down(state, NETWORK_DEACTIVATED)
    if event.kind in (PacketEvent.ME_DEACT, PacketEvent.ME_DETACH):
        return data_down(state, None)
    return state


def _on_qiurc(state: ModemState, line: str, ctx: UrcContext) -> ModemState:
    urc = parse_qiurc(line)
    if urc.kind != "pdpdeact":
        return state
    data = state.data
    if data is not None and urc.context_id not in (None, data.cid):
        return state
    log.warning("modem: the network deactivated PDP context %s", urc.context_id)
    return data_down(state, NETWORK_DEACTIVATED)


def _on_cfun(state: ModemState, line: str, ctx: UrcContext) -> ModemState:
    mode = parse_cfun(line)
    if not mode.radio_on:
        state = network_cleared(state)
    return dataclasses.replace(state, radio=mode)


def _on_qusim(state: ModemState, line: str, ctx: UrcContext) -> ModemState:
    parse_qusim(line)
    return state if ctx.booting else sim_presence(state, True)  # outside a boot: a swap


def _on_ctze(state: ModemState, line: str, ctx: UrcContext) -> ModemState:
    offset = parse_ctze(line).utc_offset
    return dataclasses.replace(state, utc_offset_min=int(offset.total_seconds() // 60))


def _powered_down(state: ModemState, line: str, ctx: UrcContext) -> ModemState:
    return dataclasses.replace(network_cleared(state), present=False)


_Handler = Callable[[ModemState, str, UrcContext], ModemState]

#: The context of a URC on context 1 outside a boot.
_OUTSIDE_BOOT: Final = UrcContext()

#: URC prefix -> transition (the first that matches).
_HANDLERS: Final[tuple[tuple[str | tuple[str, ...], _Handler], ...]] = (
    (("POWERED DOWN", "NORMAL POWER DOWN"), _powered_down),
    (("+CREG:", "+CGREG:", "+CEREG:"),
     lambda st, line, ctx: with_registration(st, parse_registration(line))),
    ("+CPIN:", lambda st, line, ctx: with_sim_state(st, parse_cpin(line))),
    ("+QIND:", _on_qind),
    ("+QNETDEVSTATUS:", _on_netdev),
    ("+CGEV:", _on_cgev),
    ("+CFUN:", _on_cfun),
    ("+QSIMSTAT:", lambda st, line, ctx: sim_presence(st, parse_qsimstat(line).inserted)),
    ("+QUSIM:", _on_qusim),
    ("+QIURC:", _on_qiurc),
    ("+CTZE:", _on_ctze),
)


def reduce_urc(state: ModemState, line: str, ctx: UrcContext = _OUTSIDE_BOOT) -> ModemState | None:
    """The state after the URC `line`; None when the state does not follow `line` (`PB
    DONE`, `SMS DONE`, anything else). A URC that does not parse raises `ParseError` (or
    `ValueError`); the caller keeps the state it had."""
    if line == "RDY":
        return rebooted(state)
    for prefix, handler in _HANDLERS:
        if line.startswith(prefix):
            return handler(state, line, ctx)
    return None
