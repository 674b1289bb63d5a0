"""hw.modem.parsers.quectel against tables of real responses (each row names its source)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hw.modem.errors import ParseError
from hw.modem.parsers.clock import NetworkTime
from hw.modem.parsers.quectel import (
    NetdevConnectType,
    QuectelNetdevStatus,
    QuectelNetworkInfo,
    QuectelServingCell,
    QuectelSignal,
    QuectelSimStatus,
    QuectelSysMode,
    QuectelUsbNet,
    parse_qccid,
    parse_qcfg_usbnet,
    parse_qcsq,
    parse_qdsim,
    parse_qeng_servingcell,
    parse_qlts,
    parse_qnetdevctl,
    parse_qnwinfo,
    parse_qsimstat,
    qcsq_sinr_db,
)

EC25 = "Quectel EC25&EC21 AT Commands Manual"
MMQ = "ModemManager src/plugins/quectel/tests/test-modem-helpers-quectel.c"
ARDU = "ArduPilot libraries/AP_Scripting/drivers/LTE_modem.lua check_QENG"
M = QuectelSysMode


def lte(rssi: int | None, rsrp: int, raw: int, db: float | None, rsrq: int,
        mode: QuectelSysMode = M.LTE) -> QuectelSignal:
    return QuectelSignal(mode, rssi, rsrp, raw, db, rsrq, None, None)


# --- +QCSQ ------------------------------------------------------------------------------

@pytest.mark.parametrize(("source", "text", "expected"), [
    ("forums.quectel.com 'AT+QCSQ command conversion on EG21-G' (positive RSSI = -77 dBm)",
     '+QCSQ: "LTE",77,-116,76,-17', lte(-77, -116, 76, -4.8, -17)),
    ("same thread, BG96 capture", '+QCSQ: "CAT-M1",-91,-129,67,-20',
     lte(-91, -129, 67, -6.6, -20, M.CAT_M)),
    ("Quectel BG77 capture in yaroc mini_call_home test", '+QCSQ: "NBIoT",-107,-134,35,-20',
     lte(-107, -134, 35, -13.0, -20, M.NB_IOT)),
    (f"{EC25} AT+QCSQ, no service form", '+QCSQ: "NOSERVICE"',
     QuectelSignal(M.NO_SERVICE, None, None, None, None, None, None, None)),
    (f"constructed per {EC25} AT+QCSQ GSM layout", '+QCSQ: "GSM",-69',
     QuectelSignal(M.GSM, -69, None, None, None, None, None, None)),
    (f"constructed per {EC25} AT+QCSQ WCDMA layout <rssi>,<rscp>,<ecio>",
     '+QCSQ: "WCDMA",-75,-78,-3',
     QuectelSignal(M.WCDMA, -75, None, None, None, None, -78, -3)),
    (f"constructed: {EC25} AT+QCSQ SINR 250 = +30 dB", '+QCSQ: "LTE",-52,-81,250,-10',
     lte(-52, -81, 250, 30.0, -10)),
    ("constructed: SINR outside 0..250 is kept raw, not converted", '+QCSQ: "LTE",-60,-90,255,-10',
     lte(-60, -90, 255, None, -10)),
])
def test_qcsq_table(source: str, text: str, expected: QuectelSignal) -> None:
    got = parse_qcsq(text)
    assert replace(got, sinr_db=None) == replace(expected, sinr_db=None), source
    if expected.sinr_db is None:
        assert got.sinr_db is None, source
    else:
        assert got.sinr_db == pytest.approx(expected.sinr_db), source


@given(st.integers(0, 249))
def test_qcsq_sinr_is_monotonic_fifths_of_a_db(raw: int) -> None:
    low, high = qcsq_sinr_db(raw), qcsq_sinr_db(raw + 1)
    assert low is not None and high is not None
    assert high - low == pytest.approx(0.2)
    assert -20.0 <= low < high <= 30.0


@pytest.mark.parametrize("text", [
    '+QCSQ: "LTE",-60,-90,100',        # LTE takes four values
    '+QCSQ: "GSM",-60,-90',            # GSM takes one
    '+QCSQ: "5G",-60',                 # unknown sysmode
    '+QCSQ: "LTE",-60,-90,x,-10',      # not a number
    '+CSQ: 21,99',                     # another command
])
def test_qcsq_malformed(text: str) -> None:
    with pytest.raises(ParseError) as err:
        parse_qcsq(text)
    assert repr(text) in str(err.value)


# --- +QNWINFO ---------------------------------------------------------------------------

@pytest.mark.parametrize(("source", "text", "expected", "band"), [
    ("brief (SK Telecom, band 3)", '+QNWINFO: "FDD LTE","45005","LTE BAND 3",1550',
     QuectelNetworkInfo("FDD LTE", "45005", "LTE BAND 3", 1550), 3),
    ("RM5xx emulator in a public test suite (operator unquoted)",
     '+QNWINFO: "FDD LTE",26202,"LTE BAND 7",2850',
     QuectelNetworkInfo("FDD LTE", "26202", "LTE BAND 7", 2850), 7),
    (f"constructed per {EC25} AT+QNWINFO layout (WCDMA)",
     '+QNWINFO: "WCDMA","46001","WCDMA 2100",10713',
     QuectelNetworkInfo("WCDMA", "46001", "WCDMA 2100", 10713), None),
    (f"{EC25} AT+QNWINFO, no service", "+QNWINFO: No Service",
     QuectelNetworkInfo(None, None, None, None), None),
])
def test_qnwinfo_table(source: str, text: str, expected: QuectelNetworkInfo,
                       band: int | None) -> None:
    got = parse_qnwinfo(text)
    assert got == expected, source
    assert got.lte_band == band
    assert got.has_service is (expected.act is not None)


def test_qnwinfo_splits_operator() -> None:
    info = parse_qnwinfo('+QNWINFO: "FDD LTE","310410","LTE BAND 2",900')
    assert (info.mcc, info.mnc) == ("310", "410")
    with pytest.raises(ParseError, match="QNWINFO"):
        parse_qnwinfo('+QNWINFO: "FDD LTE","SKT","LTE BAND 3",1550')


# --- +QENG="servingcell" ----------------------------------------------------------------

def cell(state: str, rat: str | None = None, **kw: object) -> QuectelServingCell:
    base: dict[str, object] = dict(
        duplex=None, mcc=None, mnc=None, cell_id=None, pci=None, earfcn=None, band=None,
        ul_bandwidth_mhz=None, dl_bandwidth_mhz=None, tac=None, lac=None, rsrp_dbm=None,
        rsrq_db=None, rssi_dbm=None, sinr_raw=None, sinr_db=None, srxlev=None)
    base.update(kw)
    return QuectelServingCell(state, rat, **base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("source", "text", "expected"), [
    ("Quectel EG25 (PinePhone) capture, openqti cell.h",
     '+QENG: "servingcell","NOCONN","LTE","FDD",214,01,7676A09,188,6300,20,3,3,603,'
     "-104,-9,-78,11,23",
     cell("NOCONN", "LTE", duplex="FDD", mcc="214", mnc="01", cell_id=0x7676A09, pci=188,
          earfcn=6300, band=20, ul_bandwidth_mhz=10.0, dl_bandwidth_mhz=10.0, tac=0x603,
          rsrp_dbm=-104, rsrq_db=-9, rssi_dbm=-78, sinr_raw=11, sinr_db=2.0, srxlev=23)),
    ("brief (SK Telecom); field layout per EC2x QENG manual",
     '+QENG: "servingcell","NOCONN","LTE","FDD",450,05,1A2B3C4,123,1550,3,5,5,2B5C,'
     "-95,-11,-65,12,30",
     cell("NOCONN", "LTE", duplex="FDD", mcc="450", mnc="05", cell_id=0x1A2B3C4, pci=123,
          earfcn=1550, band=3, ul_bandwidth_mhz=20.0, dl_bandwidth_mhz=20.0, tac=0x2B5C,
          rsrp_dbm=-95, rsrq_db=-11, rssi_dbm=-65, sinr_raw=12, sinr_db=4.0, srxlev=30)),
    (f"{ARDU} Example1 (SINR 53 outside EC2x 0..25: kept raw)",
     '+QENG: "servingcell","NOCONN","LTE","FDD",505,02,12AED4A,445,3750,8,3,3,CBE8,'
     "-99,-14,-71,53,30",
     cell("NOCONN", "LTE", duplex="FDD", mcc="505", mnc="02", cell_id=0x12AED4A, pci=445,
          earfcn=3750, band=8, ul_bandwidth_mhz=10.0, dl_bandwidth_mhz=10.0, tac=0xCBE8,
          rsrp_dbm=-99, rsrq_db=-14, rssi_dbm=-71, sinr_raw=53, sinr_db=None, srxlev=30)),
    (f"{ARDU} Example3 (BG9x eMTC, no srxlev; SINR not converted)",
     '+QENG: "servingcell","CONNECT","eMTC","FDD",505,01,804A90D,238,9410,28,5,5,2036,'
     "-114,-18,-82,6",
     cell("CONNECT", "eMTC", duplex="FDD", mcc="505", mnc="01", cell_id=0x804A90D, pci=238,
          earfcn=9410, band=28, ul_bandwidth_mhz=20.0, dl_bandwidth_mhz=20.0, tac=0x2036,
          rsrp_dbm=-114, rsrq_db=-18, rssi_dbm=-82, sinr_raw=6, sinr_db=None, srxlev=None)),
    ("MikroTik RouterOS log of a Quectel EG-series module (pastebin 2a9WR5hT): CQI, tx power "
     "and srxlev '-'",
     '+QENG: "servingcell","NOCONN","LTE","FDD",216,70,127328,189,476,1,3,3,D17,'
     "-104,-9,-77,18,-,-,-",
     cell("NOCONN", "LTE", duplex="FDD", mcc="216", mnc="70", cell_id=0x127328, pci=189,
          earfcn=476, band=1, ul_bandwidth_mhz=10.0, dl_bandwidth_mhz=10.0, tac=0xD17,
          rsrp_dbm=-104, rsrq_db=-9, rssi_dbm=-77, sinr_raw=18, sinr_db=16.0, srxlev=None)),
    ("RM5xx EN-DC layout in a public Quectel test script (two lines)",
     '+QENG: "servingcell","NOCONN"\r\n'
     '+QENG: "LTE","FDD",460,01,5F1EA15,12,1650,3,5,5,DE10,-99,-12,-67,11,9,230,-',
     cell("NOCONN", "LTE", duplex="FDD", mcc="460", mnc="01", cell_id=0x5F1EA15, pci=12,
          earfcn=1650, band=3, ul_bandwidth_mhz=20.0, dl_bandwidth_mhz=20.0, tac=0xDE10,
          rsrp_dbm=-99, rsrq_db=-12, rssi_dbm=-67, sinr_raw=11, sinr_db=2.0, srxlev=None)),
    ("EC2x QENG manual: searching, no cell", '+QENG: "servingcell","SEARCH"', cell("SEARCH")),
    ("constructed per EC2x QENG WCDMA layout <MCC>,<MNC>,<LAC>,<cellID>,...",
     '+QENG: "servingcell","NOCONN","WCDMA",460,01,A50C,5D2F1E4,10713,279,1,-85,-3,-,-,-,-,-',
     cell("NOCONN", "WCDMA", mcc="460", mnc="01", lac=0xA50C, cell_id=0x5D2F1E4)),
])
def test_qeng_servingcell_table(source: str, text: str, expected: QuectelServingCell) -> None:
    assert parse_qeng_servingcell(text) == expected, source


@pytest.mark.parametrize("text", [
    '+QENG: "servingcell","NOCONN","LTE","FDD",450,05,1A2B3C4,123',   # truncated
    '+QENG: "neighbourcell intra","LTE",6300,188,-12,-105,-75,-20,23,4,12,10,62',
    '+QENG: "servingcell","NOCONN","LTE","FDD",450,05,XYZ,123,1550,3,5,5,2B5C,-95,-11,-65,12',
    '+QENG: "servingcell","NOCONN","NR5G-SA","TDD",460,01,1A2B',       # truncated SA
    '+QENG: "servingcell",""',
])
def test_qeng_malformed(text: str) -> None:
    with pytest.raises(ParseError, match="QENG"):
        parse_qeng_servingcell(text)


@given(st.text(max_size=80))
def test_qeng_arbitrary_text_never_crashes(text: str) -> None:
    try:
        result = parse_qeng_servingcell('+QENG: "servingcell",' + text)
    except ParseError as exc:  # the one refusal allowed; anything else fails the test
        assert exc.line  # it names the input it refused
    else:
        assert result is not None


# --- +QLTS ------------------------------------------------------------------------------

def tz(quarters: int) -> timezone:
    return timezone(timedelta(minutes=15 * quarters))


@pytest.mark.parametrize(("source", "text", "mode", "expected"), [
    ("brief; AT+QLTS (mode 0) reports UTC with the zone: 02:20 UTC = 11:20 +09:00",
     '+QLTS: "2021/10/25,02:20:13+36,0"', 0,
     NetworkTime(datetime(2021, 10, 25, 11, 20, 13, tzinfo=tz(36)), timedelta(hours=9), 0)),
    ("EC2x driver comment in a public repo (AT+QLTS=2, local time, China)",
     '+QLTS: "2019/12/12,10:49:42+32,0"', 2,
     NetworkTime(datetime(2019, 12, 12, 10, 49, 42, tzinfo=tz(32)), timedelta(hours=8), 0)),
    ("Quectel BG77 capture in yaroc tests (AT+QLTS=2)", '+QLTS: "2024/12/24,10:48:23+04,0"', 2,
     NetworkTime(datetime(2024, 12, 24, 10, 48, 23, tzinfo=tz(4)), timedelta(hours=1), 0)),
    (f"constructed per {EC25} AT+QLTS=1 (GMT), DST included in the zone",
     '+QLTS: "2021/07/01,08:00:00+08,1"', 1,
     NetworkTime(datetime(2021, 7, 1, 10, 0, 0, tzinfo=tz(8)), timedelta(hours=2), 1)),
    (f"constructed per {EC25} AT+QLTS=1, negative zone", '+QLTS: "2021/01/01,03:00:00-20,0"', 1,
     NetworkTime(datetime(2020, 12, 31, 22, 0, 0, tzinfo=tz(-20)), timedelta(hours=-5), 0)),
])
def test_qlts_table(source: str, text: str, mode: int, expected: NetworkTime) -> None:
    got = parse_qlts(text, mode=mode)
    assert got == expected, source
    assert got is not None and got.time.utcoffset() == expected.utc_offset


def test_qlts_same_instant_as_cclk_in_the_brief() -> None:
    got = parse_qlts('+QLTS: "2021/10/25,02:20:13+36,0"')
    assert got is not None
    assert got.time.astimezone(UTC) == datetime(2021, 10, 25, 2, 20, 13, tzinfo=UTC)


def test_qlts_before_network_time_is_none() -> None:
    # public field notes: AT+QLTS=1 answers +QLTS: "" until the network sends a time
    assert parse_qlts('+QLTS: ""', mode=1) is None
    with pytest.raises(ParseError, match="QLTS"):
        parse_qlts('+QLTS: "2021/10/25 02:20:13"')
    with pytest.raises(ValueError):
        parse_qlts('+QLTS: ""', mode=3)


# --- +QCFG="usbnet", +QNETDEVCTL --------------------------------------------------------

@pytest.mark.parametrize(("source", "text", "expected"), [
    (f"{EC25} AT+QCFG=\"usbnet\" (brief: 1 = ECM)", '+QCFG: "usbnet",1', QuectelUsbNet.ECM),
    ("RM5xx emulator in a public test suite", '+QCFG: "usbnet",0', QuectelUsbNet.RMNET),
    ("Quectel RM500U boot log capture (NCM)", '+QCFG: "usbnet",5', QuectelUsbNet.NCM),
    (f"{EC25} usbnet 2 = MBIM", '+QCFG: "usbnet",2', QuectelUsbNet.MBIM),
    (f"{EC25} usbnet 3 = RNDIS", '+QCFG: "USBNET",3', QuectelUsbNet.RNDIS),
])
def test_qcfg_usbnet_table(source: str, text: str, expected: QuectelUsbNet) -> None:
    assert parse_qcfg_usbnet(text) is expected, source


@pytest.mark.parametrize("text", [
    '+QCFG: "usbnet",(1,3)',     # MMQ test_usbnet: that is the =? test response
    '+QCFG: "usbnet",4',         # not a mode
    '+QCFG: "nat",1',            # another setting
])
def test_qcfg_usbnet_malformed(text: str) -> None:
    with pytest.raises(ParseError, match="QCFG"):
        parse_qcfg_usbnet(text)


@pytest.mark.parametrize(("source", "text", "expected"), [
    (f"{MMQ} test_netdevctl[0] (disconnected)", "+QNETDEVCTL: 0,0,0,0\r\n",
     (QuectelNetdevStatus(NetdevConnectType.DISCONNECTED, 0, False, False),)),
    (f"{MMQ} test_netdevctl[1] (PDP #1 connected)", "+QNETDEVCTL: 3,1,0,1\r\n",
     (QuectelNetdevStatus(NetdevConnectType.CONNECT_AUTO, 1, False, True),)),
    ("rg255 public test fixture (AUTO, URC on, connected)", "+QNETDEVCTL: 3,1,1,1",
     (QuectelNetdevStatus(NetdevConnectType.CONNECT_AUTO, 1, True, True),)),
])
def test_qnetdevctl_table(source: str, text: str,
                          expected: tuple[QuectelNetdevStatus, ...]) -> None:
    assert parse_qnetdevctl(text) == expected, source


@pytest.mark.parametrize("text", [
    "+QNETDEVSTATUS: adsfasdfasdf\r\n",   # MMQ test_netdevctl error rows
    "+QNETDEVSTATUS: 5,7,1,1\r\n",
    "+QNETDEVCTL: 5,1,0,1",               # connect type out of range
    "+QNETDEVCTL: 0,11,0,0,1",            # five fields
    "+QNETDEVCTL: 1,1,1",                 # three-field (Unisoc) layout is not supported
    "",
])
def test_qnetdevctl_malformed(text: str) -> None:
    with pytest.raises(ParseError, match="QNETDEVCTL"):
        parse_qnetdevctl(text)


# --- SIM: +QDSIM, +QSIMSTAT, +QCCID ---------------------------------------------------

@pytest.mark.parametrize(("source", "text", "expected"), [
    (f"{EC25} AT+QDSIM (SIM1)", "+QDSIM: 0", 0),
    (f"{EC25} AT+QDSIM (SIM2)", "+QDSIM: 1", 1),
])
def test_qdsim_table(source: str, text: str, expected: int) -> None:
    assert parse_qdsim(text) == expected, source


@pytest.mark.parametrize("text", ["+QDSIM: 2", "+QDSIM: ", "+QDSIM: a"])
def test_qdsim_malformed(text: str) -> None:
    with pytest.raises(ParseError, match="QDSIM"):
        parse_qdsim(text)


@pytest.mark.parametrize(("source", "text", "expected"), [
    ("Quectel capture, Hologram README (AT+QSIMSTAT?)", "+QSIMSTAT: 0,1",
     QuectelSimStatus(False, True)),
    ("Quectel URC in a public h2 modem test (card removed)", "+QSIMSTAT: 1,0",
     QuectelSimStatus(True, False)),
    ("public cellular monitor test feed", "+QSIMSTAT: 1,1", QuectelSimStatus(True, True)),
    (f"{EC25} AT+QSIMSTAT: status 2 = unknown before initialisation", "+QSIMSTAT: 0,2",
     QuectelSimStatus(False, None)),
])
def test_qsimstat_table(source: str, text: str, expected: QuectelSimStatus) -> None:
    assert parse_qsimstat(text) == expected, source


@pytest.mark.parametrize("text", ["+QSIMSTAT: 1", "+QSIMSTAT: 2,1", "+QSIMSTAT: 0,3"])
def test_qsimstat_malformed(text: str) -> None:
    with pytest.raises(ParseError, match="QSIMSTAT"):
        parse_qsimstat(text)


@pytest.mark.parametrize(("source", "text", "expected"), [
    (f"{EC25} AT+QCCID format; ICCID from ModemManager test_iccid_parse_unquoted_unswapped",
     "+QCCID: 8944200053671052499F", "8944200053671052499"),
    (f"{EC25} AT+QCCID format; ICCID from ModemManager test_iccid_parse_unquoted_swap_20",
     "+QCCID: 89324102234690160476", "89324102234690160476"),
])
def test_qccid_table(source: str, text: str, expected: str) -> None:
    assert parse_qccid(text) == expected, source


def test_qccid_rejects_bad_iccid_and_other_prefix() -> None:
    for text in ("+QCCID: 0044200053671052499", "+CCID: 8944200053671052499F", "+QCCID: "):
        with pytest.raises(ParseError, match="QCCID") as err:
            parse_qccid(text)
        assert repr(text.strip()) in str(err.value)  # the line, less surrounding blanks
