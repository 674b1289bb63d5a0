"""SIMCom SIM7500/SIM7600 profile: +CPSI signal, +CICCID; time, data and registration are
standard (`+CCLK?` with `AT+CTZU=1`, `+CGACT`). No SIM slot switching: none is documented
for the SIM7600 (`NotSupported`).

Sources: SIMCom SIM7500_SIM7600 Series AT Command Manual (+CPSI, +CICCID, +CTZU).
"""

from __future__ import annotations

from typing import ClassVar

from hw.modem.errors import CommandError
from hw.modem.parsers.registration import AccessTechnology
from hw.modem.parsers.signal import SignalQuality, parse_csq
from hw.modem.parsers.simcom import SimcomSystemInfo, parse_ciccid, parse_cpsi
from hw.modem.profiles.generic import AtPort, GenericProfile, InitCommand, info_text
from hw.modem.status import SignalReading

__all__ = ["SimcomProfile", "rat_from_cpsi", "signal_from_cpsi"]


def rat_from_cpsi(system_mode: str) -> AccessTechnology | None:
    """`+CPSI` `<System Mode>` -> access technology (`NO SERVICE`, CDMA...: None)."""
    mode = system_mode.upper()
    if mode == "LTE" or mode.startswith("LTE CAT-M"):
        return AccessTechnology.LTE
    if mode.startswith("LTE NB"):
        return AccessTechnology.LTE_NB_IOT
    if mode == "WCDMA":
        return AccessTechnology.UMTS
    if mode == "GSM":
        return AccessTechnology.GSM
    return None


def _whole(value: float | None) -> int | None:
    return None if value is None else round(value)


def signal_from_cpsi(info: SimcomSystemInfo, csq: SignalQuality | None) -> SignalReading:
    """+CPSI (LTE: RSRP, RSRQ, RSSI, SINR) with +CSQ filling RSSI where +CPSI has none."""
    rssi = _whole(info.rssi_dbm)
    if rssi is None and csq is not None:
        rssi = csq.rssi_dbm
    return SignalReading(
        rssi_dbm=rssi,
        rsrp_dbm=info.rsrp_dbm,
        rsrq_db=info.rsrq_db,
        sinr_db=info.sinr_db,
        rat=rat_from_cpsi(info.system_mode) if info.has_service else None,
        source="+CPSI" if csq is None else "+CPSI/+CSQ",
    )


class SimcomProfile(GenericProfile):
    """SIMCom SIM7600 and family."""

    name: ClassVar[str] = "simcom"
    iccid_command: ClassVar[str] = "AT+CICCID"
    iccid_prefixes: ClassVar[tuple[str, ...]] = ("+ICCID:",)

    def init_commands(self) -> tuple[InitCommand, ...]:
        """Generic ones, plus `AT+CTZU=1` so the RTC (+CCLK) follows network time."""
        return (*super().init_commands(), ("AT+CTZU=1", False))

    async def read_iccid(self, at: AtPort) -> str:
        response = await at.command(self.iccid_command, timeout=self.timeouts.command,
                                    prefix=self.iccid_prefixes)
        return parse_ciccid(info_text(response, "+ICCID:"))

    async def read_signal(self, at: AtPort) -> SignalReading:
        """`AT+CPSI?`; `AT+CSQ` too when +CPSI carries no RSSI (not on LTE); firmware
        without +CPSI: the generic +CSQ/+CESQ."""
        try:
            response = await at.command("AT+CPSI?", timeout=self.timeouts.command)
        except CommandError:
            return await super().read_signal(at)
        info = parse_cpsi(info_text(response, "+CPSI:"))
        csq: SignalQuality | None = None
        if info.rssi_dbm is None:
            answer = await at.command("AT+CSQ", timeout=self.timeouts.command)
            csq = parse_csq(info_text(answer, "+CSQ:"))
        return signal_from_cpsi(info, csq)
