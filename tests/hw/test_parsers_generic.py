"""hw.modem.parsers, codes and carriers against tables of real responses (rows name sources)."""

from __future__ import annotations

import dataclasses
import ipaddress
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hw.modem.carriers import carrier_for, same_carrier
from hw.modem.codes import (
    CME_ERRORS,
    CMS_ERRORS,
    CmeError,
    CmsError,
    cme_error_code,
    cms_error_code,
    parse_cme_error,
    parse_cms_error,
)
from hw.modem.errors import ModemError, ParseError
from hw.modem.parsers.clock import NetworkTime, parse_cclk
from hw.modem.parsers.identity import (
    Imsi,
    ModemIdentity,
    SimState,
    normalize_iccid,
    parse_ati,
    parse_cgmi,
    parse_cgmm,
    parse_cgmr,
    parse_cgsn,
    parse_cpin,
    parse_iccid,
    parse_imsi,
)
from hw.modem.parsers.pdp import (
    PdpAddress,
    PdpContext,
    PdpContextState,
    parse_cgact,
    parse_cgdcont,
    parse_cgpaddr,
)
from hw.modem.parsers.registration import (
    AccessTechnology,
    NetworkEntry,
    Operator,
    Registration,
    RegistrationForm,
    RegistrationStatus,
    parse_cops,
    parse_cops_list,
    parse_registration,
    registration_form,
    split_mcc_mnc,
)
from hw.modem.parsers.signal import (
    ExtendedSignalQuality,
    SignalQuality,
    csq_rssi_to_dbm,
    parse_cesq,
    parse_csq,
)
from hw.modem.profiles import vendor_profile

MM = "ModemManager src/tests/test-modem-helpers.c"
TS = "3GPP TS 27.007"

READ, URC = RegistrationForm.READ, RegistrationForm.URC
S = RegistrationStatus
A = AccessTechnology


# --- +CSQ (TS 27.007 §8.5) --------------------------------------------------------------

@pytest.mark.parametrize(("source", "text", "expected"), [
    (f"{TS} §8.5: 0 = -113 dBm or less", "+CSQ: 0,99", SignalQuality(0, -113, None)),
    (f"{TS} §8.5: 31 = -51 dBm or greater", "+CSQ: 31,99", SignalQuality(31, -51, None)),
    (f"{TS} §8.5: 99 = not known", "+CSQ: 99,99", SignalQuality(99, None, None)),
    ("Eseye Quectel BG96 developer guide, AT+CSQ example", "+CSQ: 3,99",
     SignalQuality(3, -107, None)),
    ("Quectel UGxx AT Commands Manual, AT+CSQ example", "+CSQ: 28,0", SignalQuality(28, -57, 0)),
    ("SIM7600E-H capture in a public README (ATI/CPSI session)", "+CSQ: 19,99",
     SignalQuality(19, -75, None)),
    ("Quectel EC25 capture, Hologram README (AT+CSQ)", "+CSQ: 13,99",
     SignalQuality(13, -87, None)),
])
def test_csq_table(source: str, text: str, expected: SignalQuality) -> None:
    assert parse_csq(text) == expected, source


@given(st.integers(min_value=0, max_value=31))
def test_csq_every_level_is_two_db_above_the_previous(level: int) -> None:
    dbm = parse_csq(f"+CSQ: {level},99").rssi_dbm
    assert dbm == -113 + 2 * level
    if level:
        previous = parse_csq(f"+CSQ: {level - 1},99").rssi_dbm
        assert previous is not None and dbm > previous


@given(st.integers(min_value=-10**6, max_value=10**6)
       .filter(lambda n: not 0 <= n <= 31 and n != 99))
def test_csq_values_outside_the_table_are_parse_errors(level: int) -> None:
    with pytest.raises(ParseError) as err:
        parse_csq(f"+CSQ: {level},99")
    assert repr(f"+CSQ: {level},99") in str(err.value)
    with pytest.raises(ValueError):
        csq_rssi_to_dbm(level)


@given(st.text(max_size=40))
def test_csq_arbitrary_text_never_crashes(text: str) -> None:
    try:
        result = parse_csq(text)
    except ParseError:
        return
    assert result.rssi_dbm is None or -113 <= result.rssi_dbm <= -51


# --- +CESQ (TS 27.007 §8.69) ------------------------------------------------------------

@pytest.mark.parametrize(("source", "text", "expected"), [
    (f"{MM} cesq_response_tests[0] (LTE)", "+CESQ: 99,99,255,255,20,80",
     ExtendedSignalQuality(None, None, None, None, -10.0, -61)),
    (f"{MM} cesq_response_tests[1] (UMTS)", "+CESQ: 99,99,95,40,255,255",
     ExtendedSignalQuality(None, None, -26, -4.5, None, None)),
    (f"{MM} cesq_response_tests[2] (GSM)", "+CESQ: 10,6,255,255,255,255",
     ExtendedSignalQuality(-101, 6, None, None, None, None)),
    (f"{TS} §8.69: all not known", "+CESQ: 99,99,255,255,255,255",
     ExtendedSignalQuality(None, None, None, None, None, None)),
    (f"{TS} §8.69: rsrq 34 = -3 dB or more, rsrp 97 = -44 dBm or more",
     "+CESQ: 99,99,255,255,34,97", ExtendedSignalQuality(None, None, None, None, -3.0, -44)),
    (f"{TS} §8.69: rsrq 0 (< -19.5 dB), rsrp 0 (< -140 dBm)", "+CESQ: 99,99,255,255,0,0",
     ExtendedSignalQuality(None, None, None, None, -20.0, -141)),
])
def test_cesq_table(source: str, text: str, expected: ExtendedSignalQuality) -> None:
    assert parse_cesq(text) == expected, source


