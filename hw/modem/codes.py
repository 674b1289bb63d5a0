"""The +CME ERROR (3GPP TS 27.007 clause 9.2) and +CMS ERROR (TS 27.005 clause 3.2.5)
codes and their parsers.

Below both the framing (`hw.modem.framing`, which reads final result codes) and the
response parsers: neither layer owns the tables, so both import them from here.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final

from hw.modem.errors import ParseError
from hw.modem.parsers.tokens import payload, single_line

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


def _parse_error_result(
    text: str, prefix: str, code_of: Callable[[str], int | None],
    message_of: Callable[[int], str | None],
) -> tuple[int | None, str | None, bool]:
    """(code, message, verbose) of a `+CME ERROR:` / `+CMS ERROR:` line: the numeric form
    named through `message_of`, the verbose one numbered through `code_of`."""
    line = single_line(text, prefix)
    body = payload(line, prefix)
    if not body:
        raise ParseError(prefix, line, "no error code or text")
    if body.isdigit():
        return int(body), message_of(int(body)), False
    return code_of(body), body, True


def parse_cme_error(text: str) -> CmeError:
    """`+CME ERROR: 10` or `+CME ERROR: SIM not inserted` (both mapped to code 10)."""
    code, message, verbose = _parse_error_result(text, "+CME ERROR", cme_error_code,
                                                 cme_error_message)
    return CmeError(code=code, message=message, verbose=verbose)


def parse_cms_error(text: str) -> CmsError:
    """`+CMS ERROR: 500` or its verbose text."""
    code, message, verbose = _parse_error_result(text, "+CMS ERROR", cms_error_code,
                                                 cms_error_message)
    return CmsError(code=code, message=message, verbose=verbose)
