"""Why LTE is not connected, in plain language. Pure: no I/O, no state.

`emm_cause(code)` names a 3GPP TS 24.301 EMM cause (the `<reject_cause>` of `+CEREG` at
`<n>` = 3 with `<cause_type>` 0, annex A / clause 9.9.3.9) and says what it means for a
shop owner; `not_connected_reason(...)` picks the one reason the status shows when the
data call is not up, most fundamental first (no modem, no SIM, SIM locked, radio off,
rejected, no coverage, data call down).

The texts are for a person in a shop, not for an engineer: "SIM rejected by the network:
plan expired?" rather than "EMM cause #7". The cause number stays in the status beside
them (`reject_cause`) for the engineer.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from hw.modem.parsers.identity import SimState
from hw.modem.parsers.registration import RegistrationStatus

__all__ = [
    "EMM_CAUSES",
    "EmmCause",
    "emm_cause",
    "mask_imsi",
    "not_connected_reason",
]


@dataclass(frozen=True, slots=True)
class EmmCause:
    """One EMM cause: its 24.301 name and the plain-language reason shown."""

    code: int
    name: str
    reason: str


#: 3GPP TS 24.301 annex A (cause values for EPS mobility management), clause 9.9.3.9:
#: the causes by their 24.301 names.
_EMM_NAMES: Final[Mapping[int, str]] = {
    2: "IMSI unknown in HSS",
    3: "Illegal UE",
    5: "IMEI not accepted",
    6: "Illegal ME",
    7: "EPS services not allowed",
    8: "EPS services and non-EPS services not allowed",
    9: "UE identity cannot be derived by the network",
    10: "Implicitly detached",
    11: "PLMN not allowed",
    12: "Tracking area not allowed",
    13: "Roaming not allowed in this tracking area",
    14: "EPS services not allowed in this PLMN",
    15: "No suitable cells in tracking area",
    16: "MSC temporarily not reachable",
    17: "Network failure",
    18: "CS domain not available",
    19: "ESM failure",
    20: "MAC failure",
    21: "Synch failure",
    22: "Congestion",
    23: "UE security capabilities mismatch",
    24: "Security mode rejected, unspecified",
    25: "Not authorized for this CSG",
    26: "Non-EPS authentication unacceptable",
    31: "Redirection to 5GCN required",
    35: "Requested service option not authorized in this PLMN",
    39: "CS service temporarily not available",
    40: "No EPS bearer context activated",
    42: "Severe network failure",
    78: "PLMN not allowed to operate at the present UE location",
    95: "Semantically incorrect message",
    96: "Invalid mandatory information",
    97: "Message type non-existent or not implemented",
    98: "Message type not compatible with the protocol state",
    99: "Information element non-existent or not implemented",
    100: "Conditional IE error",
    101: "Message not compatible with the protocol state",
    111: "Protocol error, unspecified",
}

#: What the causes mean for a shop owner: each text once, with the causes that mean it.
_EMM_REASONS: Final[Mapping[str, tuple[int, ...]]] = {
    "SIM unknown to the network: SIM not activated?": (2,),
    "SIM rejected by the network: plan expired or SIM not activated?": (3, 7, 8),
    "modem refused by the network (IMEI not accepted)": (5,),
    "modem refused by the network (illegal ME): blocked IMEI?": (6,),
    "the network did not recognise the SIM; it retries by itself": (9,),
    "the network detached the modem; it re-registers": (10,),
    "this network does not accept the SIM: wrong carrier or roaming not in the plan?": (11,),
    "the SIM is not allowed in this area": (12,),
    "roaming is not allowed here for this SIM": (13,),
    "no LTE data for this SIM on this network: roaming not in the plan?": (14,),
    "no coverage (no suitable cell here)": (15,),
    "the network is partly down; it retries": (16,),
    "network failure; the modem retries": (17,),
    "voice service not available (data unaffected)": (18,),
    "the network refused the data connection: wrong APN?": (19,),
    "the SIM failed the network's authentication: SIM fault?": (20,),
    "SIM authentication out of step; the modem retries": (21,),
    "the network is congested; the modem retries later": (22,),
    "modem and network disagree on security": (23,),
    "security set-up refused by the modem": (24,),
    "this cell is closed to the SIM": (25,),
    "SIM authentication refused": (26,),
    "the network wants a 5G core connection": (31,),
    "the service is not in the SIM's plan on this network": (35,),
    "voice service temporarily down": (39,),
    "the network set up no data connection: wrong APN?": (40,),
    "severe network failure; the modem retries later": (42,),
    "this network may not serve this location": (78,),
    "protocol error with the network": (95, 96, 97, 98, 99, 100, 101, 111),
}

#: Every listed cause with its 24.301 name and its reason, by code.
EMM_CAUSES: Final[Mapping[int, EmmCause]] = dict(sorted(
    (code, EmmCause(code, _EMM_NAMES[code], reason))
    for reason, codes in _EMM_REASONS.items() for code in codes))


def emm_cause(code: int) -> EmmCause:
    """The cause `code`; an unlisted one is named by its number (24.301 says to treat
    unknown causes as #111, but the number is what an engineer needs)."""
    known = EMM_CAUSES.get(code)
    if known is not None:
        return known
    return EmmCause(code, f"cause #{code}", f"registration rejected by the network "
                                            f"(cause #{code})")


def mask_imsi(imsi: str | None, mnc_length: int = 2) -> str | None:
    """An IMSI for a status document: MCC + MNC, the middle as `*`, the last 4 digits
    (`450081234567890` -> `45008******7890`). The IMSI is personal data (it identifies
    the subscriber); this much tells the carrier and which SIM without giving it away."""
    if imsi is None:
        return None
    head = 3 + mnc_length
    if len(imsi) <= head + 4:
        return imsi[:head] + "*" * (len(imsi) - head)
    return imsi[:head] + "*" * (len(imsi) - head - 4) + imsi[-4:]


#: SIM faults (`Modem` `sim_fault`) in plain language.
_SIM_FAULT_REASONS: Final[Mapping[str, str]] = {
    "pin_required": "SIM PIN required (set lte.pin)",
    "pin_rejected": "SIM PIN rejected: check lte.pin (not retried, to spare the SIM)",
    "pin_unconfirmed": "SIM PIN attempt unanswered (not retried, to spare the SIM)",
    "puk_required": "SIM locked: PUK required (the PIN was entered wrong too often)",
    "locked": "SIM locked (network or operator lock)",
    "failure": "SIM failure: reseat or replace the SIM",
}

_COVERAGE: Final[Mapping[RegistrationStatus, str]] = {
    RegistrationStatus.NOT_REGISTERED: "no coverage (not registered, not searching)",
    RegistrationStatus.SEARCHING: "no coverage (searching for a network)",
    RegistrationStatus.UNKNOWN: "no coverage",
    RegistrationStatus.EMERGENCY_ONLY: "emergency calls only: the SIM's network is not here",
    RegistrationStatus.RLOS_ONLY: "emergency calls only: the SIM's network is not here",
}


def not_connected_reason(
    *,
    data_up: bool,
    present: bool | None,
    sim_state: SimState | None,
    sim_fault: str | None,
    radio_on: bool | None,
    registration: RegistrationStatus | None,
    reject_cause: int | None,
    cause_type: int | None = 0,
    data_down_reason: str | None = None,
    error_report: str | None = None,
) -> str | None:
    """The one reason LTE is not connected (None when the data call is up, or nothing is
    known yet). `radio_on` from `+CFUN?` (False: CFUN 0 or 4); `reject_cause` with
    `cause_type` 0 is an EMM cause, 1 a vendor cause; `data_down_reason` is what the
    modem said when the data call went down (`network_deactivated`); `error_report` is
    `AT+CEER`'s text."""
    if data_up:
        return None
    if present is False:
        return "modem not answering"
    if sim_state is SimState.NOT_INSERTED:
        return "no SIM"
    if sim_fault is not None:
        return _SIM_FAULT_REASONS.get(sim_fault, f"SIM fault ({sim_fault})")
    if sim_state is SimState.SIM_PIN:
        return _SIM_FAULT_REASONS["pin_required"]
    if radio_on is False:
        return "radio off"
    if registration is RegistrationStatus.DENIED:
        if reject_cause is not None and cause_type in (0, None) and reject_cause != 0:
            cause = emm_cause(reject_cause)
            return f"{cause.reason} (EMM #{cause.code} {cause.name})"
        if reject_cause is not None and cause_type == 1:
            return f"registration rejected by the network (vendor cause {reject_cause})"
        if error_report:
            return f"registration rejected by the network ({error_report})"
        return "registration rejected by the network"
    if registration is not None and not registration.registered:
        if reject_cause is not None and cause_type in (0, None) and reject_cause == 15:
            return emm_cause(15).reason
        return _COVERAGE.get(registration, "no coverage")
    if sim_state is not None and sim_state is not SimState.READY:
        return "SIM not ready yet"
    if registration is None:
        return None
    if data_down_reason == "network_deactivated":
        return "network deactivated the data connection"
    if error_report:
        return f"data connection not up ({error_report})"
    return "data connection not up yet"
