"""Identity parsers: the SIM (`+CPIN`, clause 8.3; ICCID; IMSI, clause 5.6 and TS 23.003)
and the modem (`ATI`, `+CGMI`/`+CGMM`/`+CGMR`, clauses 5.1-5.3; `+CGSN`, clause 5.4).
Pure, like every module of `hw.modem.parsers` (clauses of 3GPP TS 27.007).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from hw.modem.codes import parse_cme_error
from hw.modem.errors import ParseError
from hw.modem.parsers.registration import mnc_length
from hw.modem.parsers.tokens import payload, response_lines, single_line, split_fields

# --- SIM: +CPIN (clause 8.3), ICCID, IMSI (clause 5.6) ----------------------------------


class SimState(StrEnum):
    """`+CPIN?` `<code>`, plus the states a modem reports through +CME ERROR instead."""

    READY = "ready"
    SIM_PIN = "sim_pin"
    SIM_PUK = "sim_puk"
    PH_SIM_PIN = "ph_sim_pin"
    PH_FSIM_PIN = "ph_fsim_pin"
    PH_FSIM_PUK = "ph_fsim_puk"
    SIM_PIN2 = "sim_pin2"
    SIM_PUK2 = "sim_puk2"
    PH_NET_PIN = "ph_net_pin"
    PH_NET_PUK = "ph_net_puk"
    PH_NETSUB_PIN = "ph_netsub_pin"
    PH_NETSUB_PUK = "ph_netsub_puk"
    PH_SP_PIN = "ph_sp_pin"
    PH_SP_PUK = "ph_sp_puk"
    PH_CORP_PIN = "ph_corp_pin"
    PH_CORP_PUK = "ph_corp_puk"
    NOT_INSERTED = "not_inserted"
    NOT_READY = "not_ready"
    FAILURE = "failure"
    BUSY = "busy"
    WRONG = "wrong"


_CPIN_CODES: Final[Mapping[str, SimState]] = {
    "READY": SimState.READY,
    "SIM PIN": SimState.SIM_PIN,
    "SIM PUK": SimState.SIM_PUK,
    "PH-SIM PIN": SimState.PH_SIM_PIN,
    "PH-FSIM PIN": SimState.PH_FSIM_PIN,
    "PH-FSIM PUK": SimState.PH_FSIM_PUK,
    "SIM PIN2": SimState.SIM_PIN2,
    "SIM PUK2": SimState.SIM_PUK2,
    "PH-NET PIN": SimState.PH_NET_PIN,
    "PH-NET PUK": SimState.PH_NET_PUK,
    "PH-NETSUB PIN": SimState.PH_NETSUB_PIN,
    "PH-NETSUB PUK": SimState.PH_NETSUB_PUK,
    "PH-SP PIN": SimState.PH_SP_PIN,
    "PH-SP PUK": SimState.PH_SP_PUK,
    "PH-CORP PIN": SimState.PH_CORP_PIN,
    "PH-CORP PUK": SimState.PH_CORP_PUK,
    # Not in TS 27.007, but answered by real modems instead of +CME ERROR: 10.
    "NOT INSERTED": SimState.NOT_INSERTED,
    "SIM REMOVED": SimState.NOT_INSERTED,
    "NOT READY": SimState.NOT_READY,
}

_CPIN_BY_CME: Final[Mapping[int, SimState]] = {
    5: SimState.PH_SIM_PIN,
    10: SimState.NOT_INSERTED,
    11: SimState.SIM_PIN,
    12: SimState.SIM_PUK,
    13: SimState.FAILURE,
    14: SimState.BUSY,
    15: SimState.WRONG,
    17: SimState.SIM_PIN2,
    18: SimState.SIM_PUK2,
}


def parse_cpin(text: str) -> SimState:
    """`+CPIN: READY` etc., or the `+CME ERROR:` a modem answers to `AT+CPIN?` when the SIM
    is missing (`+CME ERROR: 10` / `SIM not inserted`), busy or failed. Other errors are
    not SIM states: `ParseError`."""
    line = single_line(text, "+CPIN")
    if re.match(r"\s*\+CME ERROR\s*:", line, re.IGNORECASE):
        err = parse_cme_error(line)
        state = _CPIN_BY_CME.get(err.code) if err.code is not None else None
        if state is None:
            raise ParseError("+CPIN", line, "this +CME ERROR is not a SIM state")
        return state
    code = " ".join(payload(line, "+CPIN").strip('"').upper().split())
    try:
        return _CPIN_CODES[code]
    except KeyError:
        raise ParseError("+CPIN", line, "unknown <code>") from None


def normalize_iccid(raw: str) -> str:
    """The printable ICCID of a raw ICCID field.

    Strips quotes and the trailing `F` padding; un-swaps the nibble order some modems report
    (an ICCID starting `98` instead of `89`, as ModemManager's `mm_3gpp_parse_iccid` does);
    keeps hex digits in the account part (issued by some Chinese operators). `ValueError`
    unless the result is 18..20 characters starting with the telecom MII `89`."""
    value = raw.strip().strip('"').strip().upper()
    if not value:
        raise ValueError("empty ICCID")
    if re.fullmatch(r"[0-9A-F]+", value) is None:
        raise ValueError(f"ICCID has characters other than hex digits: {raw!r}")
    if value.startswith("98") and len(value) % 2 == 0:
        value = "".join(value[i + 1] + value[i] for i in range(0, len(value), 2))
    value = value.rstrip("F")
    if not 18 <= len(value) <= 20 or not value.startswith("89") or not value[:2].isdigit():
        raise ValueError(f"not an ICCID (18..20 digits starting 89): {raw!r}")
    return value


def parse_iccid(text: str, *, prefix: str = "+CCID") -> str:
    """`+CCID: 8982...` (or a bare ICCID line). Vendor variants pass their prefix
    (`+QCCID`, `+ICCID`)."""
    line = single_line(text, prefix)
    value = payload(line, prefix) if line.lstrip().startswith("+") else line
    try:
        return normalize_iccid(value)
    except ValueError as exc:
        raise ParseError(prefix, line, str(exc)) from None


@dataclass(frozen=True, slots=True)
class Imsi:
    """An IMSI split into MCC, MNC and MSIN (TS 23.003 clause 2.2)."""

    imsi: str
    mcc: str
    mnc: str

    @property
    def mcc_mnc(self) -> str:
        return self.mcc + self.mnc

    @property
    def msin(self) -> str:
        return self.imsi[len(self.mcc) + len(self.mnc):]


def parse_imsi(text: str, *, mnc_digits: int | None = None) -> Imsi:
    """`AT+CIMI` answers the bare IMSI (some modems prefix `+CIMI:`). The MNC length comes
    from `THREE_DIGIT_MNC_MCCS` unless `mnc_digits` (from the SIM's EF_AD) is given."""
    line = single_line(text, "+CIMI")
    value = payload(line, "+CIMI") if line.startswith("+") else line
    value = value.strip('"')
    if re.fullmatch(r"\d{6,15}", value) is None:
        raise ParseError("+CIMI", line, "an IMSI is 6..15 digits")
    mcc = value[:3]
    if mcc == "000":
        raise ParseError("+CIMI", line, "MCC 000 is not valid")
    length = mnc_digits if mnc_digits is not None else mnc_length(mcc)
    if length not in (2, 3):
        raise ValueError(f"mnc_digits must be 2 or 3, not {mnc_digits}")
    return Imsi(imsi=value, mcc=mcc, mnc=value[3:3 + length])


# --- identity: ATI, +CGMI/+CGMM/+CGMR (clauses 5.1-5.3), +CGSN (clause 5.4) --------------


@dataclass(frozen=True, slots=True)
class ModemIdentity:
    """What `ATI` tells: manufacturer, model, firmware revision, IMEI when listed."""

    manufacturer: str | None
    model: str | None
    revision: str | None
    imei: str | None


_ATI_LABELS: Final[Mapping[str, str]] = {
    "manufacturer": "manufacturer", "model": "model", "revision": "revision", "imei": "imei",
}


def parse_ati(text: str) -> ModemIdentity:
    """`ATI` in its two common shapes: labelled (`Manufacturer: ...`, `Model: ...`,
    `Revision: ...`, `IMEI: ...`, as SIMCom and many others answer) or Quectel's unlabelled
    manufacturer and model lines followed by `Revision: ...`. Other lines (`+GCAP: ...`)
    are ignored."""
    lines = response_lines(text)
    if not lines:
        raise ParseError("ATI", text, "empty response")
    found: dict[str, str] = {}
    bare: list[str] = []
    for line in lines:
        label, sep, value = line.partition(":")
        key = _ATI_LABELS.get(label.strip().lower()) if sep else None
        if key is not None:
            found.setdefault(key, value.strip())
        elif not line.startswith("+"):
            bare.append(line)
    if "manufacturer" not in found and "model" not in found:
        if len(bare) >= 2:
            found["manufacturer"], found["model"] = bare[0], bare[1]
        elif bare:
            found["model"] = bare[0]
    if not found:
        raise ParseError("ATI", text, "no manufacturer, model or revision")
    imei = found.get("imei")
    if imei is not None and re.fullmatch(r"\d{15}", imei) is None:
        raise ParseError("ATI", text, "IMEI is not 15 digits")
    return ModemIdentity(manufacturer=found.get("manufacturer") or None,
                         model=found.get("model") or None,
                         revision=found.get("revision") or None, imei=imei)


def _identity_value(text: str, command: str) -> str:
    line = single_line(text, command)
    match = re.match(rf"\s*\+(?:{command[3:]}|{command[4:]})\s*:\s*", line, re.IGNORECASE)
    value = line[match.end():] if match else line
    value = value.strip().strip('"').strip()
    if not value:
        raise ParseError(command, line, "empty value")
    return value


def parse_cgmi(text: str) -> str:
    """`AT+CGMI` (manufacturer); an optional `+CGMI:`/`+GMI:` prefix and quotes are removed."""
    return _identity_value(text, "AT+CGMI")


def parse_cgmm(text: str) -> str:
    """`AT+CGMM` (model)."""
    return _identity_value(text, "AT+CGMM")


def parse_cgmr(text: str) -> str:
    """`AT+CGMR` (firmware revision; SIMCom answers `+CGMR: ...`)."""
    return _identity_value(text, "AT+CGMR")


def parse_cgsn(text: str) -> str:
    """`AT+CGSN`: the IMEI, bare, `+CGSN: 86...` or `+CGSN: "86..."`; a trailing serial
    number after a comma (`356936001568843,NL2A62Z0N5`) is dropped."""
    value = _identity_value(text, "AT+CGSN")
    imei = split_fields(value, "AT+CGSN")[0].text
    if re.fullmatch(r"\d{15}", imei) is None:
        raise ParseError("AT+CGSN", text, "an IMEI is 15 digits")
    return imei
