"""Parser tables of real modem responses in the layouts modems really send (issue #10):
registration with garbled or extra fields, Quectel RM5xx/RG5xx NR5G forms, limited
service, operator names in UCS2/GSM/UTF-8. Every row names where its response comes from;
"constructed" rows follow a documented layout where no capture was at hand."""

from __future__ import annotations

import pytest

from hw.modem.parsers.quectel import (
    QuectelNrCell,
    QuectelServingCell,
    QuectelSignal,
    QuectelSysMode,
    parse_qcsq,
    parse_qcsq_lines,
    parse_qeng_servingcell,
)
from hw.modem.parsers.registration import (
    AccessTechnology,
    Registration,
    RegistrationForm,
    RegistrationStatus,
    decode_operator_name,
    parse_cops,
    parse_registration,
    registration_form,
)
from hw.modem.profiles.quectel import signal_from_qcsq_lines, signal_from_qeng

MM = "ModemManager src/tests/test-modem-helpers.c"
READ, URC = RegistrationForm.READ, RegistrationForm.URC
S = RegistrationStatus
A = AccessTechnology

# --- +CREG / +CGREG / +CEREG / +C5GREG --------------------------------------------------

REG_QUIRKS = [
    # source, text, form, n, status, area, cell, act
    (f"{MM} test_cereg2_novatel_lte_solicited (<tac>,<rac>,<ci>,<AcT>: field before CI)",
     "\r\n+CEREG: 2,1, 1F00, 20 ,79D903 ,7\r\n", READ, 2, S.HOME, 0x1F00, 0x79D903, A.LTE),
    (f"{MM} test_cereg2_novatel_lte_unsolicited (field before CI)",
     "\r\n+CEREG: 1, 1F00, 20 ,79D903 ,7\r\n", URC, None, S.HOME, 0x1F00, 0x79D903, A.LTE),
    (f"{MM} test_cereg2_multidigit_stat_with_rac_solicited",
     "\r\n+CEREG: 2,10, 2CA8, 20 ,B5583D ,7\r\n",
     READ, 2, S.ROAMING_CSFB_NOT_PREFERRED, 0x2CA8, 0xB5583D, A.LTE),
    (f"{MM} test_cereg2_multidigit_stat_with_rac_unsolicited",
     "\r\n+CEREG: 11, 78FE, 20 ,14419E ,7\r\n", URC, None, S.RLOS_ONLY, 0x78FE, 0x14419E, A.LTE),
    (f"{MM} test_cereg2_multidigit_stat_solicited", '\r\n+CEREG: 2,10,"8d83","671f98a",7\r\n',
     READ, 2, S.ROAMING_CSFB_NOT_PREFERRED, 0x8D83, 0x671F98A, A.LTE),
    (f"{MM} test_creg2_s8500_wave_unsolicited (vendor extras after the CI ignored)",
     "\r\n+CREG: 2,1,000B,2816, B, C2816\r\n", READ, 2, S.HOME, 0x000B, 0x2816, None),
    (f"{MM} test_creg2_s8500_wave_multidigit_stat_unsolicited",
     "\r\n+CREG: 2,11,003F,8FE3, B, C2816\r\n", READ, 2, S.RLOS_ONLY, 0x003F, 0x8FE3, None),
    (f"{MM} test_creg2_gobi_weird_solicited (garbled LAC '  0 5' -> unknown; MM reads 0)",
     "\r\n+CREG: 2,1,  0 5, 2715\r\n", READ, 2, S.HOME, None, 0x2715, None),
    (f"{MM} test_cgreg2_multidigit_stat_with_rac_unsolicited",
     '\r\n+CGREG: 11,"B092","00000697",3,"00"\r\n', URC, None, S.RLOS_ONLY, 0xB092, 0x0697,
     A.EDGE),
    (f"{MM} test_cgreg2_multidigit_stat_no_leading_zeros_solicited", "+CGREG:2,10,ebbd,f025",
     READ, 2, S.ROAMING_CSFB_NOT_PREFERRED, 0xEBBD, 0xF025, None),
    (f"{MM} test_cgreg2_multidigit_stat_leading_zeros_solicited",
     '+CGREG:002,0011,"0f0d","14c3"', READ, 2, S.RLOS_ONLY, 0x0F0D, 0x14C3, None),
    (f"{MM} test_creg1_multidigit_stat_unsolicited", "\r\n+CREG: 11\r\n",
     URC, None, S.RLOS_ONLY, None, None, None),
    (f"{MM} test_creg2_multidigit_stat_unsolicited", '\r\n+CREG: 11,"33FE","a3fb477"\r\n',
     URC, None, S.RLOS_ONLY, 0x33FE, 0xA3FB477, None),
    (f"{MM} test_creg2_leading_zeros_solicited", '+CREG:002,001,"0001","0010"',
     READ, 2, S.HOME, 0x0001, 0x0010, None),
    (f"{MM} test_creg2_multidigit_stat_no_leading_zeros_unsolicited",
     "\r\n+CREG: 10,0001,0010,0\r\n", URC, None, S.ROAMING_CSFB_NOT_PREFERRED, 0x1, 0x10, A.GSM),
    (f"{MM} test_creg2_multidigit_stat_leading_zeros_unsolicited",
     '\r\n+CREG: 0011,"0001","0010",000\r\n', URC, None, S.RLOS_ONLY, 0x1, 0x10, A.GSM),
    (f"{MM} test_cgreg1_solicited", "+CGREG: 1,3", READ, 1, S.DENIED, None, None, None),
    (f"{MM} test_cgreg1_unsolicited", "\r\n+CGREG: 3\r\n", URC, None, S.DENIED, None, None,
     None),
    (f"{MM} test_cgreg2_thuraya_unsolicited", '\r\n+CGREG: 1, "0426", "F00F"\r\n',
     URC, None, S.HOME, 0x0426, 0xF00F, None),
    (f"{MM} test_c5greg1_solicited", "+C5GREG: 1,3", READ, 1, S.DENIED, None, None, None),
    (f"{MM} test_c5greg1_multidigit_stat_solicited", "\r\n+C5GREG: 1, 10\r\n",
     READ, 1, S.ROAMING_CSFB_NOT_PREFERRED, None, None, None),
    (f"{MM} test_c5greg1_unsolicited", "\r\n+C5GREG: 3\r\n", URC, None, S.DENIED, None, None,
     None),
    ("issue #10: a TAC that is not hex is an unknown TAC, not a broken answer",
     '+CEREG: 2,1,"XYZ","01A2B3C4",7', READ, 2, S.HOME, None, 0x01A2B3C4, A.LTE),
    ("issue #10: an AcT that is not a number is an unknown AcT",
     '+CEREG: 2,1,"2B5C","01A2B3C4",L', READ, 2, S.HOME, 0x2B5C, 0x01A2B3C4, None),
]