@given(st.integers(min_value=0, max_value=96), st.integers(min_value=0, max_value=33))
def test_cesq_rsrp_and_rsrq_are_monotonic(rsrp: int, rsrq: int) -> None:
    low = parse_cesq(f"+CESQ: 99,99,255,255,{rsrq},{rsrp}")
    high = parse_cesq(f"+CESQ: 99,99,255,255,{rsrq + 1},{rsrp + 1}")
    assert low.rsrp_dbm is not None and high.rsrp_dbm == low.rsrp_dbm + 1
    assert low.rsrq_db is not None and high.rsrq_db == low.rsrq_db + 0.5
    assert -141 <= low.rsrp_dbm <= -44 and -20.0 <= low.rsrq_db <= -3.0


@pytest.mark.parametrize("text", [
    "+CESQ: 99,99,255,255,35,80",     # rsrq above 34
    "+CESQ: 99,99,255,255,20,98",     # rsrp above 97
    "+CESQ: 64,99,255,255,255,255",   # rxlev above 63
    "+CESQ: 99,99,255,255,20",        # five fields
])
def test_cesq_out_of_range_is_a_parse_error(text: str) -> None:
    with pytest.raises(ParseError, match="CESQ"):
        parse_cesq(text)


# --- +CREG / +CGREG / +CEREG (TS 27.007 §7.2, §10.1.20, §10.1.22) -----------------------

REG_ROWS = [
    # source, text, form, n, status, area, cell, act
    (f"{MM} test_creg1_solicited", "+CREG: 1,3", READ, 1, S.DENIED, None, None, None),
    (f"{MM} test_creg1_unsolicited", "\r\n+CREG: 3\r\n", URC, None, S.DENIED, None, None, None),
    (f"{MM} test_creg2_mercury_solicited (unquoted hex)", "+CREG: 1,1,84CD,00D30173",
     READ, 1, S.HOME, 0x84CD, 0xD30173, None),
    (f"{MM} test_creg2_mercury_unsolicited", "\r\n+CREG: 1,84CD,00D30156\r\n",
     URC, None, S.HOME, 0x84CD, 0xD30156, None),
    (f"{MM} test_creg2_sek850i_solicited", '+CREG: 2,1,"CE00","01CEAD8F"',
     READ, 2, S.HOME, 0xCE00, 0x01CEAD8F, None),
    (f"{MM} test_creg2_sek850i_unsolicited", '\r\n+CREG: 1,"CE00","00005449"\r\n',
     URC, None, S.HOME, 0xCE00, 0x5449, None),
    (f"{MM} test_creg2_e160g_solicited_unregistered", "+CREG: 2,0,00,0",
     READ, 2, S.NOT_REGISTERED, 0, 0, None),
    (f"{MM} test_creg2_e160g_solicited", "+CREG: 2,1,8BE3,2BAF", READ, 2, S.HOME, 0x8BE3, 0x2BAF,
     None),
    (f"{MM} test_creg2_e160g_unsolicited", "\r\n+CREG: 1,8BE3,2BAF\r\n",
     URC, None, S.HOME, 0x8BE3, 0x2BAF, None),
    (f"{MM} test_creg2_tm506_solicited (leading zeros in CI)", '+CREG: 2,1,"8BE3","00002BAF"',
     READ, 2, S.HOME, 0x8BE3, 0x2BAF, None),
    (f"{MM} test_creg2_xu870_unsolicited_unregistered", "\r\n+CREG: 2,,\r\n",
     URC, None, S.SEARCHING, None, None, None),
    (f"{MM} test_creg2_iridium_solicited (no space, zero-padded)", '+CREG:002,001,"18d8","ffff"',
     READ, 2, S.HOME, 0x18D8, 0xFFFF, None),
    (f"{MM} test_creg2_no_leading_zeros_solicited", "+CREG:2,1,0001,0010",
     READ, 2, S.HOME, 0x0001, 0x0010, None),
    (f"{MM} test_creg2_no_leading_zeros_unsolicited", "\r\n+CREG: 1,0001,0010,0\r\n",
     URC, None, S.HOME, 0x0001, 0x0010, A.GSM),
    (f"{MM} test_creg2_leading_zeros_unsolicited", '\r\n+CREG: 001,"0001","0010",000\r\n',
     URC, None, S.HOME, 0x0001, 0x0010, A.GSM),
    (f"{MM} test_creg2_ublox_solicited (SMS only, LTE)", '\r\n+CREG: 2,6,"8B37","0A265185",7\r\n',
     READ, 2, S.HOME_SMS_ONLY, 0x8B37, 0x0A265185, A.LTE),
    (f"{MM} test_creg2_ublox_unsolicited", '\r\n+CREG: 6,"8B37","0A265185",7\r\n',
     URC, None, S.HOME_SMS_ONLY, 0x8B37, 0x0A265185, A.LTE),
    (f"{MM} test_creg2_md400_unsolicited (roaming)", '\r\n+CREG: 2,5,"0502","0404736D"\r\n',
     READ, 2, S.ROAMING, 0x0502, 0x0404736D, None),
    (f"{MM} test_cgreg2_f3607gw_solicited (EDGE)", '+CGREG: 2,1,"8BE3","00002B5D",3',
     READ, 2, S.HOME, 0x8BE3, 0x2B5D, A.EDGE),
    (f"{MM} test_cgreg2_md400_unsolicited (roaming, UMTS)", '\r\n+CGREG: 5,"0502","0404736D",2\r\n',
     URC, None, S.ROAMING, 0x0502, 0x0404736D, A.UMTS),
    (f"{MM} test_cgreg2_x220_unsolicited (random spaces)", "\r\n+CGREG: 2,1, 81ED, 1A9CEB\r\n",
     READ, 2, S.HOME, 0x81ED, 0x1A9CEB, None),
    (f"{MM} test_cgreg2_unsolicited_with_rac (extra field)",
     '\r\n+CGREG: 1,"1422","00000142",3,"00"\r\n', URC, None, S.HOME, 0x1422, 0x0142, A.EDGE),
    (f"{MM} test_cgreg2_thuraya_solicited", '+CGREG: 2, 1, "0426", "F00F"',
     READ, 2, S.HOME, 0x0426, 0xF00F, None),
    (f"{MM} test_cereg1_solicited", "+CEREG: 1,3", READ, 1, S.DENIED, None, None, None),
    (f"{MM} test_cereg1_unsolicited", "\r\n+CEREG: 3\r\n", URC, None, S.DENIED, None, None, None),
    (f"{MM} test_cereg2_solicited", "\r\n+CEREG: 2,1, 1F00, 79D903 ,7\r\n",
     READ, 2, S.HOME, 0x1F00, 0x79D903, A.LTE),
    (f"{MM} test_cereg2_unsolicited", "\r\n+CEREG: 1, 1F00, 79D903 ,7\r\n",
     URC, None, S.HOME, 0x1F00, 0x79D903, A.LTE),
    (f"{MM} test_cereg2_altair_lte_solicited", "\r\n+CEREG: 1, 2, 0001, 00000100, 7\r\n",
     READ, 1, S.SEARCHING, 0x0001, 0x0100, A.LTE),
    (f"{MM} test_cereg2_altair_lte_unsolicited", "\r\n+CEREG: 2, 0001, 00000100, 7\r\n",
     URC, None, S.SEARCHING, 0x0001, 0x0100, A.LTE),
    ("Quectel BG77 capture in yaroc tests (AT+CEREG?, NB-IoT)", '+CEREG: 2,1,"2008","2B2078",9',
     READ, 2, S.HOME, 0x2008, 0x2B2078, A.LTE_NB_IOT),
    (f"{TS} §10.1.22 syntax, <n>=3 with reject cause (extras ignored)",
     '+CEREG: 3,3,"2B5C","01A2B3C4",7,0,15', READ, 3, S.DENIED, 0x2B5C, 0x01A2B3C4, A.LTE),
    (f"{TS} §10.1.22 syntax, <n>=4 with PSM timers (extras ignored)",
     '+CEREG: 4,1,"2B5C","01A2B3C4",7,,,"00000000","00111000"',
     READ, 4, S.HOME, 0x2B5C, 0x01A2B3C4, A.LTE),
    (f"{TS} §10.1.22 syntax, URC with <cause_type>,<reject_cause>",
     '+CEREG: 3,"2B5C","01A2B3C4",7,0,15', URC, None, S.DENIED, 0x2B5C, 0x01A2B3C4, A.LTE),
]


