"""What the simulated world holds: the SIM cards in the slots (`SimCard`, with presets for
the three Korean carriers, their networks' resolvers included) and the radio conditions
(`Signal`, in physical units, from which every AT encoding is derived). Plain mutable
data: tests change them at run time."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["OPERATORS", "Signal", "SimCard"]


@dataclass
class SimCard:
    """A SIM in a slot. Mutable: PIN/PUK tries left survive reboots, as on a real card."""

    present: bool = True
    operator: str = "KT"  # long alphanumeric name, as AT+COPS? reports it
    short_name: str = "KT"
    mcc: str = "450"
    mnc: str = "08"
    imsi: str = "450081234567890"
    iccid: str = "89820812345678901234"
    pin: str | None = None  # None: no PIN lock
    puk: str = "12345678"
    pin_tries: int = 3
    puk_tries: int = 10
    roaming: bool = False
    tac: int = 0x1A2B
    cell_id: int = 0x1A2D001
    pci: int = 123
    earfcn: int = 1550
    band: int = 3
    #: the resolvers the carrier's network gives a data call (`AT+CGCONTRDP`); KT's
    dns: tuple[str, ...] = ("168.126.63.1", "168.126.63.2")

    @property
    def plmn(self) -> str:
        return self.mcc + self.mnc

    @classmethod
    def preset(cls, carrier: str, **changes: Any) -> SimCard:
        """A SIM of `carrier` (a key of `OPERATORS`), with `changes` on top."""
        return cls(**{**_PRESETS[carrier], **changes})

    @classmethod
    def kt(cls, **changes: Any) -> SimCard:
        """A KT SIM (450-08)."""
        return cls.preset("KT", **changes)

    @classmethod
    def skt(cls, **changes: Any) -> SimCard:
        """An SK Telecom SIM (450-05)."""
        return cls.preset("SKT", **changes)

    @classmethod
    def lgu(cls, **changes: Any) -> SimCard:
        """An LG U+ SIM (450-06)."""
        return cls.preset("LGU", **changes)

    @classmethod
    def absent(cls) -> SimCard:
        """An empty slot."""
        return cls(present=False)


#: What each carrier's SIM and network differ in from `SimCard`'s defaults (which are KT's).
_PRESETS: dict[str, dict[str, Any]] = {
    "KT": {},
    "SKT": {"operator": "SKTelecom", "short_name": "SKT", "mnc": "05",
            "imsi": "450051234567890", "iccid": "89820512345678901234", "tac": 0x2B3C,
            "cell_id": 0x2B3E002, "pci": 211, "earfcn": 1350, "band": 3,
            "dns": ("210.220.163.82", "219.250.36.130")},
    "LGU": {"operator": "LG U+", "short_name": "LGU+", "mnc": "06",
            "imsi": "450061234567890", "iccid": "89820612345678901234", "tac": 0x3C4D,
            "cell_id": 0x3C4F003, "pci": 307, "earfcn": 2600, "band": 7,
            "dns": ("164.124.101.2", "203.248.252.2")},
}

OPERATORS: dict[str, Callable[..., SimCard]] = {
    "KT": SimCard.kt,
    "SKT": SimCard.skt,
    "LGU": SimCard.lgu,
}


@dataclass
class Signal:
    """Radio conditions in physical units; the AT encodings are derived from these."""

    rssi_dbm: int = -65
    rsrp_dbm: int = -95
    rsrq_db: int = -10
    sinr_db: int = 12

    @property
    def csq(self) -> int:
        """27.007 `+CSQ` <rssi> index: 0 (-113 dBm or less) .. 31 (-51 dBm or more)."""
        return max(0, min(31, (self.rssi_dbm + 113) // 2))

    @property
    def cesq_rsrq(self) -> int:
        return max(0, min(34, int((self.rsrq_db + 20) * 2)))

    @property
    def cesq_rsrp(self) -> int:
        return max(0, min(97, self.rsrp_dbm + 141))

    @property
    def qeng_sinr(self) -> int:
        """EC2x `+QENG` LTE SINR: (dB + 20) / 2, 0..25 (the convention the parsers use)."""
        return max(0, min(25, round((self.sinr_db + 20) / 2)))

    @property
    def qcsq_sinr(self) -> int:
        """`+QCSQ` reports SINR in 1/5 dB from -20 dB: 0..250."""
        return max(0, min(250, (self.sinr_db + 20) * 5))
