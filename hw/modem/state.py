"""`ModemState`: the one modem state, and `ModemStatus`, the view everyone reads of it.

One state, one view. `ModemState` is everything the modem said, as it said it: the
registration per command (`+CEREG`, `+CGREG`, `+CREG`), the operator, signal and data
call readings, the SIM, the radio mode, the reject cause and error report. It is frozen:
`hw.modem.reducer` folds every answer and URC into a new one (URC in -> state out), and
the `Modem` (`hw.modem.modem`) keeps the latest. Nothing else keeps modem state: the
supervisor, the CLI and the daemon read the view.

`ModemStatus` (`hw.modem.status`) is that view, computed here by `view(state)` and never
written by anyone: the consolidated registration (the best of the three commands), the
access technology from wherever it was reported, the data call's addresses only while it
is up, `same_carrier`, and the plain-language `not_connected_reason`. It holds nothing
that is not derived from a `ModemState` (plus the wired carrier's name), so the two
cannot disagree. The daemon's status document (`firmware.state.ModemView`) is in turn a
view of `ModemStatus` with the contract's names and plain strings.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Final

from hw.modem.carriers import same_carrier
from hw.modem.parsers.identity import ModemIdentity, SimState
from hw.modem.parsers.radio import RadioMode
from hw.modem.parsers.registration import AccessTechnology, RegistrationStatus
from hw.modem.reasons import not_connected_reason
from hw.modem.status import (
    DataStatus,
    ModemStatus,
    OperatorInfo,
    RegistrationInfo,
    SignalReading,
)

__all__ = ["NO_REGISTRATION", "REG_ORDER", "ModemState", "view"]

#: Registration sources, best first: EPS (LTE) decides the data path.
REG_ORDER: Final = ("+CEREG", "+CGREG", "+CREG")

#: The unknown registration `registration()` returns when nothing could be read.
NO_REGISTRATION: Final = RegistrationInfo(status=RegistrationStatus.UNKNOWN, area_code=None,
                                          cell_id=None, rat=None, source="none")


@dataclasses.dataclass(frozen=True, slots=True)
class ModemState:
    """What the modem said, folded (`hw.modem.reducer`); None: not known (yet).

    Beyond what the view shows: `registrations` per command, the raw `operator`/`signal`/
    `data` readings, `radio` (`+CFUN`), `cause_type` with `reject_cause`, and
    `data_down_reason` (the network deactivated the call). `needs_refresh`: a SIM was
    inserted (or re-initialised) since the last full refresh. The IMSI is kept only
    masked (`hw.modem.reasons.mask_imsi`)."""

    # the modem: answering, what it is, its radio (`+CFUN`)
    present: bool | None = None
    identity: ModemIdentity | None = None
    vendor: str | None = None
    radio: RadioMode | None = None
    # the SIM
    sim_state: SimState | None = None
    sim_fault: str | None = None
    sim_slot: int | None = None
    iccid: str | None = None
    imsi: str | None = None  # masked (`mask_imsi`): the full IMSI is never kept
    sim_mcc_mnc: str | None = None
    needs_refresh: bool = False
    # the network
    registrations: Mapping[str, RegistrationInfo] = dataclasses.field(default_factory=dict)
    operator: OperatorInfo | None = None
    signal: SignalReading | None = None
    cause_type: int | None = None
    reject_cause: int | None = None
    error_report: str | None = None
    utc_offset_min: int | None = None
    # the data call
    data: DataStatus | None = None
    data_down_reason: str | None = None
    # recovery and bookkeeping
    recovery_step: str | None = None
    resets_total: int = 0
    reboots_seen: int = 0
    last_reset_reason: str | None = None
    parse_errors: int = 0
    updated_at: float | None = None

    def registration(self) -> RegistrationInfo | None:
        """The best of the per-command registrations (registered EPS first)."""
        known = [self.registrations[k] for k in REG_ORDER if k in self.registrations]
        for info in known:
            if info.registered:
                return info
        return known[0] if known else None


def _rat(reg: RegistrationInfo | None, signal: SignalReading | None,
         operator: OperatorInfo | None) -> AccessTechnology | None:
    """The access technology now: registration's, else the signal reading's, else the
    operator's (only meaningful while registered)."""
    candidates = (reg.rat if reg else None, signal.rat if signal else None,
                  operator.rat if operator else None)
    return next((r for r in candidates if r is not None), None)


def _radio_on(state: ModemState, registered: bool | None) -> bool | None:
    if registered:
        return True
    return None if state.radio is None else state.radio.radio_on


def _same_carrier(state: ModemState, wired_carrier: str, mcc_mnc: str | None) -> bool | None:
    """The SIM's carrier (or, without IMSI, the serving network's) is the wired ISP's."""
    code = state.sim_mcc_mnc or mcc_mnc
    return same_carrier(wired_carrier, code) if wired_carrier and code else None


def _reason(state: ModemState, reg: RegistrationInfo | None, data_up: bool,
            radio_on: bool | None) -> str | None:
    return not_connected_reason(
        data_up=data_up, present=state.present, sim_state=state.sim_state,
        sim_fault=state.sim_fault, radio_on=radio_on,
        registration=None if reg is None else reg.status,
        reject_cause=state.reject_cause, cause_type=state.cause_type,
        data_down_reason=state.data_down_reason, error_report=state.error_report)


def view(state: ModemState, wired_carrier: str = "") -> ModemStatus:
    """The `ModemStatus` of `state`; `wired_carrier` (the wired ISP's name) for
    `same_carrier`. Registration, operator and access technology count only while
    registered, the addresses only while the data call is up."""
    st = state
    reg = st.registration()
    registered = None if reg is None else reg.registered
    held = reg if reg is not None and reg.registered else None
    operator = st.operator if registered else None
    signal, data = st.signal, st.data
    mcc_mnc = operator.mcc_mnc if operator else None
    data_up = bool(data and data.up)
    radio_on = _radio_on(st, registered)
    return ModemStatus(
        present=st.present, identity=st.identity, vendor=st.vendor,
        sim_state=st.sim_state, sim_fault=st.sim_fault, sim_slot=st.sim_slot,
        iccid=st.iccid, sim_mcc_mnc=st.sim_mcc_mnc,
        registered=registered,
        registration=None if reg is None else reg.status,
        roaming=None if reg is None else reg.roaming,
        tac=held.area_code if held else None,
        cell_id=held.cell_id if held else None,
        operator=operator.name if operator else None,
        mcc_mnc=mcc_mnc,
        rat=_rat(reg, signal, operator) if registered else None,
        signal_dbm=signal.rssi_dbm if signal else None,
        rsrp_dbm=signal.rsrp_dbm if signal else None,
        rsrq_db=signal.rsrq_db if signal else None,
        sinr_db=signal.sinr_db if signal else None,
        data_up=data_up,
        ip=data.ip if data and data_up else None,
        ipv6=data.ipv6 if data and data_up else None,
        dns=data.dns if data and data_up else (),
        same_carrier=_same_carrier(st, wired_carrier, mcc_mnc),
        recovery_step=st.recovery_step, resets_total=st.resets_total,
        reboots_seen=st.reboots_seen, last_reset_reason=st.last_reset_reason,
        parse_errors=st.parse_errors, imsi=st.imsi,
        radio_on=radio_on,
        reject_cause=None if registered else st.reject_cause,
        error_report=None if data_up else st.error_report,
        utc_offset_min=st.utc_offset_min,
        not_connected_reason=_reason(st, reg, data_up, radio_on),
        updated_at=st.updated_at,
    )