@pytest.mark.parametrize(("source", "text", "form", "n", "status", "area", "cell", "act"),
                         REG_ROWS)
def test_registration_table(source: str, text: str, form: RegistrationForm, n: int | None,
                            status: RegistrationStatus, area: int | None, cell: int | None,
                            act: AccessTechnology | None) -> None:
    command = text.strip().split(":")[0]
    assert registration_form(text) is form, source
    parsed = dataclasses.replace(parse_registration(text), cause_type=None, reject_cause=None)
    assert parsed == Registration(command, form, n, status, area, cell, act), source


def test_registration_form_can_be_forced() -> None:
    # "+CREG: 1,0001,0010,0" is a URC by shape; a caller that sent AT+CREG? knows better.
    forced = parse_registration("+CREG: 1,0001,0010,0", form=READ)
    assert (forced.n, forced.status, forced.area_code, forced.cell_id) == (1, S.HOME, 0x10, 0)
    assert parse_registration("+CREG: 1,0001,0010,0").area_code == 0x0001


def test_three_fields_are_always_the_urc() -> None:
    # TS 27.007 §7.2: a read response cannot carry a LAC without a CI, so <a>,<b>,<c> is
    # <stat>,<lac>,<ci> even when the LAC is short enough to look like a <stat>.
    assert registration_form("+CREG: 1,0,1A2B") is URC
    assert parse_registration("+CREG: 1,0,1A2B").cell_id == 0x1A2B


def test_registration_status_helpers() -> None:
    assert [s for s in RegistrationStatus if s.registered] == [
        S.HOME, S.ROAMING, S.HOME_SMS_ONLY, S.ROAMING_SMS_ONLY, S.HOME_CSFB_NOT_PREFERRED,
        S.ROAMING_CSFB_NOT_PREFERRED]
    assert [s for s in RegistrationStatus if s.roaming] == [
        S.ROAMING, S.ROAMING_SMS_ONLY, S.ROAMING_CSFB_NOT_PREFERRED]


@pytest.mark.parametrize("text", [
    "+CEREG: 2,12",                    # <stat> 12 is not defined
    "+CEREG: 9,1",                     # <n> 9 is not defined
    "+CEREG: ",                        # nothing
    "+COPS: 0,1",                      # not a registration line
    '+CEREG: 2,1,"2B5C',               # unterminated quote
    "+CREG: 5\r\n+CGREG: 0",           # two lines (MM test_creg_cgreg_multi_unsolicited)
])
def test_registration_malformed(text: str) -> None:
    with pytest.raises(ParseError) as err:
        parse_registration(text)
    assert repr(text.strip()) in str(err.value) or repr(text) in str(err.value)


