"""Network registration parsers (3GPP TS 27.007): the access technology (`<AcT>`, clause
7.3), `+CREG` / `+CGREG` / `+CEREG` (clauses 7.2, 10.1.20, 10.1.22), MCC/MNC, operator
names and `+COPS` (clause 7.3).

Like every module of `hw.modem.parsers`: pure functions from the information-response
line(s) of one command (no echo, no final `OK`) to frozen dataclasses, enums or plain
values, with `None` for optional fields the modem did not report; malformed input raises
`hw.modem.errors.ParseError` naming the input. Nothing here does I/O or knows a vendor.
Clause numbers refer to 3GPP TS 27.007 (Release 18 numbering) unless stated otherwise.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from hw.modem.errors import ParseError
from hw.modem.parsers.tokens import (
    HEX_RE,
    INT_RE,
    Field,
    line_fields,
    optional_int,
    payload,
    response_lines,
    split_fields,
    to_int,
)

# --- access technology (TS 27.007 clause 7.3 <AcT>) -------------------------------------


class AccessTechnology(StrEnum):
    """Radio access technology as coded by `<AcT>` in +COPS / +CREG / +CGREG / +CEREG."""

    GSM = "gsm"
    GSM_COMPACT = "gsm_compact"
    UMTS = "umts"
    EDGE = "edge"
    HSDPA = "hsdpa"
    HSUPA = "hsupa"
    HSPA = "hspa"
    LTE = "lte"
    EC_GSM_IOT = "ec_gsm_iot"
    LTE_NB_IOT = "lte_nb_iot"
    LTE_5GCN = "lte_5gcn"
    NR_5GCN = "nr_5gcn"
    NG_RAN = "ng_ran"
    EN_DC = "en_dc"


#: TS 27.007 clause 7.3, `<AcT>` values 0..13. Note: some IoT modules (Quectel BG9x) report
#: 8 for LTE-M although the standard assigns 8 to EC-GSM-IoT; this table follows the standard.
ACCESS_TECHNOLOGY_BY_ACT: Final[Mapping[int, AccessTechnology]] = {
    0: AccessTechnology.GSM,
    1: AccessTechnology.GSM_COMPACT,
    2: AccessTechnology.UMTS,
    3: AccessTechnology.EDGE,
    4: AccessTechnology.HSDPA,
    5: AccessTechnology.HSUPA,
    6: AccessTechnology.HSPA,
    7: AccessTechnology.LTE,
    8: AccessTechnology.EC_GSM_IOT,
    9: AccessTechnology.LTE_NB_IOT,
    10: AccessTechnology.LTE_5GCN,
    11: AccessTechnology.NR_5GCN,
    12: AccessTechnology.NG_RAN,
    13: AccessTechnology.EN_DC,
}


def _act(value: str, command: str, line: str) -> AccessTechnology | None:
    code = optional_int(value, command, line, "<AcT>")
    return None if code is None else ACCESS_TECHNOLOGY_BY_ACT.get(code)


# --- +CREG / +CGREG / +CEREG (clauses 7.2, 10.1.20, 10.1.22) -----------------------------


class RegistrationStatus(StrEnum):
    """`<stat>` of +CREG / +CGREG / +CEREG."""

    NOT_REGISTERED = "not_registered"        # 0: not registered, not searching
    HOME = "home"                            # 1
    SEARCHING = "searching"                  # 2: not registered, searching
    DENIED = "denied"                        # 3
    UNKNOWN = "unknown"                      # 4: e.g. out of coverage
    ROAMING = "roaming"                      # 5
    HOME_SMS_ONLY = "home_sms_only"          # 6
    ROAMING_SMS_ONLY = "roaming_sms_only"    # 7
    EMERGENCY_ONLY = "emergency_only"        # 8: attached for emergency bearer services only
    HOME_CSFB_NOT_PREFERRED = "home_csfb_not_preferred"          # 9
    ROAMING_CSFB_NOT_PREFERRED = "roaming_csfb_not_preferred"    # 10
    RLOS_ONLY = "rlos_only"                  # 11: attached for access to RLOS

    @property
    def registered(self) -> bool:
        """Registered on a network that carries data (home or roaming, any flavour)."""
        return self in _REGISTERED

    @property
    def roaming(self) -> bool:
        return self in (RegistrationStatus.ROAMING, RegistrationStatus.ROAMING_SMS_ONLY,
                        RegistrationStatus.ROAMING_CSFB_NOT_PREFERRED)


_REGISTERED: Final = frozenset({
    RegistrationStatus.HOME, RegistrationStatus.ROAMING,
    RegistrationStatus.HOME_SMS_ONLY, RegistrationStatus.ROAMING_SMS_ONLY,
    RegistrationStatus.HOME_CSFB_NOT_PREFERRED, RegistrationStatus.ROAMING_CSFB_NOT_PREFERRED,
})

_STATUS_BY_STAT: Final[tuple[RegistrationStatus, ...]] = tuple(RegistrationStatus)


class RegistrationForm(StrEnum):
    """The read-command response (`+CEREG: <n>,<stat>,...`) or the unsolicited result code
    (`+CEREG: <stat>,...`)."""

    READ = "read"
    URC = "urc"


@dataclass(frozen=True, slots=True)
class Registration:
    """A +CREG / +CGREG / +CEREG line. `area_code` is the LAC (CREG, CGREG) or TAC (CEREG);
    `n` is only present in the read form."""

    command: str
    form: RegistrationForm
    n: int | None
    status: RegistrationStatus
    area_code: int | None
    cell_id: int | None
    act: AccessTechnology | None
    #: `<cause_type>` (0: a 3GPP TS 24.301 EMM cause, 1: manufacturer specific) and
    #: `<reject_cause>`, reported at `<n>` = 3 (and 5) when registration failed.
    cause_type: int | None = None
    reject_cause: int | None = None


_REG_PREFIX: Final = re.compile(r"\s*\+(C5GREG|CEREG|CGREG|CREG)\s*:\s*", re.IGNORECASE)


def _registration_fields(text: str) -> tuple[str, str, list[Field]]:
    lines = response_lines(text)
    if len(lines) != 1:
        raise ParseError("+CREG", text, f"expected exactly one line, got {len(lines)}")
    line = lines[0]
    match = _REG_PREFIX.match(line)
    if match is None:
        raise ParseError("+CREG", line, "expected a +CREG:, +CGREG: or +CEREG: line")
    command = "+" + match.group(1).upper()
    fields = split_fields(line[match.end():], command, line)
    if not fields[0].text:
        raise ParseError(command, line, "no <stat>")
    return command, line, fields


def _looks_like_stat(field: Field) -> bool:
    # <stat> is a small decimal (0..11, sometimes zero-padded: "001"); an unquoted LAC/TAC
    # in the URC position is hex and in practice at least four digits wide.
    return (not field.quoted and len(field.text) <= 3 and field.text.isdigit()
            and int(field.text) <= 11)


def registration_form(text: str) -> RegistrationForm:
    """Tell the read form (`<n>,<stat>[,<lac>,<ci>[,<AcT>...]]`) from the URC form
    (`<stat>[,<lac>,<ci>[,<AcT>...]]`).

    Quoted location fields decide it by position. Without quotes: one field is a URC, two
    are a read response (`<n>,<stat>`), three are a URC (`<stat>,<lac>,<ci>`), and from
    four on the second field is `<stat>` (read form) when it looks like one and a LAC/TAC
    otherwise. The caller that knows it sent the read command can force the form instead
    (`parse_registration(..., form=)`)."""
    _, _, fields = _registration_fields(text)
    if len(fields) >= 2 and fields[1].quoted:
        return RegistrationForm.URC
    if len(fields) >= 3 and fields[2].quoted:
        return RegistrationForm.READ
    if len(fields) == 1 or len(fields) == 3:
        return RegistrationForm.URC
    if len(fields) == 2:
        return RegistrationForm.READ
    return RegistrationForm.READ if _looks_like_stat(fields[1]) else RegistrationForm.URC


def lenient_hex(value: str) -> int | None:
    """A LAC/TAC/CI field, or None when it is empty, `-` or not hexadecimal (`"  0 5"` of
    a Gobi 1000): a location the modem garbled is unknown, not a broken answer."""
    match = HEX_RE.fullmatch(value.strip())
    return None if match is None else int(match.group(1), 16)


def lenient_act(value: str) -> AccessTechnology | None:
    """An `<AcT>` field, or None when it is empty, not a number or not a known AcT."""
    text = value.strip()
    if INT_RE.fullmatch(text) is None:
        return None
    return ACCESS_TECHNOLOGY_BY_ACT.get(int(text))


def _is_act(field: Field) -> bool:
    text = field.text.strip()
    return not field.quoted and text.isdigit() and int(text) in ACCESS_TECHNOLOGY_BY_ACT


def _has_field_before_ci(location: list[Field]) -> bool:
    """The `<tac>,<rac>,<ci>,<AcT>` layout (ETSI 27.007 v8.6 +CEREG, as a Novatel E362 and
    Altair/u-blox/Telit firmware send it): a short (<= 2 digit) field where the CI
    belongs, a CI-sized field after it and an `<AcT>` last of the four. A standard CI is
    never that short (cells are numbered in 16 to 36 bits)."""
    return (len(location) >= 4 and len(location[1].text.strip()) <= 2
            and len(location[2].text.strip()) >= 3 and _is_act(location[3]))


def registration_location(
        location: list[Field]) -> tuple[int | None, int | None, AccessTechnology | None]:
    """(area, cell, AcT) from the fields after `<stat>`: `<lac>,<ci>[,<AcT>[,...]]`, or
    `<tac>,<rac>,<ci>,<AcT>` (see `_has_field_before_ci`). Garbled values are None; fields
    after `<AcT>` (RAC, reject cause, PSM timers, a Samsung Wave's `B, C2816`) are
    ignored."""
    if _has_field_before_ci(location):
        return lenient_hex(location[0].text), lenient_hex(location[2].text), \
            lenient_act(location[3].text)
    area = lenient_hex(location[0].text) if location else None
    cell = lenient_hex(location[1].text) if len(location) > 1 else None
    act = lenient_act(location[2].text) if len(location) > 2 else None
    return area, cell, act


def _lenient_int(field: Field | None) -> int | None:
    if field is None:
        return None
    text = field.text.strip()
    return int(text) if text.isdigit() else None


#: Fields between `<AcT>` and `<cause_type>`: `+CGREG` has `<rac>`, `+C5GREG` the
#: allowed NSSAI length and list (TS 27.007 clauses 10.1.20, 10.1.22, 10.1.23, 7.2).
_FIELDS_BEFORE_CAUSE: Final[Mapping[str, int]] = {"+CREG": 0, "+CEREG": 0, "+CGREG": 1,
                                                  "+C5GREG": 2}


def registration_cause(command: str, location: list[Field]) -> tuple[int | None, int | None]:
    """(`<cause_type>`, `<reject_cause>`) from the fields after `<stat>` (the `<n>` = 3
    layout `<lac>,<ci>,<AcT>[,<rac>],<cause_type>,<reject_cause>`); (None, None) when the
    line has none, or they are empty or not numbers (PSM timers of `<n>` = 4 follow
    empty cause fields)."""
    start = 4 if _has_field_before_ci(location) else 3
    start += _FIELDS_BEFORE_CAUSE.get(command, 0)
    if len(location) < start + 2:
        return None, None
    cause_type, reject = _lenient_int(location[start]), _lenient_int(location[start + 1])
    if reject is None:
        return None, None
    return cause_type, reject


def parse_registration(text: str, *, form: RegistrationForm | None = None) -> Registration:
    """+CREG / +CGREG / +CEREG in either form, leniently, as modems really send them: LAC/TAC
    and cell id quoted or bare hex (garbled ones read as None); the `<tac>,<rac>,<ci>,<AcT>`
    layout with an extra field before the cell id; `<cause_type>,<reject_cause>` of the
    `<n>` = 3 layout kept (`registration_cause`); other fields after `<AcT>` (RAC, PSM
    timers of `<n>` = 4..5, vendor extras) ignored. Only a missing or impossible
    `<n>`/`<stat>` is a `ParseError`: without them nothing was said."""
    command, line, fields = _registration_fields(text)
    if form is None:
        form = registration_form(line)
    n: int | None = None
    if form is RegistrationForm.READ:
        if len(fields) < 2:
            raise ParseError(command, line, "read form needs <n>,<stat>")
        n = to_int(fields[0].text, command, line, "<n>")
        if not 0 <= n <= 5:
            raise ParseError(command, line, f"<n> {n} is outside 0..5")
        rest = fields[1:]
    else:
        rest = fields
    stat = to_int(rest[0].text, command, line, "<stat>")
    if not 0 <= stat < len(_STATUS_BY_STAT):
        raise ParseError(command, line, f"<stat> {stat} is outside 0..{len(_STATUS_BY_STAT) - 1}")
    area, cell, act = registration_location(rest[1:])
    cause_type, reject = registration_cause(command, rest[1:])
    return Registration(command=command, form=form, n=n, status=_STATUS_BY_STAT[stat],
                        area_code=area, cell_id=cell, act=act, cause_type=cause_type,
                        reject_cause=reject)


# --- MCC / MNC --------------------------------------------------------------------------

#: MCCs whose networks use three-digit MNCs (ITU-T E.212 allocations as listed in the
#: public MCC/MNC tables, e.g. Wikipedia "Mobile country code"). 405 (India) mixes two-
#: and three-digit MNCs; pass `mnc_length=` when the SIM's EF_AD is known.
THREE_DIGIT_MNC_MCCS: Final[frozenset[str]] = frozenset({
    "302", "310", "311", "312", "313", "314", "315", "316", "334", "338", "342", "344",
    "346", "348", "354", "356", "358", "360", "365", "366", "376", "405", "708", "722",
    "732", "738", "750",
})


def mnc_length(mcc: str) -> int:
    """2 or 3: the MNC length used by networks of `mcc` (Korea, 450, uses 2)."""
    return 3 if mcc in THREE_DIGIT_MNC_MCCS else 2


def split_mcc_mnc(code: str) -> tuple[str, str]:
    """`"45005"` -> `("450", "05")`, `"310410"` -> `("310", "410")`; also `"450-05"`.

    A five/six-digit operator code carries its MNC length in its length; a `ValueError`
    for anything else (MCC 000 is not valid)."""
    text = code.strip().strip('"')
    match = re.fullmatch(r"(\d{3})[-\s/]?(\d{2,3})", text)
    if match is None or match.group(1) == "000":
        raise ValueError(f"not an MCC/MNC: {code!r}")
    return match.group(1), match.group(2)


# --- operator names: charsets (TS 27.007 +CSCS, TS 23.038 GSM 7-bit) ------------------

#: TS 23.038 GSM 7-bit default alphabet, septet -> character (the escape 0x1B -> None).
GSM7_ALPHABET: Final[str] = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà")

_HEX_TEXT: Final = re.compile(r"(?:[0-9A-Fa-f]{2})+")


def decode_ucs2_hex(text: str) -> str | None:
    """`"0056006500720069007A006F006E"` -> `"Verizon"` (+CSCS="UCS2": UTF-16BE in hex);
    None when `text` is not that (odd length, not hex, unpaired surrogate, controls)."""
    if len(text) % 4 or not _HEX_TEXT.fullmatch(text):
        return None
    try:
        decoded = bytes.fromhex(text).decode("utf-16-be")
    except UnicodeDecodeError:
        return None
    return decoded if decoded.isprintable() else None


def decode_gsm7_hex(text: str) -> str | None:
    """Unpacked GSM 7-bit septets in hex (+CSCS="HEX": `"4B54"` -> `"KT"`); None when
    `text` is not that."""
    if not _HEX_TEXT.fullmatch(text):
        return None
    septets = bytes.fromhex(text)
    if any(b > 0x7F or b == 0x1B for b in septets):
        return None  # not septets, or an extension-table escape (not decoded here)
    decoded = "".join(GSM7_ALPHABET[b] for b in septets)
    return decoded if decoded.isprintable() else None


def decode_operator_name(raw: str | None, charset: str | None = None) -> str | None:
    """An operator name as the modem sent it, decoded (ModemManager's
    `mm_3gpp_normalize_operator`): UCS2 hex when `charset` is "UCS2" (and, charset
    unknown, a hex string of at least two UCS2 characters), GSM 7-bit hex for "HEX";
    otherwise the text itself (UTF-8 was decoded by the framer). A name that does not
    decode in the stated charset is kept as sent (some modems ignore +CSCS for +COPS).
    Empty and "Unknown" (Novatel LTE) are None."""
    if raw is None:
        return None
    text = raw.strip()
    if not text or text.lower() == "unknown":
        return None
    wanted = (charset or "").upper()
    decoded: str | None = None
    if wanted == "UCS2" or (not wanted and len(text) >= 8):
        decoded = decode_ucs2_hex(text)
    elif wanted == "HEX":
        decoded = decode_gsm7_hex(text)
    return decoded if decoded else text


# --- +COPS (clause 7.3) -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Operator:
    """`+COPS?`: selection `mode` (0 automatic, 1 manual, 2 deregister, 3 set format only,
    4 manual/automatic), `<format>` of `name` (0 long, 1 short, 2 numeric) and `<AcT>`."""

    mode: int
    format: int | None
    name: str | None
    act: AccessTechnology | None

    @property
    def mcc_mnc(self) -> str | None:
        """The numeric operator code when `format` is 2."""
        return self.name if self.format == 2 else None


def parse_cops(text: str, *, charset: str | None = None) -> Operator:
    """`+COPS: <mode>[,<format>,<oper>[,<AcT>]]` (e.g. `+COPS: 0` with no operator). An
    alphanumeric `<oper>` is decoded per `decode_operator_name` (`charset`: the +CSCS in
    use, None when unknown)."""
    line, fields = line_fields(text, "+COPS")
    mode = to_int(fields[0].text, "+COPS", line, "<mode>")
    if not 0 <= mode <= 4:
        raise ParseError("+COPS", line, f"<mode> {mode} is outside 0..4")
    fmt = optional_int(fields[1].text, "+COPS", line, "<format>") if len(fields) > 1 else None
    if fmt is not None and not 0 <= fmt <= 2:
        raise ParseError("+COPS", line, f"<format> {fmt} is outside 0..2")
    name = (fields[2].text or None) if len(fields) > 2 else None
    if name is not None and fmt == 2 and not re.fullmatch(r"\d{5,6}", name):
        raise ParseError("+COPS", line, "numeric <oper> is not five or six digits")
    if fmt != 2:
        name = decode_operator_name(name, charset)
    act = _act(fields[3].text, "+COPS", line) if len(fields) > 3 else None
    return Operator(mode=mode, format=fmt, name=name, act=act)


@dataclass(frozen=True, slots=True)
class NetworkEntry:
    """One operator of `+COPS=?`: `status` 0 unknown, 1 available, 2 current, 3 forbidden."""

    status: int
    long_name: str | None
    short_name: str | None
    numeric: str
    act: AccessTechnology | None


def parse_cops_list(text: str) -> tuple[NetworkEntry, ...]:
    """`+COPS: (<stat>,"long","short","numeric"[,<AcT>]),...,,(modes),(formats)`.

    Only the parenthesised groups holding quoted operator names are operators; the trailing
    lists of supported modes and formats are skipped. A response of only such lists (some
    modems answer that when nothing is found) is an empty tuple."""
    lines = response_lines(text)
    if not lines:
        raise ParseError("+COPS", text, "empty response")
    body = ",".join(payload(line, "+COPS") for line in lines)
    entries: list[NetworkEntry] = []
    for group in re.findall(r"\(([^()]*)\)", body):
        fields = split_fields(group, "+COPS", text)
        if not any(f.quoted for f in fields):
            continue
        if len(fields) < 4:
            raise ParseError("+COPS", text, f"operator entry ({group}) has fewer than four fields")
        numeric = fields[3].text
        if re.fullmatch(r"\d{5,7}", numeric) is None:
            raise ParseError("+COPS", text, f"operator entry ({group}) has no numeric code")
        entries.append(NetworkEntry(
            status=to_int(fields[0].text, "+COPS", text, "<stat>"),
            long_name=fields[1].text or None,
            short_name=fields[2].text or None,
            numeric=numeric,
            act=_act(fields[4].text, "+COPS", text) if len(fields) > 4 else None,
        ))
    return tuple(entries)
