"""hw.modem.parsers.simcom against tables of real responses (each row names its source)."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hw.modem.errors import ParseError
from hw.modem.parsers.clock import NetworkTime, parse_cclk
from hw.modem.parsers.registration import AccessTechnology
from hw.modem.parsers.signal import parse_csq
from hw.modem.parsers.simcom import (
    SimcomNetworkMode,
    SimcomNtpResult,
    SimcomNtpServer,
    SimcomSystemInfo,
    cpsi_sinr_db,
    parse_ciccid,
    parse_cnsmod,
    parse_cntp_result,
    parse_cntp_server,
    parse_cpsi,
)

SIM7600 = "SIMCom SIM7500_SIM7600 Series AT Command Manual V1.08"
A = AccessTechnology


def lte(mcc: str, mnc: str, tac: int, cell: int, pci: int, band: str, earfcn: int, dl: float,
        ul: float, rsrq: float, rsrp: float, rssi: float, rssnr: int, sinr: float | None,
        mode: str = "LTE") -> SimcomSystemInfo:
    return SimcomSystemInfo(mode, "Online", mcc, mnc, tac, cell, pci, band, earfcn, dl, ul, rsrq,
                            rsrp, rssi, rssnr, sinr)


def bare(mode: str, mcc: str | None = None, mnc: str | None = None, area: int | None = None,
         cell: int | None = None) -> SimcomSystemInfo:
    return SimcomSystemInfo(mode, "Online", mcc, mnc, area, cell, None, None, None, None, None,
                            None, None, None, None, None)


# --- +CPSI ------------------------------------------------------------------------------

CPSI_ROWS = [
    ("brief (SK Telecom); units per the manual: RSRQ/RSRP/RSSI in tenths",
     "+CPSI: LTE,Online,450-05,0x2B5C,27447834,123,EUTRAN-BAND3,1550,5,5,-95,-1100,-650,12",
     lte("450", "05", 0x2B5C, 27447834, 123, "EUTRAN-BAND3", 1550, 20.0, 20.0, -9.5, -110.0,
         -65.0, 12, 4.0)),
    ("SIM7600E-H capture in a public README (Swiss operator 228-02)",
     "+CPSI: LTE,Online,228-02,0x9CA4,20964868,46,EUTRAN-BAND20,6200,3,3,-178,-1089,-742,8",
     lte("228", "02", 0x9CA4, 20964868, 46, "EUTRAN-BAND20", 6200, 10.0, 10.0, -17.8, -108.9,
         -74.2, 8, -4.0)),
    ("ArduPilot AP_Scripting/drivers/LTE_modem.lua check_CPSI example1 (SIM7600)",
     "+CPSI: LTE,Online,505-02,0xCBE8,36519691,101,EUTRAN-BAND3,1800,5,5,-147,-1143,-764,11",
     lte("505", "02", 0xCBE8, 36519691, 101, "EUTRAN-BAND3", 1800, 20.0, 20.0, -14.7, -114.3,
         -76.4, 11, 2.0)),
    ("OVMS modem poller comment (SIM7600, Vodafone DE)",
     "+CPSI: LTE,Online,262-02,0xB0F5,13179412,448,EUTRAN-BAND1,100,4,4,-122,-1184,-874,9",
     lte("262", "02", 0xB0F5, 13179412, 448, "EUTRAN-BAND1", 100, 15.0, 15.0, -12.2, -118.4,
         -87.4, 9, -2.0)),
    ("public field notes, SIM7600 in Indonesia (510-10, band 40)",
     "+CPSI: LTE,Online,510-10,0x0830,110132496,22,EUTRAN-BAND40,39092,3,3,-200,-1057,-660,4",
     lte("510", "10", 0x0830, 110132496, 22, "EUTRAN-BAND40", 39092, 10.0, 10.0, -20.0, -105.7,
         -66.0, 4, -12.0)),
    ("SIM7600 fixture in a public C test (T-Mobile US, band 12)",
     "+CPSI: LTE,Online,310-260,0x3F29,89815063,125,EUTRAN-BAND12,5035,2,2,-196,-1167,-832,7",
     lte("310", "260", 0x3F29, 89815063, 125, "EUTRAN-BAND12", 5035, 5.0, 5.0, -19.6, -116.7,
         -83.2, 7, -6.0)),
    ("public C++ test 'CPSI LTE serving FULL fields' (250-20)",
     "+CPSI: LTE,Online,250-20,0x4D07,200468759,468,EUTRAN-BAND7,3400,3,3,-69,-900,-661,20",
     lte("250", "20", 0x4D07, 200468759, 468, "EUTRAN-BAND7", 3400, 10.0, 10.0, -6.9, -90.0,
         -66.1, 20, 20.0)),
    ("ArduPilot LTE_modem.lua example2: SIM7000 'LTE CAT-M1' reports whole units",
     "+CPSI: LTE CAT-M1,Online,505-01,0x2036,134523149,238,EUTRAN-BAND28,9410,5,5,-20,-116,-82,6",
     lte("505", "01", 0x2036, 134523149, 238, "EUTRAN-BAND28", 9410, 20.0, 20.0, -20.0, -116.0,
         -82.0, 6, None, mode="LTE CAT-M1")),
    ("public field notes, SIM7600 without coverage", "+CPSI: NO SERVICE,Online",
     bare("NO SERVICE")),
    ("scattym/lua-tool-simreporter ati_parser.lua comment (WCDMA)",
     "+CPSI: WCDMA,Online,505-01,0x0152,14302219,WCDMA 850,214,4436,0,12.5,83,23,36,500",
     bare("WCDMA", "505", "01", 0x0152, 14302219)),
]


@pytest.mark.parametrize(("source", "text", "expected"), CPSI_ROWS)
def test_cpsi_table(source: str, text: str, expected: SimcomSystemInfo) -> None:
    got = parse_cpsi(text)
    def exact(info: SimcomSystemInfo) -> SimcomSystemInfo:
        return replace(info, rsrq_db=None, rsrp_dbm=None, rssi_dbm=None, sinr_db=None)

    assert exact(got) == exact(expected), source
    for name in ("rsrq_db", "rsrp_dbm", "rssi_dbm", "sinr_db"):
        want = getattr(expected, name)
        assert getattr(got, name) == (None if want is None else pytest.approx(want)), (source, name)


def test_cpsi_helpers() -> None:
    info = parse_cpsi(CPSI_ROWS[0][1])
    assert info.lte_band == 3 and info.has_service
    none = parse_cpsi("+CPSI: NO SERVICE,Online")
    assert none.lte_band is None and not none.has_service


@given(st.integers(0, 24))
def test_cpsi_sinr_is_monotonic_two_db_steps(rssnr: int) -> None:
    low, high = cpsi_sinr_db(rssnr), cpsi_sinr_db(rssnr + 1)
    assert low is not None and high == low + 2 and -20 <= low < high <= 30
    assert cpsi_sinr_db(rssnr + 26) is None


@pytest.mark.parametrize("text", [
    "+CPSI: LTE,Online,450-05,0x2B5C,27447834,123,EUTRAN-BAND3,1550,5,5,-95,-1100,-650",  # 13
    "+CPSI: LTE,Online,SKT,0x2B5C,27447834,123,EUTRAN-BAND3,1550,5,5,-95,-1100,-650,12",
    "+CPSI: LTE,Online,450-05,0xZZ,27447834,123,EUTRAN-BAND3,1550,5,5,-95,-1100,-650,12",
    "+CPSI: LTE,Online,450-05",
    "+CPSI: ",
    "+CSQ: 19,99",
])
def test_cpsi_malformed(text: str) -> None:
    with pytest.raises(ParseError) as err:
        parse_cpsi(text)
    assert repr(text.strip()) in str(err.value)


@given(st.text(max_size=80))
def test_cpsi_arbitrary_text_never_crashes(text: str) -> None:
    try:
        result = parse_cpsi("+CPSI: LTE,Online," + text)
    except ParseError as exc:  # the one refusal allowed; anything else fails the test
        assert exc.line  # it names the input it refused
    else:
        assert result is not None


# --- +CNSMOD ----------------------------------------------------------------------------

@pytest.mark.parametrize(("source", "text", "expected"), [
    (f"{SIM7600} AT+CNSMOD? (LTE); ModemManager simtech_act_to_mm_act 8", "+CNSMOD: 0,8",
     SimcomNetworkMode(False, 8, "LTE", A.LTE)),
    (f"{SIM7600} AT+CNSMOD? (no service)", "+CNSMOD: 0,0",
     SimcomNetworkMode(False, 0, "no service", None)),
    (f"{SIM7600} AT+CNSMOD? (reporting on, WCDMA)", "+CNSMOD: 1,4",
     SimcomNetworkMode(True, 4, "WCDMA", A.UMTS)),
    (f"{SIM7600} URC +CNSMOD: <stat> (HSPA)", "+CNSMOD: 7",
     SimcomNetworkMode(None, 7, "HSPA (HSDPA and HSUPA, WCDMA)", A.HSPA)),
    (f"{SIM7600} AT+CNSMOD? (EGPRS)", "+CNSMOD: 0,3",
     SimcomNetworkMode(False, 3, "EGPRS (EDGE)", A.EDGE)),
])
def test_cnsmod_table(source: str, text: str, expected: SimcomNetworkMode) -> None:
    assert parse_cnsmod(text) == expected, source


@pytest.mark.parametrize("text", ["+CNSMOD: 0,17", "+CNSMOD: 2,8", "+CNSMOD: 0,8,1", "+CNSMOD: x"])
def test_cnsmod_malformed(text: str) -> None:
    with pytest.raises(ParseError, match="CNSMOD"):
        parse_cnsmod(text)


# --- +CNTP / +CCLK ----------------------------------------------------------------------

def test_cntp_server() -> None:
    # SIMCom A76XX AT Command Manual V1.09 clause 14 example: AT+CNTP="120.25.115.20",32
    assert parse_cntp_server('+CNTP: "120.25.115.20",32') == SimcomNtpServer(
        "120.25.115.20", timedelta(hours=8))
    assert parse_cntp_server('+CNTP: "pool.ntp.org",36').utc_offset == timedelta(hours=9)
    for bad in ('+CNTP: pool.ntp.org,32', '+CNTP: "pool.ntp.org",200', '+CNTP: "pool.ntp.org"'):
        with pytest.raises(ParseError, match="CNTP"):
            parse_cntp_server(bad)


@pytest.mark.parametrize(("source", "text", "expected"), [
    ("SIMCom A76XX manual V1.09 §14.3.2 (shared with SIM7600)", "+CNTP: 0",
     SimcomNtpResult(0, "Operation succeeded")),
    ("SIMCom A76XX manual V1.09 §14.3.2", "+CNTP: 4", SimcomNtpResult(4, "Network error")),
    ("SIMCom A76XX manual V1.09 §14.3.2", "+CNTP: 6", SimcomNtpResult(6, "Time out error")),
    ("code outside the table", "+CNTP: 9", SimcomNtpResult(9, None)),
])
def test_cntp_result_table(source: str, text: str, expected: SimcomNtpResult) -> None:
    got = parse_cntp_result(text)
    assert got == expected, source
    assert got.succeeded is (expected.code == 0)


def test_cclk_on_simcom() -> None:
    # OVMS modem poller comment, SIM7600 in Germany during summer time (+08 quarters = +2 h)
    got = parse_cclk('+CCLK: "22/09/09,12:54:41+08"')
    assert got == NetworkTime(datetime(2022, 9, 9, 12, 54, 41,
                                       tzinfo=timezone(timedelta(hours=2))),
                              timedelta(hours=2), None)
    # and the signal line of the same poll
    assert parse_csq("+CSQ: 13,99").rssi_dbm == -87


# --- +CICCID ----------------------------------------------------------------------------

@pytest.mark.parametrize(("source", "text", "expected"), [
    (f"{SIM7600} AT+CICCID format; ICCID from ModemManager test_iccid_parse_quoted_unswapped_20",
     "+ICCID: 89324102234690160476", "89324102234690160476"),
    (f"{SIM7600} AT+CICCID format; ICCID from ModemManager test_iccid_parse_swap_19 (swapped)",
     "+ICCID: 984402003576012594F9", "8944200053671052499"),
])
def test_ciccid_table(source: str, text: str, expected: str) -> None:
    assert parse_ciccid(text) == expected, source


def test_ciccid_malformed() -> None:
    for text in ("+ICCID: 98231420326pl9614067", "+QCCID: 89324102234690160476"):
        with pytest.raises(ParseError, match="ICCID"):
            parse_ciccid(text)