@given(st.integers(0, 11), st.integers(0, 0xFFFF), st.integers(0, 0x0FFFFFFF),
       st.sampled_from(sorted(range(14))), st.sampled_from(["+CREG", "+CGREG", "+CEREG"]),
       st.integers(2, 5))
def test_registration_round_trips_both_forms(stat: int, tac: int, ci: int, act: int,
                                             command: str, n: int) -> None:
    location = f'"{tac:04X}","{ci:08X}",{act}'
    read = parse_registration(f"{command}: {n},{stat},{location}")
    urc = parse_registration(f"{command}: {stat},{location}")
    assert (read.form, read.n, urc.form, urc.n) == (READ, n, URC, None)
    for reg in (read, urc):
        assert (reg.status, reg.area_code, reg.cell_id) == (list(S)[stat], tac, ci)
        assert reg.act is list(A)[act]
    # the same with bare (unquoted) four-digit hex TAC and eight-digit CI
    bare = parse_registration(f"{command}: {stat},{tac:04X},{ci:08X},{act}")
    assert (bare.form, bare.area_code, bare.cell_id) == (URC, tac, ci)


@given(st.text(max_size=60))
def test_registration_arbitrary_text_never_crashes(text: str) -> None:
    try:
        result = parse_registration("+CEREG: " + text)
    except ParseError as exc:  # the one refusal allowed; anything else fails the test
        assert exc.line  # it names the input it refused
    else:
        assert result is not None


# --- +COPS (TS 27.007 §7.3) -------------------------------------------------------------

@pytest.mark.parametrize(("source", "text", "expected"), [
    (f"{MM} cops_query_data[0]", '+COPS: 1,0,"CHINA MOBILE"',
     Operator(1, 0, "CHINA MOBILE", None)),
    (f"{MM} cops_query_data[1]", '+COPS: 1,0,"CHINA MOBILE",7',
     Operator(1, 0, "CHINA MOBILE", A.LTE)),
    (f"{MM} cops_query_data[2]", '+COPS: 1,2,"46000"', Operator(1, 2, "46000", None)),
    (f"{MM} cops_query_data[3]", '+COPS: 1,2,"46000",7', Operator(1, 2, "46000", A.LTE)),
    ("SKT network as shown by modems in Korea (brief; syntax TS 27.007 §7.3)",
     '+COPS: 0,0,"SKTelecom",7', Operator(0, 0, "SKTelecom", A.LTE)),
    (f"{TS} §7.3 numeric format", '+COPS: 0,2,"45005",7', Operator(0, 2, "45005", A.LTE)),
    (f"{TS} §7.3: automatic, no operator", "+COPS: 0", Operator(0, None, None, None)),
    ("scattym/lua-tool-simreporter ati_parser.lua comment (SIM5320/7600 capture)",
     '+COPS: 1,0,"Telstra Mobile",2', Operator(1, 0, "Telstra Mobile", A.UMTS)),
    ("Quectel capture, Hologram README (AT+COPS?)", '+COPS: 0,0,"T-Mobile Hologram",0',
     Operator(0, 0, "T-Mobile Hologram", A.GSM)),
])
def test_cops_table(source: str, text: str, expected: Operator) -> None:
    assert parse_cops(text) == expected, source


def test_cops_numeric_exposes_mcc_mnc() -> None:
    assert parse_cops('+COPS: 0,2,"45005",7').mcc_mnc == "45005"
    assert parse_cops('+COPS: 0,0,"SKTelecom",7').mcc_mnc is None


@pytest.mark.parametrize("text", ["+COPS: 7,0", '+COPS: 0,2,"SKT",7', '+COPS: 0,4,"x"', "+COPS:"])
def test_cops_malformed(text: str) -> None:
    with pytest.raises(ParseError, match="COPS"):
        parse_cops(text)


@pytest.mark.parametrize(("source", "text", "expected"), [
    (f"{MM} test_cops_response_gt3gplus",
     '+COPS: (1,"T-Mobile US","TMO US","31026",0),(1,"Cingular","Cingular","310410",0),,'
     "(0, 1, 3),(0-2)",
     (NetworkEntry(1, "T-Mobile US", "TMO US", "31026", A.GSM),
      NetworkEntry(1, "Cingular", "Cingular", "310410", A.GSM))),
    (f"{MM} test_cops_response_motoc (no AcT)",
     '+COPS: (2,"T-Mobile","","310260"),(0,"Cingular Wireless","","310410")',
     (NetworkEntry(2, "T-Mobile", None, "310260", None),
      NetworkEntry(0, "Cingular Wireless", None, "310410", None))),
    (f"{MM} test_cops_response_n80 (empty short name)",
     '+COPS: (2,"T - Mobile",,"31026"),(1,"Einstein PCS",,"31064"),(1,"Cingular",,"31041"),,'
     "(0,1,3),(0,2)",
     (NetworkEntry(2, "T - Mobile", None, "31026", None),
      NetworkEntry(1, "Einstein PCS", None, "31064", None),
      NetworkEntry(1, "Cingular", None, "31041", None))),
    (f"{MM} test_cops_response_gsm_invalid (no operators)", "+COPS: (0,1,2,3),(1,2,3,4)", ()),
])
def test_cops_list_table(source: str, text: str, expected: tuple[NetworkEntry, ...]) -> None:
    assert parse_cops_list(text) == expected, source


