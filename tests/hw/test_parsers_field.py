"""Issue #10 part 6: parser tables of real responses for "why it cannot connect" (reject
causes, radio state, error reports, time zone, PDP deactivation, SIM hot swap), each row
naming its public source. The strings are copied from the named files; no code is."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from hw.modem.errors import ParseError
from hw.modem.parsers.clock import parse_ctze
from hw.modem.parsers.identity import SimState
from hw.modem.parsers.pdp import PacketEvent, parse_cgev
from hw.modem.parsers.quectel import parse_qiurc, parse_qsimstat, parse_qusim
from hw.modem.parsers.radio import RadioMode, parse_ceer, parse_cfun
from hw.modem.parsers.registration import RegistrationStatus, parse_registration
from hw.modem.reasons import EMM_CAUSES, emm_cause, mask_imsi, not_connected_reason

MM = "ModemManager src/tests/test-modem-helpers.c"
MM_ALTAIR = "ModemManager src/plugins/altair/tests/test-modem-helpers-altair-lte.c ceer_tests"
MOLER = "nokia/moler moler/cmd/at/get_cell_id_lte.py"
MUDITA = "mudita/MuditaOS module-cellular/test/unittest_URC.cpp"
S = RegistrationStatus

# --- +CEREG at <n> = 3..5: <cause_type>,<reject_cause> ---------------------------------

CAUSE_ROWS = [
    # source, text, status, cause_type, reject_cause
    (f"{MOLER} COMMAND_OUTPUT_cell_id_lte_v3_1", '+CEREG: 3,5,"54DB","0F6B0578",15,1,2',
     S.ROAMING, 1, 2),
    (f"{MOLER} COMMAND_OUTPUT_cell_id_lte_v3_2 (empty location)", "+CEREG: 3,5,,,,1,2",
     S.ROAMING, 1, 2),
    (f"{MOLER} COMMAND_OUTPUT_cell_id_lte_v45_1 (all empty)", "+CEREG: 4,5,,,,,,,",
     S.ROAMING, None, None),
    (f"{MOLER} COMMAND_OUTPUT_cell_id_lte_v45_2 (PSM timers, no cause)",
     '+CEREG: 4,5,"54DB","0F6B0578",7,,,"00100100","01000111"', S.ROAMING, None, None),
    (f"{MOLER} COMMAND_OUTPUT_cell_id_lte_v45_3 (cause and PSM timers)",
     '+CEREG: 5,10,"54DB","0F6B0578",7,1,3,"00100100","01000111"',
     S.ROAMING_CSFB_NOT_PREFERRED, 1, 3),
    (f"{MOLER} COMMAND_OUTPUT_cell_id_lte_v45_4", '+CEREG: 5,10,"54DB","0F6B0578",7,1,3',
     S.ROAMING_CSFB_NOT_PREFERRED, 1, 3),
    (f"{MM} test_cereg2_solicited (no cause at n=2)", "\r\n+CEREG: 2,1, 1F00, 79D903 ,7\r\n",
     S.HOME, None, None),
    (f"{MM} test_cereg2_novatel_lte_solicited (<tac>,<rac>,<ci>,<AcT>: no cause)",
     "\r\n+CEREG: 2,1, 1F00, 20 ,79D903 ,7\r\n", S.HOME, None, None),
    ("3GPP TS 27.007 §10.1.22 syntax, URC at n=3: EPS services not allowed",
     '+CEREG: 3,"2B5C","01A2B3C4",7,0,7', S.DENIED, 0, 7),
]


@pytest.mark.parametrize(("source", "text", "status", "cause_type", "reject"), CAUSE_ROWS)
def test_registration_reject_cause_table(source: str, text: str, status: RegistrationStatus,
                                         cause_type: int | None, reject: int | None) -> None:
    reg = parse_registration(text)
    assert (reg.status, reg.cause_type, reg.reject_cause) == (status, cause_type, reject), \
        source


# --- +CFUN? ---------------------------------------------------------------------------

CFUN_ROWS = [
    (f"{MM} test_cfun_response", "+CFUN: 1", RadioMode.FULL),
    (f"{MM} test_cfun_response", "+CFUN: 1,0", RadioMode.FULL),
    (f"{MM} test_cfun_response", "+CFUN: 0", RadioMode.MINIMUM),
    (f"{MM} test_cfun_response", "+CFUN: 0,0", RadioMode.MINIMUM),
    (f"{MM} test_cfun_response (vendor level)", "+CFUN: 19", RadioMode.OTHER),
    (f"{MM} test_cfun_response (vendor level)", "+CFUN: 19,0", RadioMode.OTHER),
    (f"{MM} test_cfun_generic_response (low power)", "+CFUN: 4", RadioMode.AIRPLANE),
    (f"{MM} test_cfun_generic_response (low power)", "+CFUN: 4,0", RadioMode.AIRPLANE),
    ("nokia/moler moler/cmd/at/get_functionality_level.py COMMAND_OUTPUT_fun_level",
     "+CFUN: 1", RadioMode.FULL),
]


@pytest.mark.parametrize(("source", "text", "mode"), CFUN_ROWS)
def test_cfun_table(source: str, text: str, mode: RadioMode) -> None:
    assert parse_cfun(text) is mode, source
    assert mode.radio_on is (mode in (RadioMode.FULL, RadioMode.OTHER))


@pytest.mark.parametrize("text", ["+CFUN:", "+CFUN: on", "+CFUN: -1", "CFUN 1"])
def test_cfun_garbage_is_a_parse_error(text: str) -> None:
    with pytest.raises(ParseError):
        parse_cfun(text)


# --- AT+CEER --------------------------------------------------------------------------

CEER_ROWS = [
    (f"{MM_ALTAIR} (empty answer is a good one)", "", None),
    (f"{MM_ALTAIR}", "+CEER:", None),
    (f"{MM_ALTAIR}", "+CEER: EPS_AND_NON_EPS_SERVICES_NOT_ALLOWED",
     "EPS_AND_NON_EPS_SERVICES_NOT_ALLOWED"),
    (f"{MM_ALTAIR}", "+CEER: NO_SUITABLE_CELLS_IN_TRACKING_AREA",
     "NO_SUITABLE_CELLS_IN_TRACKING_AREA"),
    ("ModemManager src/mm-broadband-bearer.c (text after '+CEER: ' is the reason)",
     "+CEER: Normal call clearing", "Normal call clearing"),
    ("hw.modem.simulator EC25 (`AT+CEER` without a failure)",
     '+CEER: "No cause information available"', None),
]


@pytest.mark.parametrize(("source", "text", "report"), CEER_ROWS)
def test_ceer_table(source: str, text: str, report: str | None) -> None:
    assert parse_ceer(text) == report, source


def test_ceer_wrong_response_is_a_parse_error() -> None:
    with pytest.raises(ParseError):  # MM_ALTAIR: { "WRONG RESPONSE", NULL }
        parse_ceer("WRONG RESPONSE")


# --- +CTZE ----------------------------------------------------------------------------

CTZE_ROWS = [
    (f'{MUDITA} "+Ctze" ctze +08', '+CTZE: "+08",1,"2020/10/21,13:49:57"',
     timedelta(hours=2), 1, datetime(2020, 10, 21, 13, 49, 57, tzinfo=UTC)),
    (f'{MUDITA} "+Ctze" ctze -08', '+CTZE: "-08",1,"2020/10/21,13:49:57"',
     timedelta(hours=-2), 1, datetime(2020, 10, 21, 13, 49, 57, tzinfo=UTC)),
    (f'{MUDITA} "+Ctze" ctze -00', '+CTZE: "-00",0,"2020/10/21,13:49:57"',
     timedelta(0), 0, datetime(2020, 10, 21, 13, 49, 57, tzinfo=UTC)),
    ("Korea, +CTZE as the EC25 simulator sends it", '+CTZE: "+36",0,"2024/05/01,03:00:00"',
     timedelta(hours=9), 0, datetime(2024, 5, 1, 3, 0, tzinfo=UTC)),
]


@pytest.mark.parametrize(("source", "text", "offset", "dst", "utc"), CTZE_ROWS)
def test_ctze_table(source: str, text: str, offset: timedelta, dst: int, utc: datetime) -> None:
    report = parse_ctze(text)
    assert (report.utc_offset, report.dst_hours, report.time) == (offset, dst, utc), source
    assert report.time is not None and report.time.utcoffset() == offset


def test_ctze_too_short_is_a_parse_error() -> None:
    with pytest.raises(ParseError):  # MUDITA "too short"
        parse_ctze('+CTZE: "-08","2020/10/21,13:49:57"')


# --- +CGEV ----------------------------------------------------------------------------

CGEV_ROWS = [
    (f"{MM} cgev_indication_tests", "+CGEV: NW DEACT IP, 123.123.123.123",
     PacketEvent.NW_DEACT, None),
    (f"{MM} cgev_indication_tests", "+CGEV: NW DEACT IP, 123.123.123.123, 1",
     PacketEvent.NW_DEACT, 1),
    (f"{MM} cgev_indication_tests", "+CGEV: ME DEACT IP, 123.123.123.123, 1",
     PacketEvent.ME_DEACT, 1),
    (f"{MM} cgev_indication_tests", "+CGEV: NW PDN DEACT 2", PacketEvent.NW_DEACT, 2),
    (f"{MM} cgev_indication_tests", "+CGEV: ME PDN DEACT 2", PacketEvent.ME_DEACT, 2),
    (f"{MM} cgev_indication_tests (secondary: <p_cid>,<cid>,<event_type>)",
     "+CGEV: NW DEACT 3, 2, 1", PacketEvent.NW_DEACT, 2),
    (f"{MM} cgev_indication_tests", "+CGEV: NW PDN ACT 2", PacketEvent.NW_ACT, 2),
    (f"{MM} cgev_indication_tests (with <reason>,<cid_other>)", "+CGEV: ME PDN ACT 2, 3, 4",
     PacketEvent.ME_ACT, 2),
    (f"{MM} cgev_indication_tests", "+CGEV: NW DETACH", PacketEvent.NW_DETACH, None),
    (f"{MM} cgev_indication_tests", "+CGEV: ME DETACH", PacketEvent.ME_DETACH, None),
    (f"{MM} cgev_indication_tests", "+CGEV: REJECT IP, 123.123.123.123", PacketEvent.REJECT,
     None),
    (f"{MM} cgev_indication_tests", "+CGEV: NW REACT IP, 123.123.123.123, 1",
     PacketEvent.OTHER, 1),
]


@pytest.mark.parametrize(("source", "text", "kind", "cid"), CGEV_ROWS)
def test_cgev_table(source: str, text: str, kind: PacketEvent, cid: int | None) -> None:
    event = parse_cgev(text)
    assert (event.kind, event.cid) == (kind, cid), source


# --- Quectel: +QIURC, +QUSIM, +QSIMSTAT -----------------------------------------------


def test_qiurc_pdpdeact() -> None:
    # MUDITA "+Qiurc: TCP Context and connection message" (normal message)
    urc = parse_qiurc('+QIURC: "pdpdeact",1')
    assert (urc.kind, urc.context_id) == ("pdpdeact", 1)
    # MUDITA "corrupted, but OK format": another kind, no context
    assert parse_qiurc('+QIURC:"pdpdeactwww",1').kind == "pdpdeactwww"
    with pytest.raises(ParseError):
        parse_qiurc('+QIURC: "pdpdeact",1,3')


def test_qusim_and_qsimstat() -> None:
    # ModemManager src/plugins/quectel/mm-shared-quectel.c: the "+QUSIM: 1" SIM swap URC
    assert parse_qusim("+QUSIM: 1") == 1
    with pytest.raises(ParseError):
        parse_qusim("+QUSIM: 7")
    # Quectel EC25 AT manual (AT+QSIMSTAT): <enable>,<inserted_status>
    assert parse_qsimstat("+QSIMSTAT: 1,0").inserted is False
    assert parse_qsimstat("+QSIMSTAT: 1,1").inserted is True


# --- the plain-language reasons -------------------------------------------------------


def test_emm_cause_table_covers_the_issue_list() -> None:
    for code in (3, 6, 7, 11, 12, 13, 15):
        assert code in EMM_CAUSES
    assert "plan expired" in emm_cause(7).reason
    assert emm_cause(15).reason.startswith("no coverage")
    assert emm_cause(250).name == "cause #250"


def test_mask_imsi() -> None:
    assert mask_imsi("450081234567890") == "45008******7890"
    assert mask_imsi("310410123456789", 3) == "310410*****6789"
    assert mask_imsi(None) is None


BASE = dict(data_up=False, present=True, sim_state=SimState.READY, sim_fault=None,
            radio_on=True, registration=S.HOME, reject_cause=None)


@pytest.mark.parametrize(("changes", "reason"), [
    ({"data_up": True}, None),
    ({"present": False}, "modem not answering"),
    ({"sim_state": SimState.NOT_INSERTED}, "no SIM"),
    ({"sim_fault": "pin_required"}, "SIM PIN required (set lte.pin)"),
    ({"sim_state": SimState.SIM_PIN}, "SIM PIN required (set lte.pin)"),
    ({"radio_on": False, "registration": S.NOT_REGISTERED}, "radio off"),
    ({"registration": S.DENIED, "reject_cause": 7},
     "SIM rejected by the network: plan expired or SIM not activated? "
     "(EMM #7 EPS services not allowed)"),
    ({"registration": S.DENIED}, "registration rejected by the network"),
    ({"registration": S.SEARCHING}, "no coverage (searching for a network)"),
    ({"registration": S.UNKNOWN}, "no coverage"),
    ({"data_down_reason": "network_deactivated"}, "network deactivated the data connection"),
    ({}, "data connection not up yet"),
])
def test_not_connected_reason(changes: dict[str, object], reason: str | None) -> None:
    assert not_connected_reason(**{**BASE, **changes}) == reason  # type: ignore[arg-type]
