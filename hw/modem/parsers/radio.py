"""Why the modem cannot connect, as it says itself (3GPP TS 27.007): the radio mode of
`+CFUN` (clause 8.2) and the extended error report `+CEER` (clause 6.10). Pure, like
every module of `hw.modem.parsers`.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final

from hw.modem.errors import ParseError
from hw.modem.parsers.tokens import (
    line_fields,
    payload,
    response_lines,
    to_int,
)

# --- why it cannot connect: +CFUN (clause 8.2), +CEER (6.10) -----------------------------


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
    line, fields = line_fields(text, "+CFUN")
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