# --- +CPIN (TS 27.007 §8.3) and +CME ERROR ----------------------------------------------

@pytest.mark.parametrize(("source", "text", "expected"), [
    (f"{TS} §8.3", "+CPIN: READY", SimState.READY),
    (f"{TS} §8.3", "+CPIN: SIM PIN", SimState.SIM_PIN),
    (f"{TS} §8.3", "+CPIN: SIM PUK", SimState.SIM_PUK),
    (f"{TS} §8.3", "+CPIN: PH-SIM PIN", SimState.PH_SIM_PIN),
    (f"{TS} §8.3", "+CPIN: SIM PUK2", SimState.SIM_PUK2),
    ("Telit HSPA+ AT reference, AT+CPIN? example without SIM", "+CME ERROR: 10",
     SimState.NOT_INSERTED),
    (f"{TS} §9.2.1 verbose form (AT+CMEE=2)", "+CME ERROR: SIM not inserted",
     SimState.NOT_INSERTED),
    (f"{TS} §9.2.1 code 14", "+CME ERROR: 14", SimState.BUSY),
    ("vendor variant of a missing SIM (brief)", "+CPIN: NOT INSERTED", SimState.NOT_INSERTED),
    ("SIMCom variant while the SIM initialises", "+CPIN: NOT READY", SimState.NOT_READY),
])
def test_cpin_table(source: str, text: str, expected: SimState) -> None:
    assert parse_cpin(text) is expected, source


@pytest.mark.parametrize("text", ["+CPIN: MAYBE", "+CME ERROR: 3", "+CSQ: 1,1", "READY"])
def test_cpin_malformed(text: str) -> None:
    with pytest.raises(ParseError, match="CPIN"):
        parse_cpin(text)


@pytest.mark.parametrize(("source", "text", "expected"), [
    (f"{TS} §9.2.1", "+CME ERROR: 10", CmeError(10, "SIM not inserted", False)),
    (f"{TS} §9.2.1 verbose", "+CME ERROR: SIM not inserted", CmeError(10, "SIM not inserted",
                                                                       True)),
    ("Quectel RM500U boot log capture (ATE0Q0V1 rejected)", "+CME ERROR: 4",
     CmeError(4, "operation not supported", False)),
    (f"{TS} §9.2.1 verbose, other case/punctuation",
     "+CME ERROR: Network not allowed, emergency calls only",
     CmeError(32, "Network not allowed, emergency calls only", True)),
    (f"{TS} §9.2.2 GPRS error", "+CME ERROR: 148", CmeError(148, "unspecified GPRS error", False)),
    ("numeric code outside the table", "+CME ERROR: 999", CmeError(999, None, False)),
    ("verbose text outside the table", "+CME ERROR: modem on fire",
     CmeError(None, "modem on fire", True)),
])
def test_cme_error_table(source: str, text: str, expected: CmeError) -> None:
    assert parse_cme_error(text) == expected, source


@pytest.mark.parametrize("code", [3, 4, 10, 11, 12, 13, 14, 15, 16, 17, 18, 30, 31, 100, 107, 111,
                                  112, 132, 133, 134, 148, 149])
def test_common_cme_codes_map_both_ways(code: int) -> None:
    message = CME_ERRORS[code]
    assert cme_error_code(message) == code
    assert cme_error_code(message.upper()) == code
    assert parse_cme_error(f"+CME ERROR: {message}").code == code


def test_cme_and_cms_tables_have_unique_texts() -> None:
    assert len({cme_error_code(m) for m in CME_ERRORS.values()}) == len(CME_ERRORS)
    assert len({cms_error_code(m) for m in CMS_ERRORS.values()}) == len(CMS_ERRORS)


@pytest.mark.parametrize(("source", "text", "expected"), [
    ("3GPP TS 27.005 §3.2.5", "+CMS ERROR: 500", CmsError(500, "unknown error", False)),
    ("3GPP TS 27.005 §3.2.5", "+CMS ERROR: 310", CmsError(310, "(U)SIM not inserted", False)),
    ("3GPP TS 27.005 §3.2.5, verbose without (U)", "+CMS ERROR: SIM not inserted",
     CmsError(310, "SIM not inserted", True)),
])
def test_cms_error_table(source: str, text: str, expected: CmsError) -> None:
    assert parse_cms_error(text) == expected, source


def test_error_results_reject_other_lines() -> None:
    with pytest.raises(ParseError, match=r"\+CME ERROR"):
        parse_cme_error("ERROR")
    with pytest.raises(ParseError, match=r"\+CMS ERROR"):
        parse_cms_error("+CMS ERROR: ")


# --- ICCID / IMSI -----------------------------------------------------------------------

@pytest.mark.parametrize(("source", "raw", "expected"), [
    (f"{MM} test_iccid_parse_quoted_swap_19_digit", '"984402003576012594F9"',
     "8944200053671052499"),
    (f"{MM} test_iccid_parse_unquoted_swap_20_digit", "98231420326409614067",
     "89324102234690160476"),
    (f"{MM} test_iccid_parse_unquoted_unswapped_19_digit", "8944200053671052499F",
     "8944200053671052499"),
    (f"{MM} test_iccid_parse_quoted_unswapped_20_digit", '"89324102234690160476"',
     "89324102234690160476"),
    (f"{MM} test_iccid_parse_quoted_unswapped_hex_account", '"898602F9091830030220"',
     "898602F9091830030220"),
])
def test_iccid_table(source: str, raw: str, expected: str) -> None:
    assert normalize_iccid(raw) == expected, source
    assert parse_iccid(f"+CCID: {raw}") == expected, source