@pytest.mark.parametrize(("source", "text", "form", "n", "status", "area", "cell", "act"),
                         REG_QUIRKS)
def test_registration_quirks(source: str, text: str, form: RegistrationForm, n: int | None,
                             status: RegistrationStatus, area: int | None, cell: int | None,
                             act: AccessTechnology | None) -> None:
    command = text.strip().split(":")[0]
    assert registration_form(text) is form, source
    assert parse_registration(text) == Registration(command, form, n, status, area, cell, act), \
        source


# --- Quectel +QCSQ NR5G (RM5xx/RG5xx) ---------------------------------------------------

RM520N = "RM520N-GL capture on NR5G-SA band n41 in a public parser's notes"


def nr5g(rsrp: int | None, sinr: int | None, rsrq: int | None) -> QuectelSignal:
    return QuectelSignal(QuectelSysMode.NR5G, None, rsrp, sinr,
                         None if sinr is None else float(sinr), rsrq, None, None)


@pytest.mark.parametrize(("source", "text", "expected"), [
    (f"{RM520N} (cross-checked with +QENG: RSRP -75, RSRQ -11)", '+QCSQ: "NR5G",-75,4,-11',
     nr5g(-75, 4, -11)),
    ("RM5xx open-source 5G lab notes, AT+QCSQ <RAT>,<RSRP>,<SINR>,<RSRQ>",
     '+QCSQ: "NR5G",-68,38,-11', nr5g(-68, 38, -11)),
    ("constructed: a trailing '-' some RM5xx firmware appends is ignored",
     '+QCSQ: "NR5G",-75,4,-11,-', nr5g(-75, 4, -11)),
    ("constructed: '-' (not available) reads as None", '+QCSQ: "NR5G",-90,-,-12',
     nr5g(-90, None, -12)),
])
def test_qcsq_nr5g(source: str, text: str, expected: QuectelSignal) -> None:
    assert parse_qcsq(text) == expected, source


def test_qcsq_en_dc_two_lines_is_the_lte_anchor_on_en_dc() -> None:
    # constructed per the RM5xx manual: in EN-DC the answer has an LTE and an NR5G line
    lines = parse_qcsq_lines('+QCSQ: "LTE",-60,-88,145,-9\r\n+QCSQ: "NR5G",-75,4,-11')
    assert [q.sysmode for q in lines] == [QuectelSysMode.LTE, QuectelSysMode.NR5G]
    reading = signal_from_qcsq_lines(lines)
    assert (reading.rsrp_dbm, reading.rat) == (-88.0, AccessTechnology.EN_DC)
    sa = signal_from_qcsq_lines(parse_qcsq_lines('+QCSQ: "NR5G",-75,4,-11'))
    assert (sa.rsrp_dbm, sa.sinr_db, sa.rssi_dbm, sa.rat) == (-75.0, 4.0, None, A.NR_5GCN)


