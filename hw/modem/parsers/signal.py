"""Signal quality parsers (3GPP TS 27.007): `+CSQ` (clause 8.5) and `+CESQ` (clause
8.69), converted to physical units. Pure, like every module of `hw.modem.parsers`.
"""

from __future__ import annotations

from dataclasses import dataclass

from hw.modem.errors import ParseError
from hw.modem.parsers.tokens import int_fields

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
    line, (rssi, ber) = int_fields(text, "+CSQ", "<rssi>", "<ber>")
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
    line, (rxlev, ber, rscp, ecno, rsrq, rsrp) = int_fields(
        text, "+CESQ", "<rxlev>", "<ber>", "<rscp>", "<ecno>", "<rsrq>", "<rsrp>")
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