@pytest.mark.parametrize(("source", "raw"), [
    (f"{MM} test_iccid_parse_short", "982314203264096"),
    (f"{MM} test_iccid_parse_invalid_chars", "98231420326pl9614067"),
    (f"{MM} test_iccid_parse_quoted_invalid_mii", '"0044200053671052499"'),
])
def test_iccid_invalid(source: str, raw: str) -> None:
    with pytest.raises(ParseError) as err:
        parse_iccid(f"+CCID: {raw}")
    assert repr(f"+CCID: {raw}") in str(err.value), source


def test_iccid_wrong_prefix_is_rejected() -> None:
    with pytest.raises(ParseError, match="CCID"):
        parse_iccid("+QCCID: 8944200053671052499F")
    assert parse_iccid("8944200053671052499F") == "8944200053671052499"  # bare AT+CCID answer


@pytest.mark.parametrize(("source", "text", "mcc", "mnc"), [
    ("TS 23.003 §2.2; Korea (450) uses 2-digit MNCs", "450050123456789", "450", "05"),
    ("TS 23.003 §2.2; USA (310) uses 3-digit MNCs", "310410123456789", "310", "410"),
    ("TS 23.003 §2.2; Canada (302) uses 3-digit MNCs", "302720123456789", "302", "720"),
    ("TS 23.003 §2.2; Germany (262) uses 2-digit MNCs", "262011234567890", "262", "01"),
    ("prefixed variant", "+CIMI: 450081234567890", "450", "08"),
])
def test_imsi_table(source: str, text: str, mcc: str, mnc: str) -> None:
    imsi = parse_imsi(text)
    assert (imsi.mcc, imsi.mnc) == (mcc, mnc), source
    assert imsi.mcc_mnc + imsi.msin == imsi.imsi


def test_imsi_mnc_length_override_and_errors() -> None:
    assert parse_imsi("405025123456789", mnc_digits=2) == Imsi("405025123456789", "405", "02")
    for bad in ("45005", "45005012345678901", "0000501234567", "4500501234567X"):
        with pytest.raises(ParseError, match="CIMI"):
            parse_imsi(bad)


@pytest.mark.parametrize(("source", "code", "expected"), [
    (f"{MM} test_parse_operator_id", "41201", ("412", "01")),
    (f"{MM} test_parse_operator_id", "342600", ("342", "600")),
    (f"{MM} test_parse_operator_id", "72400", ("724", "00")),
    (f"{MM} test_parse_operator_id", "724000", ("724", "000")),
    ("SIMCom +CPSI notation", "450-05", ("450", "05")),
])
def test_split_mcc_mnc(source: str, code: str, expected: tuple[str, str]) -> None:
    assert split_mcc_mnc(code) == expected, source


@pytest.mark.parametrize("code", ["000600", "000Z00", "123", "1234567"])
def test_split_mcc_mnc_invalid(code: str) -> None:  # MM test_parse_operator_id invalid rows
    with pytest.raises(ValueError):
        split_mcc_mnc(code)


# --- +CCLK (TS 27.007 §8.15) ------------------------------------------------------------

def tz(quarters: int) -> timezone:
    return timezone(timedelta(minutes=15 * quarters))


@pytest.mark.parametrize(("source", "text", "expected"), [
    (f"{MM} cclk_tests (no zone -> UTC)", '+CCLK: "14/08/05,04:00:21"',
     NetworkTime(datetime(2014, 8, 5, 4, 0, 21, tzinfo=UTC), None, None)),
    (f"{MM} cclk_tests (+40 quarters)", '+CCLK: "14/08/05,04:00:21+40"',
     NetworkTime(datetime(2014, 8, 5, 4, 0, 21, tzinfo=tz(40)), timedelta(hours=10), None)),
    (f"{MM} cclk_tests (negative zone)", '+CCLK: "15/02/28,20:30:40-32"',
     NetworkTime(datetime(2015, 2, 28, 20, 30, 40, tzinfo=tz(-32)), timedelta(hours=-8), None)),
    (f"{MM} cclk_tests (unquoted, one quarter)", "+CCLK: 17/07/26,11:42:15+01",
     NetworkTime(datetime(2017, 7, 26, 11, 42, 15, tzinfo=tz(1)), timedelta(minutes=15), None)),
    (f"{MM} cclk_tests (extra spaces)", '+CCLK:   "15/02/28,20:30:40-32"',
     NetworkTime(datetime(2015, 2, 28, 20, 30, 40, tzinfo=tz(-32)), timedelta(hours=-8), None)),
    ("Korea +09:00 (brief)", '+CCLK: "21/10/25,11:20:13+36"',
     NetworkTime(datetime(2021, 10, 25, 11, 20, 13, tzinfo=tz(36)), timedelta(hours=9), None)),
])
def test_cclk_table(source: str, text: str, expected: NetworkTime) -> None:
    got = parse_cclk(text)
    assert got == expected, source
    assert got.time.utcoffset() == (expected.utc_offset or timedelta(0))


@pytest.mark.parametrize("text", [
    '+CCLK: "XX/XX/XX,XX:XX:XX+XX"',   # MM cclk_tests invalid row
    '+CCLK: "21/13/25,11:20:13+36"',   # month 13
    '+CCLK: "21/10/25,11:20:13+99"',   # zone beyond ±96 quarters
    '+CCLK: "21/10/25,11:20:13+96"',   # a whole day: not a UTC offset
    '+CCLK: "21/10/25,11:20:13+36',    # unterminated quote
])
def test_cclk_malformed(text: str) -> None:
    with pytest.raises(ParseError) as err:
        parse_cclk(text)
    assert repr(text) in str(err.value)