# --- Quectel +QENG="servingcell": NR5G-SA, EN-DC, LIMSRV -------------------------------

def cell(state: str, rat: str | None = None, **kw: object) -> QuectelServingCell:
    base: dict[str, object] = dict(
        duplex=None, mcc=None, mnc=None, cell_id=None, pci=None, earfcn=None, band=None,
        ul_bandwidth_mhz=None, dl_bandwidth_mhz=None, tac=None, lac=None, rsrp_dbm=None,
        rsrq_db=None, rssi_dbm=None, sinr_raw=None, sinr_db=None, srxlev=None)
    base.update(kw)
    return QuectelServingCell(state, rat, **base)  # type: ignore[arg-type]


QENG_QUIRKS = [
    ("RM500Q-GL on an OAI 5G SA core, public setup guide (AT+QENG)",
     '+QENG: "servingcell","NOCONN","NR5G-SA","TDD",999,70,E00,0,1,641280,78,6,-67,-11,31,1,-',
     cell("NOCONN", "NR5G-SA", duplex="TDD", mcc="999", mnc="70", cell_id=0xE00, pci=0,
          tac=0x1, earfcn=641280, band=78, rsrp_dbm=-67, rsrq_db=-11, sinr_raw=31,
          sinr_db=31.0)),
    ("RM500Q capture in a public gNodeB-ID script (NR5G-SA, band n78)",
     '+QENG: "servingcell","NOCONN","NR5G-SA","TDD",240,68,FAD5383F2,310,64,634080,78,12,'
     "-88,-10,23,1,-",
     cell("NOCONN", "NR5G-SA", duplex="TDD", mcc="240", mnc="68", cell_id=0xFAD5383F2,
          pci=310, tac=0x64, earfcn=634080, band=78, rsrp_dbm=-88, rsrq_db=-10, sinr_raw=23,
          sinr_db=23.0)),
    ("RM5xx test-UE documentation (limited service on NR5G-SA, srxlev 44)",
     '+QENG: "servingcell","LIMSRV","NR5G-SA","TDD",001,01,000000E00,0,1,641280,78,3,'
     "-83,-11,23,1,44",
     cell("LIMSRV", "NR5G-SA", duplex="TDD", mcc="001", mnc="01", cell_id=0xE00, pci=0,
          tac=0x1, earfcn=641280, band=78, rsrp_dbm=-83, rsrq_db=-11, sinr_raw=23,
          sinr_db=23.0, srxlev=44)),
    ("EC2x/EG2x capture in a public cell-logger test (LIMSRV on LTE)",
     '+QENG:"servingcell","LIMSRV","LTE","FDD",460,11,6935932,30,1825,3,4,4,6934,'
     "-115,-13,-83,13,0",
     cell("LIMSRV", "LTE", duplex="FDD", mcc="460", mnc="11", cell_id=0x6935932, pci=30,
          earfcn=1825, band=3, ul_bandwidth_mhz=15.0, dl_bandwidth_mhz=15.0, tac=0x6934,
          rsrp_dbm=-115, rsrq_db=-13, rssi_dbm=-83, sinr_raw=13, sinr_db=6.0, srxlev=0)),
    ("UC20/EC20 router firmware source comment (LIMSRV on WCDMA)",
     '+QENG: "servingcell","LIMSRV","WCDMA",460,01,A538,1EB578B,10763,60,2,-106,-13,-,-,-,-,-',
     cell("LIMSRV", "WCDMA", mcc="460", mnc="01", lac=0xA538, cell_id=0x1EB578B)),
    ("Quectel RM520N/RG520N AT manual example (Chinese edition), LIMSRV on GSM",
     '+QENG:"servingcell","LIMSRV","GSM",460,01,5504,2B55,52,123,0,-67,5,14,64,30,28,0,'
     '-,-,-,-,-,-,-,-,-,"-"',
     cell("LIMSRV", "GSM", mcc="460", mnc="01", lac=0x5504, cell_id=0x2B55)),
    ("RM500Q EN-DC capture in a public modem dashboard (three lines)",
     '+QENG: "servingcell","NOCONN"\r\n'
     '+QENG: "LTE","FDD",222,01,4940206,427,1350,3,5,5,BFF,-94,-15,-58,9,5,100,-\r\n'
     '+QENG: "NR5G-NSA",222,01,920,-96,18,-10,648768,78,10,1',
     cell("NOCONN", "LTE", duplex="FDD", mcc="222", mnc="01", cell_id=0x4940206, pci=427,
          earfcn=1350, band=3, ul_bandwidth_mhz=20.0, dl_bandwidth_mhz=20.0, tac=0xBFF,
          rsrp_dbm=-94, rsrq_db=-15, rssi_dbm=-58, sinr_raw=9, sinr_db=-2.0,
          nr=QuectelNrCell(pci=920, rsrp_dbm=-96, sinr_db=18.0, rsrq_db=-10, arfcn=648768,
                           band=78))),
    ("RM5xx AT+QENG test answer in a public capture (empty NR5G-NSA leg)",
     '+QENG: "servingcell","NOCONN"\r\n'
     '+QENG: "LTE","FDD",520,04,4D8002,167,250,1,3,3,7E7,-128,-17,-94,7,10,23,-\r\n'
     '+QENG: "NR5G-NSA",',
     cell("NOCONN", "LTE", duplex="FDD", mcc="520", mnc="04", cell_id=0x4D8002, pci=167,
          earfcn=250, band=1, ul_bandwidth_mhz=10.0, dl_bandwidth_mhz=10.0, tac=0x7E7,
          rsrp_dbm=-128, rsrq_db=-17, rssi_dbm=-94, sinr_raw=7, sinr_db=-6.0)),
]


