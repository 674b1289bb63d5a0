"""Pure parsers for standard AT information responses (3GPP TS 27.007 and TS 27.005).

Every `parse_*` function takes the information-response line(s) of one command as `str`
(no echo, no final `OK`) and returns frozen dataclasses, enums or plain typed values, with
`None` for optional fields the modem did not report. Malformed input raises
`hw.modem.errors.ParseError` naming the input. Nothing here does I/O and nothing here knows
about a vendor: vendor commands live in `quectel` and `simcom`, which reuse the small
tokenising helpers at the top of this module.

Clause numbers refer to 3GPP TS 27.007 (Release 18 numbering) unless stated otherwise.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from typing import Final, NamedTuple

from hw.modem.errors import ParseError

# --- tokenising helpers (shared with the vendor modules) --------------------------------


class Field(NamedTuple):
    """One comma-separated field of a response: its text without quotes or surrounding
    blanks, and whether it was written as a quoted string."""

    text: str
    quoted: bool


def response_lines(text: str) -> list[str]:
    """The non-empty lines of a response, stripped (CR, LF and CRLF all separate lines)."""
    return [line.strip() for line in re.split(r"[\r\n]+", text) if line.strip()]


def single_line(text: str, command: str) -> str:
    """The only line of a one-line response; anything else is a `ParseError`."""
    lines = response_lines(text)
    if len(lines) != 1:
        raise ParseError(command, text, f"expected exactly one line, got {len(lines)}")
    return lines[0]


def payload(line: str, prefix: str, command: str | None = None) -> str:
    """What follows `prefix` and its colon (`+CSQ: 21,99` -> `21,99`), case-insensitively.

    Blanks around the colon are optional (`+CREG:002,001` is real)."""
    match = re.match(rf"\s*{re.escape(prefix)}\s*:\s*", line, re.IGNORECASE)
    if match is None:
        raise ParseError(command or prefix, line, f"expected a {prefix}: line")
    return line[match.end():].strip()


def split_fields(text: str, command: str, line: str | None = None) -> list[Field]:
    """Split on commas outside double quotes; quotes are removed and remembered."""
    fields: list[Field] = []
    buf: list[str] = []
    in_quotes = False
    quoted = False
    for ch in text:
        if ch == '"':
            in_quotes = not in_quotes
            quoted = True
        elif ch == "," and not in_quotes:
            fields.append(Field("".join(buf).strip(), quoted))
            buf, quoted = [], False
        else:
            buf.append(ch)
    if in_quotes:
        raise ParseError(command, line if line is not None else text, "unterminated quote")
    fields.append(Field("".join(buf).strip(), quoted))
    return fields


_INT_RE: Final = re.compile(r"[+-]?\d+")
_HEX_RE: Final = re.compile(r"(?:0[xX])?([0-9A-Fa-f]+)")


def to_int(value: str, command: str, line: str, what: str) -> int:
    """A decimal integer field, or `ParseError` naming `what` and the line."""
    if _INT_RE.fullmatch(value.strip()) is None:
        raise ParseError(command, line, f"{what} is not an integer ({value!r})")
    return int(value)


def to_hex(value: str, command: str, line: str, what: str) -> int:
    """A hexadecimal field (quoted or not, optional `0x`), or `ParseError`."""
    match = _HEX_RE.fullmatch(value.strip())
    if match is None:
        raise ParseError(command, line, f"{what} is not hexadecimal ({value!r})")
    return int(match.group(1), 16)


def optional_int(value: str, command: str, line: str, what: str) -> int | None:
    """An integer field that may be empty or `-` (Quectel's "not available")."""
    value = value.strip()
    if value in ("", "-"):
        return None
    return to_int(value, command, line, what)


def optional_hex(value: str, command: str, line: str, what: str) -> int | None:
    """A hexadecimal field that may be empty or `-`."""
    value = value.strip()
    if value in ("", "-"):
        return None
    return to_hex(value, command, line, what)


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


# --- +CSQ (clause 8.5) ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignalQuality:
    """+CSQ. `rssi_dbm` is None for 99 (unknown); 31 means -51 dBm *or better*."""

    rssi: int
    rssi_dbm: int | None
    ber: int | None


def csq_rssi_to_dbm(rssi: int) -> int | None:
    """TS 27.007 clause 8.5: 0 -> -113 (or less), n -> -113 + 2n, 31 -> -51 (or more),
    99 -> None. Any other value is a `ValueError`."""
    if rssi == 99:
        return None
    if 0 <= rssi <= 31:
        return -113 + 2 * rssi
    raise ValueError(f"+CSQ <rssi> {rssi} is outside 0..31, 99")


def parse_csq(text: str) -> SignalQuality:
    """`+CSQ: <rssi>,<ber>`."""
    line = single_line(text, "+CSQ")
    fields = split_fields(payload(line, "+CSQ"), "+CSQ", line)
    if len(fields) != 2:
        raise ParseError("+CSQ", line, "expected <rssi>,<ber>")
    rssi = to_int(fields[0].text, "+CSQ", line, "<rssi>")
    ber = to_int(fields[1].text, "+CSQ", line, "<ber>")
    try:
        dbm = csq_rssi_to_dbm(rssi)
    except ValueError as exc:
        raise ParseError("+CSQ", line, str(exc)) from None
    if ber != 99 and not 0 <= ber <= 7:
        raise ParseError("+CSQ", line, f"<ber> {ber} is outside 0..7, 99")
    return SignalQuality(rssi=rssi, rssi_dbm=dbm, ber=None if ber == 99 else ber)


# --- +CESQ (clause 8.69) ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExtendedSignalQuality:
    """+CESQ converted to physical units; None where the modem reports "not known".

    Each value is the lower edge of the reported 1 dB (0.5 dB for Ec/No and RSRQ) bin; the
    bottom bin stands for "that or less" and the top bin for "that or more"."""

    rssi_dbm: int | None
    ber: int | None
    rscp_dbm: int | None
    ecno_db: float | None
    rsrq_db: float | None
    rsrp_dbm: int | None


def _level(value: int, top: int, unknown: int, what: str, line: str) -> int | None:
    if value == unknown:
        return None
    if not 0 <= value <= top:
        raise ParseError("+CESQ", line, f"{what} {value} is outside 0..{top}, {unknown}")
    return value


def parse_cesq(text: str) -> ExtendedSignalQuality:
    """`+CESQ: <rxlev>,<ber>,<rscp>,<ecno>,<rsrq>,<rsrp>`.

    rxlev 0..63 -> -111 + n dBm; rscp 0..96 -> -121 + n dBm; ecno 0..49 -> -24.5 + n/2 dB;
    rsrq 0..34 -> -20 + n/2 dB; rsrp 0..97 -> -141 + n dBm; 99 / 255 -> None."""
    line = single_line(text, "+CESQ")
    fields = split_fields(payload(line, "+CESQ"), "+CESQ", line)
    if len(fields) != 6:
        raise ParseError("+CESQ", line, "expected six fields")
    rxlev, ber, rscp, ecno, rsrq, rsrp = (
        to_int(f.text, "+CESQ", line, name)
        for f, name in zip(fields, ("<rxlev>", "<ber>", "<rscp>", "<ecno>", "<rsrq>", "<rsrp>"),
                           strict=True))
    rxlev_l = _level(rxlev, 63, 99, "<rxlev>", line)
    ber_l = _level(ber, 7, 99, "<ber>", line)
    rscp_l = _level(rscp, 96, 255, "<rscp>", line)
    ecno_l = _level(ecno, 49, 255, "<ecno>", line)
    rsrq_l = _level(rsrq, 34, 255, "<rsrq>", line)
    rsrp_l = _level(rsrp, 97, 255, "<rsrp>", line)
    return ExtendedSignalQuality(
        rssi_dbm=None if rxlev_l is None else -111 + rxlev_l,
        ber=ber_l,
        rscp_dbm=None if rscp_l is None else -121 + rscp_l,
        ecno_db=None if ecno_l is None else -24.5 + ecno_l / 2,
        rsrq_db=None if rsrq_l is None else -20.0 + rsrq_l / 2,
        rsrp_dbm=None if rsrp_l is None else -141 + rsrp_l,
    )


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
    match = _HEX_RE.fullmatch(value.strip())
    return None if match is None else int(match.group(1), 16)


def lenient_act(value: str) -> AccessTechnology | None:
    """An `<AcT>` field, or None when it is empty, not a number or not a known AcT."""
    text = value.strip()
    if _INT_RE.fullmatch(text) is None:
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
    line = single_line(text, "+COPS")
    fields = split_fields(payload(line, "+COPS"), "+COPS", line)
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


# --- errors: +CME ERROR (clause 9.2) and +CMS ERROR (TS 27.005 clause 3.2.5) ------------

#: TS 27.007 clause 9.2.1 (general) and 9.2.2 (GPRS / packet domain), the common codes.
CME_ERRORS: Final[Mapping[int, str]] = {
    0: "phone failure",
    1: "no connection to phone",
    2: "phone-adaptor link reserved",
    3: "operation not allowed",
    4: "operation not supported",
    5: "PH-SIM PIN required",
    6: "PH-FSIM PIN required",
    7: "PH-FSIM PUK required",
    10: "SIM not inserted",
    11: "SIM PIN required",
    12: "SIM PUK required",
    13: "SIM failure",
    14: "SIM busy",
    15: "SIM wrong",
    16: "incorrect password",
    17: "SIM PIN2 required",
    18: "SIM PUK2 required",
    20: "memory full",
    21: "invalid index",
    22: "not found",
    23: "memory failure",
    24: "text string too long",
    25: "invalid characters in text string",
    26: "dial string too long",
    27: "invalid characters in dial string",
    30: "no network service",
    31: "network timeout",
    32: "network not allowed - emergency calls only",
    40: "network personalization PIN required",
    41: "network personalization PUK required",
    42: "network subset personalization PIN required",
    43: "network subset personalization PUK required",
    44: "service provider personalization PIN required",
    45: "service provider personalization PUK required",
    46: "corporate personalization PIN required",
    47: "corporate personalization PUK required",
    48: "hidden key required",
    49: "EAP method not supported",
    50: "incorrect parameters",
    100: "unknown",
    103: "Illegal MS",
    106: "Illegal ME",
    107: "GPRS services not allowed",
    108: "GPRS services and non-GPRS services not allowed",
    111: "PLMN not allowed",
    112: "Location area not allowed",
    113: "Roaming not allowed in this location area",
    114: "GPRS services not allowed in this PLMN",
    115: "No Suitable Cells In Location Area",
    122: "Congestion",
    126: "insufficient resources",
    127: "missing or unknown APN",
    128: "unknown PDP address or PDP type",
    129: "user authentication failed",
    130: "activation rejected by GGSN, Serving GW or PDN GW",
    131: "activation rejected, unspecified",
    132: "service option not supported",
    133: "requested service option not subscribed",
    134: "service option temporarily out of order",
    148: "unspecified GPRS error",
    149: "PDP authentication failure",
    150: "invalid mobile class",
}

#: TS 27.005 clause 3.2.5, the ME/TA codes (0..255 are network causes, not listed).
CMS_ERRORS: Final[Mapping[int, str]] = {
    300: "ME failure",
    301: "SMS service of ME reserved",
    302: "operation not allowed",
    303: "operation not supported",
    304: "invalid PDU mode parameter",
    305: "invalid text mode parameter",
    310: "(U)SIM not inserted",
    311: "(U)SIM PIN required",
    312: "PH-(U)SIM PIN required",
    313: "(U)SIM failure",
    314: "(U)SIM busy",
    315: "(U)SIM wrong",
    316: "(U)SIM PUK required",
    317: "(U)SIM PIN2 required",
    318: "(U)SIM PUK2 required",
    320: "memory failure",
    321: "invalid memory index",
    322: "memory full",
    330: "SMSC address unknown",
    331: "no network service",
    332: "network timeout",
    340: "no +CNMA acknowledgement expected",
    500: "unknown error",
}


def _message_key(message: str) -> str:
    # "network not allowed - emergency calls only" == "Network not allowed, emergency ..."
    return " ".join(re.findall(r"[a-z0-9]+", message.lower().replace("(u)", "")))


_CME_BY_KEY: Final[Mapping[str, int]] = {_message_key(m): c for c, m in CME_ERRORS.items()}
_CMS_BY_KEY: Final[Mapping[str, int]] = {_message_key(m): c for c, m in CMS_ERRORS.items()}


def cme_error_message(code: int) -> str | None:
    return CME_ERRORS.get(code)


def cme_error_code(message: str) -> int | None:
    """The numeric code of a verbose +CME ERROR text (case, punctuation and spacing ignored)."""
    return _CME_BY_KEY.get(_message_key(message))


def cms_error_message(code: int) -> str | None:
    return CMS_ERRORS.get(code)


def cms_error_code(message: str) -> int | None:
    return _CMS_BY_KEY.get(_message_key(message))


@dataclass(frozen=True, slots=True)
class CmeError:
    """A `+CME ERROR:` final result: `code` is None for an unknown verbose text, `message`
    is None for an unknown numeric code; `verbose` tells which form the modem used."""

    code: int | None
    message: str | None
    verbose: bool


@dataclass(frozen=True, slots=True)
class CmsError:
    """A `+CMS ERROR:` final result (TS 27.005 clause 3.2.5)."""

    code: int | None
    message: str | None
    verbose: bool


def _parse_error_result(text: str, prefix: str) -> tuple[int | None, str | None, bool]:
    line = single_line(text, prefix)
    body = payload(line, prefix)
    if not body:
        raise ParseError(prefix, line, "no error code or text")
    if body.isdigit():
        return int(body), None, False
    return None, body, True


def parse_cme_error(text: str) -> CmeError:
    """`+CME ERROR: 10` or `+CME ERROR: SIM not inserted` (both mapped to code 10)."""
    code, message, verbose = _parse_error_result(text, "+CME ERROR")
    if verbose:
        assert message is not None
        return CmeError(code=cme_error_code(message), message=message, verbose=True)
    assert code is not None
    return CmeError(code=code, message=cme_error_message(code), verbose=False)


def parse_cms_error(text: str) -> CmsError:
    """`+CMS ERROR: 500` or its verbose text."""
    code, message, verbose = _parse_error_result(text, "+CMS ERROR")
    if verbose:
        assert message is not None
        return CmsError(code=cms_error_code(message), message=message, verbose=True)
    assert code is not None
    return CmsError(code=code, message=cms_error_message(code), verbose=False)


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


# --- network time: +CCLK (clause 8.15) --------------------------------------------------


@dataclass(frozen=True, slots=True)
class NetworkTime:
    """A clock reading. `time` is always timezone-aware, expressed in the reported zone;
    `utc_offset` is None when the modem reported no zone (then `time` is taken as UTC);
    `dst_hours` is the daylight-saving adjustment already included in the zone, when given."""

    time: datetime
    utc_offset: timedelta | None
    dst_hours: int | None


_TIME_RE: Final = re.compile(
    r"(?P<y>\d{4}|\d{2})/(?P<mo>\d{1,2})/(?P<d>\d{1,2}),\s*"
    r"(?P<h>\d{1,2}):(?P<mi>\d{2}):(?P<s>\d{2})"
    r"(?:\s*(?P<sign>[+-])\s*(?P<tz>\d{1,2}))?"
    r"(?:\s*,\s*(?P<dst>\d))?")


def quarter_hours(quarters: int) -> timezone:
    """The fixed zone of a `±zz` time-zone field in quarters of an hour.

    TS 27.007 allows -96..+96, but ±96 is a whole day, which no UTC offset can be (real
    zones span -48..+56): -95..+95 are accepted, anything else is a `ValueError`."""
    if not -95 <= quarters <= 95:
        raise ValueError(f"time zone {quarters} quarter hours is outside -95..+95")
    return timezone(timedelta(minutes=15 * quarters))


def parse_time_value(value: str, command: str, line: str, *, utc: bool = False) -> NetworkTime:
    """`yy/MM/dd,hh:mm:ss±zz[,d]` (two- or four-digit year). The wall time is local unless
    `utc` (then it is UTC and is converted into the reported zone)."""
    match = _TIME_RE.fullmatch(value.strip())
    if match is None:
        raise ParseError(command, line, "expected yy/MM/dd,hh:mm:ss±zz")
    year = int(match["y"])
    if len(match["y"]) == 2:
        year += 2000
    zone: timezone | None = None
    if match["tz"] is not None:
        quarters = int(match["tz"]) * (-1 if match["sign"] == "-" else 1)
        try:
            zone = quarter_hours(quarters)
        except ValueError as exc:
            raise ParseError(command, line, str(exc)) from None
    try:
        wall = datetime(year, int(match["mo"]), int(match["d"]),
                        int(match["h"]), int(match["mi"]), int(match["s"]))
    except ValueError as exc:
        raise ParseError(command, line, f"not a valid date/time ({exc})") from None
    if utc or zone is None:
        moment = wall.replace(tzinfo=UTC)
        if zone is not None:
            moment = moment.astimezone(zone)
    else:
        moment = wall.replace(tzinfo=zone)
    return NetworkTime(time=moment, utc_offset=None if zone is None else zone.utcoffset(None),
                       dst_hours=None if match["dst"] is None else int(match["dst"]))


def quoted_value(body: str, command: str, line: str) -> tuple[str, str]:
    """Split `"value",rest` into `value` and `rest` (the whole body when unquoted)."""
    body = body.strip()
    if not body.startswith('"'):
        return body, ""
    end = body.find('"', 1)
    if end < 0:
        raise ParseError(command, line, "unterminated quote")
    return body[1:end], body[end + 1:].strip()


def parse_cclk(text: str) -> NetworkTime:
    """`+CCLK: "yy/MM/dd,hh:mm:ss±zz"`: local time, zone in quarter hours (negative zones
    too). Quotes are optional; a missing zone gives UTC with `utc_offset` None."""
    line = single_line(text, "+CCLK")
    value, rest = quoted_value(payload(line, "+CCLK"), "+CCLK", line)
    if rest:
        match = re.fullmatch(r",\s*(\d)", rest)
        if match is None:
            raise ParseError("+CCLK", line, "unexpected text after the time")
        value = f"{value},{match.group(1)}"
    return parse_time_value(value, "+CCLK", line)


# --- packet domain: +CGDCONT (10.1.1), +CGACT (10.1.10), +CGPADDR (10.1.14) --------------


@dataclass(frozen=True, slots=True)
class PdpContext:
    """One `+CGDCONT?` line. `apn` and `address` are None when empty (or all zeros)."""

    cid: int
    pdp_type: str
    apn: str | None
    address: str | None


@dataclass(frozen=True, slots=True)
class PdpContextState:
    """One `+CGACT?` line."""

    cid: int
    active: bool


@dataclass(frozen=True, slots=True)
class PdpAddress:
    """One `+CGPADDR` line: the context's IPv4 and/or IPv6 address (None if not assigned)."""

    cid: int
    ipv4: ipaddress.IPv4Address | None
    ipv6: ipaddress.IPv6Address | None


def parse_pdp_address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A PDP address as TS 27.007 writes it: dotted IPv4, IPv6 as 16 dot-separated decimal
    octets (the default) or colon notation (after `+CGPIAF`). Empty or unspecified
    (all-zero) addresses are None; anything else unparsable is a `ValueError`."""
    text = value.strip().strip('"').strip()
    if not text:
        return None
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    if ":" in text:
        address = ipaddress.IPv6Address(text)
    else:
        parts = text.split(".")
        if len(parts) == 4:
            address = ipaddress.IPv4Address(text)
        elif len(parts) == 16 and all(p.isdigit() and int(p) <= 255 for p in parts):
            address = ipaddress.IPv6Address(bytes(int(p) for p in parts))
        else:
            raise ValueError(f"not an IPv4 or IPv6 address: {value!r}")
    return None if address.is_unspecified else address


def _prefixed_lines(text: str, prefix: str) -> list[tuple[str, list[Field]]]:
    return [(line, split_fields(payload(line, prefix), prefix, line))
            for line in response_lines(text)]


#: `<PDP_type>` values of TS 27.007 clause 10.1.1.
PDP_TYPES: Final = frozenset({"IP", "IPV6", "IPV4V6", "PPP", "X.25", "OSPIH", "NON-IP",
                              "ETHERNET", "UNSTRUCTURED"})


def parse_cgdcont(text: str) -> tuple[PdpContext, ...]:
    """`+CGDCONT: <cid>,<PDP_type>,<APN>,<PDP_addr>,...` lines (empty response: no contexts)."""
    contexts: list[PdpContext] = []
    for line, fields in _prefixed_lines(text, "+CGDCONT"):
        if len(fields) < 2:
            raise ParseError("+CGDCONT", line, "expected <cid>,<PDP_type>,...")
        cid = to_int(fields[0].text, "+CGDCONT", line, "<cid>")
        if fields[1].text.upper() not in PDP_TYPES:
            raise ParseError("+CGDCONT", line, f"unknown <PDP_type> {fields[1].text!r}")
        address = fields[3].text if len(fields) > 3 else ""
        if address:
            try:
                if parse_pdp_address(address) is None:
                    address = ""
            except ValueError:
                pass  # keep what the modem said; +CGDCONT addresses are informational
        contexts.append(PdpContext(
            cid=cid,
            pdp_type=fields[1].text.upper(),
            apn=(fields[2].text or None) if len(fields) > 2 else None,
            address=address or None,
        ))
    return tuple(contexts)


def parse_cgact(text: str) -> tuple[PdpContextState, ...]:
    """`+CGACT: <cid>,<state>` lines (empty response: no contexts)."""
    states: list[PdpContextState] = []
    for line, fields in _prefixed_lines(text, "+CGACT"):
        if len(fields) != 2:
            raise ParseError("+CGACT", line, "expected <cid>,<state>")
        state = to_int(fields[1].text, "+CGACT", line, "<state>")
        if state not in (0, 1):
            raise ParseError("+CGACT", line, f"<state> {state} is not 0 or 1")
        states.append(PdpContextState(cid=to_int(fields[0].text, "+CGACT", line, "<cid>"),
                                      active=state == 1))
    return tuple(states)


def parse_cgpaddr(text: str) -> tuple[PdpAddress, ...]:
    """`+CGPADDR: <cid>[,<PDP_addr_1>[,<PDP_addr_2>]]` lines; an IPV4V6 context lists both."""
    result: list[PdpAddress] = []
    for line, fields in _prefixed_lines(text, "+CGPADDR"):
        cid = to_int(fields[0].text, "+CGPADDR", line, "<cid>")
        if len(fields) > 3:
            raise ParseError("+CGPADDR", line, "more than two addresses")
        v4: ipaddress.IPv4Address | None = None
        v6: ipaddress.IPv6Address | None = None
        for field in fields[1:]:
            try:
                address = parse_pdp_address(field.text)
            except ValueError as exc:
                raise ParseError("+CGPADDR", line, str(exc)) from None
            if isinstance(address, ipaddress.IPv4Address):
                if v4 is not None:
                    raise ParseError("+CGPADDR", line, "two IPv4 addresses")
                v4 = address
            elif isinstance(address, ipaddress.IPv6Address):
                if v6 is not None:
                    raise ParseError("+CGPADDR", line, "two IPv6 addresses")
                v6 = address
        result.append(PdpAddress(cid=cid, ipv4=v4, ipv6=v6))
    return tuple(result)


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


# --- carriers ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Carrier:
    """A mobile operator: `group` is the company key shared with its wired business."""

    group: str
    name: str
    country: str


_KT = Carrier("kt", "KT", "KR")
_SKT = Carrier("skt", "SK Telecom", "KR")
_LGU = Carrier("lguplus", "LG U+", "KR")

#: MCC+MNC -> operator. Korea per the brief and the public ITU-T E.212 derived lists
#: (Wikipedia "Mobile Network Codes in ITU region 4xx"); the others from the same lists and
#: ModemManager's +COPS test strings (310410 AT&T, 310260 T-Mobile).
CARRIERS: Final[Mapping[str, Carrier]] = {
    "45002": _KT,
    "45004": _KT,
    "45008": _KT,
    "45005": _SKT,
    "45011": _SKT,
    "45006": _LGU,
    "310410": Carrier("att", "AT&T", "US"),
    "310260": Carrier("tmobile", "T-Mobile US", "US"),
    "311480": Carrier("verizon", "Verizon", "US"),
    "44010": Carrier("docomo", "NTT docomo", "JP"),
    "44020": Carrier("softbank", "SoftBank", "JP"),
    "44050": Carrier("kddi", "KDDI (au)", "JP"),
    "46000": Carrier("chinamobile", "China Mobile", "CN"),
    "26201": Carrier("telekom", "Telekom Deutschland", "DE"),
    "23415": Carrier("vodafone", "Vodafone UK", "GB"),
    "50501": Carrier("telstra", "Telstra", "AU"),
    "50502": Carrier("optus", "Optus", "AU"),
}

#: Wired-ISP names as shop owners type them -> carrier group. SK Broadband is SK Telecom's
#: fixed-line company (same group, shared backbone); LG U+ runs both businesses itself.
WIRED_ALIASES: Final[Mapping[str, str]] = {
    "kt": "kt", "ktcorp": "kt", "ktcorporation": "kt", "koreatelecom": "kt", "olleh": "kt",
    "skt": "skt", "sktelecom": "skt", "skbroadband": "skt",
    "lgu": "lguplus", "lguplus": "lguplus", "lgtelecom": "lguplus", "uplus": "lguplus",
    "att": "att", "verizon": "verizon", "tmobile": "tmobile", "docomo": "docomo",
    "nttdocomo": "docomo", "softbank": "softbank", "kddi": "kddi", "au": "kddi",
    "chinamobile": "chinamobile", "telekom": "telekom", "deutschetelekom": "telekom",
    "vodafone": "vodafone", "telstra": "telstra", "optus": "optus",
}


def _alias_key(name: str) -> str:
    # "LG U+" / "LGU+" / "LG Uplus" -> "lguplus"; "KT Corp." -> "ktcorp"; "AT&T" -> "att"
    return re.sub(r"[^a-z0-9]", "", name.lower().replace("+", "plus"))


def carrier_for(mcc_mnc: str) -> Carrier | None:
    """The operator of an MCC/MNC (`"45005"`, `"450-05"`); None if unknown or malformed."""
    try:
        mcc, mnc = split_mcc_mnc(mcc_mnc)
    except ValueError:
        return None
    return CARRIERS.get(mcc + mnc)


def wired_carrier_group(name: str) -> str | None:
    """The carrier group of a wired-ISP name, case/punctuation-insensitive, or None."""
    return WIRED_ALIASES.get(_alias_key(name))


def same_carrier(wired_carrier_name: str, mcc_mnc: str) -> bool | None:
    """Whether the LTE network `mcc_mnc` belongs to the same carrier as the wired uplink
    (a shared failure domain). None when either side is not known."""
    group = wired_carrier_group(wired_carrier_name)
    carrier = carrier_for(mcc_mnc)
    if group is None or carrier is None:
        return None
    return carrier.group == group


# --- why it cannot connect: +CFUN (clause 8.2), +CEER (6.10), +CTZE (8.41), +CGEV (10.1.19)


class RadioMode(StrEnum):
    """`<fun>` of `+CFUN?`: what the radio is doing."""

    MINIMUM = "minimum"      # 0: radio (and often SIM) off
    FULL = "full"            # 1
    TX_OFF = "tx_off"        # 2
    RX_OFF = "rx_off"        # 3
    AIRPLANE = "airplane"    # 4: radio off, SIM on
    OTHER = "other"          # 5..: vendor specific (SIMCom 7 offline, Novatel 19 ...)

    @property
    def radio_on(self) -> bool:
        return self is RadioMode.FULL or self is RadioMode.OTHER


_RADIO_BY_FUN: Final[Mapping[int, RadioMode]] = {
    0: RadioMode.MINIMUM, 1: RadioMode.FULL, 2: RadioMode.TX_OFF, 3: RadioMode.RX_OFF,
    4: RadioMode.AIRPLANE,
}


def parse_cfun(text: str) -> RadioMode:
    """`+CFUN: <fun>[,<rst>]` (the read answer and Quectel's URC after a change)."""
    line = single_line(text, "+CFUN")
    fields = split_fields(payload(line, "+CFUN"), "+CFUN", line)
    fun = to_int(fields[0].text, "+CFUN", line, "<fun>")
    if fun < 0:
        raise ParseError("+CFUN", line, f"<fun> {fun} is negative")
    return _RADIO_BY_FUN.get(fun, RadioMode.OTHER)


def parse_ceer(text: str) -> str | None:
    """`AT+CEER`: the extended error report, a free text (`+CEER: No cause information
    available`, an Altair's `+CEER: EPS_AND_NON_EPS_SERVICES_NOT_ALLOWED`, a MediaTek's
    `+CEER: 0,NONE`). None when it reports nothing (an empty answer, `+CEER:` alone,
    `NONE`, "no cause information"); a line without `+CEER:` is a `ParseError`."""
    lines = response_lines(text)
    if not lines:
        return None
    if len(lines) != 1:
        raise ParseError("+CEER", text, f"expected one line, got {len(lines)}")
    value = payload(lines[0], "+CEER").strip().strip('"').strip()
    parts = [p.strip().strip('"') for p in value.split(",")]
    if parts and parts[0].isdigit() and len(parts) > 1:  # "<cause>,<text>" forms
        value = ",".join(parts[1:]).strip()
    if not value or value.upper() in ("NONE", "NO CAUSE", "NO REPORT AVAILABLE") \
            or "no cause information" in value.lower():
        return None
    return value


@dataclass(frozen=True, slots=True)
class TimeZoneReport:
    """`+CTZE: "<tz>",<dst>[,"<time>"]`: the network's zone (quarter hours, DST included)
    and, when given, its universal time."""

    utc_offset: timedelta
    dst_hours: int
    time: datetime | None


def parse_ctze(text: str) -> TimeZoneReport:
    """The time zone URC (`AT+CTZR=2`). The time is UTC (the network's universal time),
    returned in the reported zone."""
    line = single_line(text, "+CTZE")
    fields = split_fields(payload(line, "+CTZE"), "+CTZE", line)
    if len(fields) < 2:
        raise ParseError("+CTZE", line, 'expected "<tz>",<dst>[,"<time>"]')
    quarters = to_int(fields[0].text.replace(" ", ""), "+CTZE", line, "<tz>")
    dst = to_int(fields[1].text, "+CTZE", line, "<dst>")
    try:
        zone = quarter_hours(quarters)
    except ValueError as exc:
        raise ParseError("+CTZE", line, str(exc)) from None
    if not 0 <= dst <= 2:
        raise ParseError("+CTZE", line, f"<dst> {dst} is outside 0..2")
    moment: datetime | None = None
    if len(fields) >= 3 and fields[2].text:
        value = ",".join(f.text for f in fields[2:])
        moment = parse_time_value(value, "+CTZE", line, utc=True).time.astimezone(zone)
    return TimeZoneReport(utc_offset=zone.utcoffset(None), dst_hours=dst, time=moment)


class PacketEvent(StrEnum):
    """What a `+CGEV:` URC reports (the kinds that matter for the data call)."""

    NW_DEACT = "nw_deact"        # the network deactivated a context (PDN, PDP, secondary)
    ME_DEACT = "me_deact"        # the modem deactivated it
    NW_DETACH = "nw_detach"      # the network detached the modem
    ME_DETACH = "me_detach"
    NW_ACT = "nw_act"
    ME_ACT = "me_act"
    REJECT = "reject"
    OTHER = "other"              # REACT, MODIFY, CLASS ...


@dataclass(frozen=True, slots=True)
class PacketDomainEvent:
    """A `+CGEV:` event; `cid` None when the event concerns no (or every) context."""

    kind: PacketEvent
    cid: int | None


_CGEV: Final = re.compile(r"\s*(?:\+CGEV:\s*)?(NW|ME)?\s*(PDN\s+)?(DEACT|ACT|DETACH|REJECT|"
                          r"REACT|MODIFY|CLASS)\b\s*(.*)$", re.IGNORECASE)


def parse_cgev(text: str) -> PacketDomainEvent:
    """`+CGEV:` in its TS 27.007 forms (ModemManager's `mm_3gpp_parse_cgev_indication_*`):
    `NW PDN DEACT <cid>`, `NW DEACT <PDP_type>,<PDP_addr>[,<cid>]`, `NW DEACT <p_cid>,
    <cid>,<event_type>` (secondary: the second number is the context), `NW DETACH`, and
    the `ME` and activation counterparts."""
    line = single_line(text, "+CGEV")
    match = _CGEV.match(line)
    if match is None:
        raise ParseError("+CGEV", line, "not a packet domain event")
    who = (match.group(1) or "").upper()
    pdn = match.group(2) is not None
    verb = match.group(3).upper()
    args = [a.strip() for a in match.group(4).split(",")] if match.group(4).strip() else []
    kinds = {("NW", "DEACT"): PacketEvent.NW_DEACT, ("ME", "DEACT"): PacketEvent.ME_DEACT,
             ("NW", "DETACH"): PacketEvent.NW_DETACH, ("ME", "DETACH"): PacketEvent.ME_DETACH,
             ("NW", "ACT"): PacketEvent.NW_ACT, ("ME", "ACT"): PacketEvent.ME_ACT,
             ("", "REJECT"): PacketEvent.REJECT}
    kind = kinds.get((who, verb), PacketEvent.OTHER)
    cid: int | None = None
    if args and args[0].isdigit():
        # "PDN DEACT <cid>[,<reason>...]" or secondary "<p_cid>,<cid>,<event_type>"
        cid = int(args[0]) if pdn or len(args) < 3 else \
            (int(args[1]) if args[1].isdigit() else None)
    elif len(args) >= 3 and args[2].isdigit():  # "<PDP_type>,<PDP_addr>,<cid>"
        cid = int(args[2])
    return PacketDomainEvent(kind=kind, cid=cid)