@given(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)),
       st.integers(-95, 95))
def test_cclk_round_trips_any_quarter_hour_zone(moment: datetime, quarters: int) -> None:
    sign = "-" if quarters < 0 else "+"
    text = f'+CCLK: "{moment:%y/%m/%d,%H:%M:%S}{sign}{abs(quarters):02d}"'
    got = parse_cclk(text)
    assert got.time == moment.replace(microsecond=0, tzinfo=tz(quarters))
    assert got.utc_offset == timedelta(minutes=15 * quarters)


# --- +CGDCONT / +CGACT / +CGPADDR (TS 27.007 §10.1.1, §10.1.10, §10.1.14) ---------------

@pytest.mark.parametrize(("source", "text", "expected"), [
    (f"{MM} test_cgdcont_read_response_nokia", '+CGDCONT: 1,"IP",,,0,0',
     (PdpContext(1, "IP", None, None),)),
    (f"{MM} test_cgdcont_read_response_samsung",
     '+CGDCONT: 1,"IP","nate.sktelecom.com","",0,0\r\n'
     '+CGDCONT: 2,"IP","epc.tmobile.com","",0,0\r\n'
     '+CGDCONT: 3,"IP","MAXROAM.com","",0,0\r\n',
     (PdpContext(1, "IP", "nate.sktelecom.com", None), PdpContext(2, "IP", "epc.tmobile.com", None),
      PdpContext(3, "IP", "MAXROAM.com", None))),
    ("SIM7600 fixture in a public C test (IPV4V6, 16-octet zero address)",
     '+CGDCONT: 1,"IPV4V6","nxtgenphone","0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0",0,0,0,0',
     (PdpContext(1, "IPV4V6", "nxtgenphone", None),)),
    (f"{TS} §10.1.1 with an assigned address", '+CGDCONT: 1,"IP","internet","10.0.0.2",0,0',
     (PdpContext(1, "IP", "internet", "10.0.0.2"),)),
    ("no contexts defined", "", ()),
])
def test_cgdcont_table(source: str, text: str, expected: tuple[PdpContext, ...]) -> None:
    assert parse_cgdcont(text) == expected, source


@pytest.mark.parametrize(("source", "text", "expected"), [
    (f"{MM} test_cgact_read_response_none", "", ()),
    (f"{MM} test_cgact_read_response_single_inactive", "+CGACT: 1,0\r\n",
     (PdpContextState(1, False),)),
    (f"{MM} test_cgact_read_response_single_active", "+CGACT: 1,1\r\n",
     (PdpContextState(1, True),)),
    (f"{MM} test_cgact_read_response_multiple", "+CGACT: 1,0\r\n+CGACT: 4,1\r\n+CGACT: 5,0\r\n",
     (PdpContextState(1, False), PdpContextState(4, True), PdpContextState(5, False))),
])
def test_cgact_table(source: str, text: str, expected: tuple[PdpContextState, ...]) -> None:
    assert parse_cgact(text) == expected, source


@pytest.mark.parametrize("text", ["+CGACT: 1,2", "+CGACT: 1", "+CGDCONT: 1,2", "+CGACT: x,1"])
def test_pdp_malformed(text: str) -> None:
    parser = parse_cgact if text.startswith("+CGACT") else parse_cgdcont
    with pytest.raises(ParseError):
        parser(text)


V4 = ipaddress.IPv4Address
V6 = ipaddress.IPv6Address


@pytest.mark.parametrize(("source", "text", "expected"), [
    ("brief / TS 27.007 §10.1.14", '+CGPADDR: 1,"10.0.0.2"',
     (PdpAddress(1, V4("10.0.0.2"), None),)),
    ("Quectel EC200A field notes capture", '+CGPADDR: 1,"10.93.147.203"',
     (PdpAddress(1, V4("10.93.147.203"), None),)),
    (f"{TS} §10.1.14: IPv6 as 16 dot-separated octets",
     '+CGPADDR: 1,"32.1.13.184.0.0.0.0.0.0.0.0.0.0.0.1"',
     (PdpAddress(1, None, V6("2001:db8::1")),)),
    (f"{TS} §10.1.14: IPV4V6 context lists both",
     '+CGPADDR: 1,"10.0.0.2","32.1.13.184.0.0.0.0.0.0.0.0.0.0.0.1"',
     (PdpAddress(1, V4("10.0.0.2"), V6("2001:db8::1")),)),
    (f"{TS} §10.1.14 after +CGPIAF (colon notation)", '+CGPADDR: 2,"2001:DB8::2"',
     (PdpAddress(2, None, V6("2001:db8::2")),)),
    ("no address assigned (unquoted zeros, missing address)",
     "+CGPADDR: 1,0.0.0.0\r\n+CGPADDR: 2", (PdpAddress(1, None, None), PdpAddress(2, None, None))),
])
def test_cgpaddr_table(source: str, text: str, expected: tuple[PdpAddress, ...]) -> None:
    assert parse_cgpaddr(text) == expected, source


@pytest.mark.parametrize("text", [
    '+CGPADDR: 1,"not-an-ip"',            # rg255 public test fixture (rejected there too)
    '+CGPADDR: 1,"10.0.0.2","10.0.0.3"',  # two IPv4
    '+CGPADDR: 1,"1.2.3.4.5.6.7.8"',      # eight octets
])
def test_cgpaddr_malformed(text: str) -> None:
    with pytest.raises(ParseError) as err:
        parse_cgpaddr(text)
    assert repr(text) in str(err.value)