@pytest.mark.parametrize(("source", "text", "expected"), QENG_QUIRKS)
def test_qeng_quirks(source: str, text: str, expected: QuectelServingCell) -> None:
    assert parse_qeng_servingcell(text) == expected, source


def test_qeng_rats_for_the_status() -> None:
    sa = signal_from_qeng(parse_qeng_servingcell(QENG_QUIRKS[0][1]))
    nsa = signal_from_qeng(parse_qeng_servingcell(QENG_QUIRKS[6][1]))
    limited = signal_from_qeng(parse_qeng_servingcell(QENG_QUIRKS[3][1]))
    assert (sa.rat, sa.rsrp_dbm, sa.sinr_db) == (A.NR_5GCN, -67.0, 31.0)
    assert (nsa.rat, nsa.rsrp_dbm) == (A.EN_DC, -94.0)
    assert (limited.rat, limited.rsrp_dbm) == (A.LTE, -115.0)


# --- operator names ---------------------------------------------------------------------

MMN = f"{MM} normalize_operator_tests"


@pytest.mark.parametrize(("source", "raw", "charset", "expected"), [
    (f"{MMN} (charset unknown)", "Verizon", None, "Verizon"),
    (f"{MMN} (charset unknown, numeric)", "311480", None, "311480"),
    (f"{MMN} (IRA)", "Verizon", "IRA", "Verizon"),
    (f"{MMN} (GSM)", "Verizon", "GSM", "Verizon"),
    (f"{MMN} (GSM, numeric)", "311480", "GSM", "311480"),
    (f"{MMN} (UCS2)", "0056006500720069007A006F006E", "UCS2", "Verizon"),
    (f"{MMN} (UCS2, numeric)", "003300310031003400380030", "UCS2", "311480"),
    (f"{MMN} (UCS2 claimed, ASCII sent: Huawei)", "Verizon", "UCS2", "Verizon"),
    (f"{MMN} (UCS2 claimed, numeric sent)", "311480", "UCS2", "311480"),
    ("ModemManager src/mm-modem-helpers.c mm_3gpp_normalize_operator (Novatel 'Unknown')",
     "Unknown", None, None),
    ("constructed: UCS2 hex with the charset unknown (+CSCS not read)",
     "0056006500720069007A006F006E", None, "Verizon"),
    ("constructed per TS 23.038: GSM 7-bit septets in hex (+CSCS=\"HEX\"), 'KT'",
     "4B54", "HEX", "KT"),
    ("constructed: a short hex-looking name, charset unknown, stays as sent", "4B54", None,
     "4B54"),
    ("constructed per TS 23.038: septets 0x7B 0x7C are 'äö'", "7B7C", "HEX", "äö"),
    ("UTF-8 name kept as the framer decoded it", "Telefónica", None, "Telefónica"),
])
def test_operator_names(source: str, raw: str, charset: str | None,
                        expected: str | None) -> None:
    assert decode_operator_name(raw, charset) == expected, source


def test_cops_decodes_ucs2_names_but_never_numeric_codes() -> None:
    named = parse_cops('+COPS: 0,0,"0056006500720069007A006F006E",7', charset="UCS2")
    assert named.name == "Verizon"
    numeric = parse_cops('+COPS: 0,2,"45008",7', charset="UCS2")
    assert numeric.mcc_mnc == "45008"
