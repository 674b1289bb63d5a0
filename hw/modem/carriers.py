"""Carriers: which mobile operator an MCC/MNC is, and which wired ISP belongs to the same
company (one failure domain for both uplinks).

Product policy, not 3GPP: the tables are what this product knows of the markets it ships
to (Korea first), kept apart from the protocol parsers in `hw.modem.parsers`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from hw.modem.parsers.registration import split_mcc_mnc

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