# --- identity (TS 27.007 §5.1-§5.4) and vendor profile ---------------------------------

@pytest.mark.parametrize(("source", "text", "expected"), [
    ("Quectel EG25-G capture, lukejenkins/cwd quectel_ec2x_and_eg2x/outputs.md",
     "Quectel\r\nEG25\r\nRevision: EG25GGBR07A08M2G",
     ModemIdentity("Quectel", "EG25", "EG25GGBR07A08M2G", None)),
    ("brief: Quectel EC25 ATI", "Quectel\nEC25\nRevision: EC25EFAR06A06M4G",
     ModemIdentity("Quectel", "EC25", "EC25EFAR06A06M4G", None)),
    ("SIM7600E-H capture in a public README",
     "Manufacturer: SIMCOM INCORPORATED\nModel: SIMCOM_SIM7600E-H\nRevision: SIM7600M22_V1.1\n"
     "IMEI: 867584034313614\n+GCAP: +CGSM",
     ModemIdentity("SIMCOM INCORPORATED", "SIMCOM_SIM7600E-H", "SIM7600M22_V1.1",
                   "867584034313614")),
    (f"{MM} devids Huawei E1550",
     "\nManufacturer: huawei\nModel: E1550\nRevision: 11.608.09.01.21\nIMEI: 235012412595195\n"
     "+GCAP: +CGSM,+FCLASS,+DS\n",
     ModemIdentity("huawei", "E1550", "11.608.09.01.21", "235012412595195")),
])
def test_ati_table(source: str, text: str, expected: ModemIdentity) -> None:
    assert parse_ati(text) == expected, source


@pytest.mark.parametrize(("source", "text", "expected"), [
    ("Quectel CGSN (bare)", "867584034313614", "867584034313614"),
    ("+CGSN: prefixed variant", "+CGSN: 867584034313614", "867584034313614"),
    ("+CGSN: quoted variant", '+CGSN: "867584034313614"', "867584034313614"),
    (f"{MM} test_cdma_parse_gsn (IMEI + serial)", "356936001568843,NL2A62Z0N5\r\n",
     "356936001568843"),
])
def test_cgsn_table(source: str, text: str, expected: str) -> None:
    assert parse_cgsn(text) == expected, source


@pytest.mark.parametrize("text", ["adsfasdfasdfasdf", "0x6030Cfgh", "86758403431361", ""])
def test_cgsn_malformed(text: str) -> None:  # first two: MM test_cdma_parse_gsn failures
    with pytest.raises(ParseError, match="CGSN"):
        parse_cgsn(text)


def test_cgmi_cgmm_cgmr_variants() -> None:
    assert parse_cgmi("Quectel") == "Quectel"
    assert parse_cgmi('\n"Motorola CE, Copyright 2000"\n') == "Motorola CE, Copyright 2000"  # MM
    assert parse_cgmm("+CGMM: SIMCOM_SIM7600E-H") == "SIMCOM_SIM7600E-H"
    assert parse_cgmr("+CGMR: LE20B04SIM7600G22") == "LE20B04SIM7600G22"
    assert parse_cgmr("EC25EFAR06A06M4G") == "EC25EFAR06A06M4G"
    with pytest.raises(ParseError, match="CGMR"):
        parse_cgmr("EC25EFAR06A06M4G\r\nOK")


@pytest.mark.parametrize(("manufacturer", "model", "expected"), [
    ("Quectel", "EC25", "quectel"),
    ("Quectel", "EG25", "quectel"),
    (None, "EC25-E", "quectel"),
    ("SIMCOM INCORPORATED", "SIMCOM_SIM7600E-H", "simcom"),
    (None, "SIM7600G-H", "simcom"),
    ("SIMTECH INCORPORATED", "SIM5320", "simcom"),
    ("huawei", "E1550", "generic"),
    ("Sierra Wireless, Inc.", "C885", "generic"),
    (None, None, "generic"),
])
def test_vendor_profile(manufacturer: str | None, model: str | None, expected: str) -> None:
    assert vendor_profile(manufacturer, model) == expected


# --- carriers ---------------------------------------------------------------------------

@pytest.mark.parametrize(("wired", "mcc_mnc", "expected"), [
    ("KT", "45008", True),
    ("KT Corp", "450-02", True),
    ("olleh", "45004", True),
    ("SKT", "45005", True),
    ("SK Telecom", "450 11", True),
    ("SK Broadband", "45005", True),
    ("LGU+", "45006", True),
    ("LG U+", "45006", True),
    ("LG Uplus", "45006", True),
    ("kt", "45006", False),
    ("LG U+", "45005", False),
    ("SKT", "45008", False),
    ("AT&T", "310410", True),
    ("Some Local Cable Co", "45005", None),
    ("KT", "99999", None),
    ("KT", "not a plmn", None),
])
def test_same_carrier(wired: str, mcc_mnc: str, expected: bool | None) -> None:
    assert same_carrier(wired, mcc_mnc) is expected


def test_carrier_names() -> None:
    carrier = carrier_for("45005")
    assert carrier is not None and carrier.name == "SK Telecom"
    assert carrier_for("45006") == carrier_for("450-06")
    assert carrier_for("45099") is None


def test_parse_error_is_a_modem_error_with_fields() -> None:
    with pytest.raises(ModemError) as err:
        parse_csq("+CSQ: 21")
    assert isinstance(err.value, ParseError)
    assert (err.value.command, err.value.line) == ("+CSQ", "+CSQ: 21")
    assert str(err.value).endswith("'+CSQ: 21'")
