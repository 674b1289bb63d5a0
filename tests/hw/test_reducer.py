"""hw.modem.reducer as a table, like ModemManager's parser tests: the state before, a real
modem line (each row names its source), the state after. No modem, no pty, no loop."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from hw.modem.errors import ParseError
from hw.modem.parsers.identity import SimState
from hw.modem.parsers.radio import RadioMode
from hw.modem.parsers.registration import AccessTechnology, RegistrationStatus
from hw.modem.reducer import (
    NETWORK_DEACTIVATED,
    UrcContext,
    boot_settled_by,
    reduce_urc,
)
from hw.modem.state import ModemState, view
from hw.modem.status import DataStatus, OperatorInfo, RegistrationInfo, SignalReading

MM = "ModemManager src/tests/test-modem-helpers.c"
MMQ = "ModemManager src/plugins/quectel/mm-shared-quectel.c"
MUDITA = "mudita/MuditaOS module-cellular/test/unittest_URC.cpp"
EC25 = "Quectel EC25&EC21 AT Commands Manual"
TS = "3GPP TS 27.007"

_UP = DataStatus(up=True, cid=1, ip="10.0.0.2", ipv6=None, method="ecm", apn="internet")
_LTE = RegistrationInfo(status=RegistrationStatus.HOME, area_code=0x1F34, cell_id=0x1A2B3C,
                        rat=AccessTechnology.LTE, source="+CEREG")
_SIGNAL = SignalReading(rssi_dbm=-71, rsrp_dbm=-95.0, rsrq_db=-9.0, sinr_db=12.0,
                        rat=AccessTechnology.LTE, source="+QCSQ")
#: A modem in service: SIM ready, registered on LTE, signal, the data call up.
CONNECTED = ModemState(
    present=True, sim_state=SimState.READY, sim_mcc_mnc="45008", iccid="8982",
    imsi="45008******7890", registrations={"+CEREG": _LTE},
    operator=OperatorInfo("KT", "45008", AccessTechnology.LTE, 0), signal=_SIGNAL,
    data=_UP, radio=RadioMode.FULL)

#: (source, state before, URC, context, fields of the state after that changed)
ROWS: list[tuple[str, ModemState, str, UrcContext, dict[str, Any]]] = [
    (f"{MM} cereg_tests (URC, TAC/CI/AcT)", ModemState(), '+CEREG: 1,"1F34","01A2B3C",7',
     UrcContext(), {"registrations": {"+CEREG": _LTE}}),
    (f"{TS} 10.1.22 +CEREG URC <n>=3 with an EMM reject cause", CONNECTED,
     '+CEREG: 3,"1F34","01A2B3C",7,0,7', UrcContext(),
     {"registrations": {"+CEREG": dataclasses.replace(_LTE, status=RegistrationStatus.DENIED)},
      "cause_type": 0, "reject_cause": 7, "operator": None}),
    (f"{MM} creg_tests (URC, searching)", ModemState(), "+CREG: 2", UrcContext(),
     {"registrations": {"+CREG": RegistrationInfo(RegistrationStatus.SEARCHING, None, None,
                                                  None, "+CREG")}}),
    (f"{EC25} +CPIN URC: SIM ready", ModemState(sim_state=SimState.SIM_PIN,
                                                   sim_fault="pin_required"),
     "+CPIN: READY", UrcContext(), {"sim_state": SimState.READY, "sim_fault": None}),
    (f"{EC25} +CPIN URC: PUK after wrong PINs", CONNECTED, "+CPIN: SIM PUK", UrcContext(),
     {"sim_state": SimState.SIM_PUK, "sim_fault": "puk_required",
      "data": dataclasses.replace(_UP, up=False)}),
    (f"{EC25} +CPIN NOT READY after +QSIMSTAT: 1,0 (still no SIM)",
     ModemState(sim_state=SimState.NOT_INSERTED), "+CPIN: NOT READY", UrcContext(), {}),
    (f"{EC25} +QIND csq", CONNECTED, '+QIND: "csq",21,99', UrcContext(),
     {"signal": dataclasses.replace(_SIGNAL, rssi_dbm=-71, source="+QIND csq")}),
    (f"{EC25} +QIND SMS DONE (informational)", CONNECTED, '+QIND: SMS DONE', UrcContext(), {}),
    (f"{EC25} +QNETDEVSTATUS: data call down", CONNECTED, "+QNETDEVSTATUS: 0", UrcContext(),
     {"data": dataclasses.replace(_UP, up=False)}),
    (f"{EC25} +QNETDEVSTATUS: data call up, nothing known yet", ModemState(),
     "+QNETDEVSTATUS: 1", UrcContext(cid=3),
     {"data": DataStatus(up=True, cid=3, ip=None, ipv6=None, method="ecm")}),
    (f"{MM} cgev_indication_tests: network deactivation", CONNECTED,
     "+CGEV: NW PDN DEACT 1", UrcContext(),
     {"data": dataclasses.replace(_UP, up=False), "data_down_reason": NETWORK_DEACTIVATED}),
    (f"{MM} cgev_indication_tests: another context", CONNECTED, "+CGEV: NW PDN DEACT 2",
     UrcContext(), {}),
    (f"{MM} cgev_indication_tests: the host detached", CONNECTED, "+CGEV: ME DETACH",
     UrcContext(), {"data": dataclasses.replace(_UP, up=False)}),
    (f'{EC25} +QIURC: "pdpdeact"', CONNECTED, '+QIURC: "pdpdeact",1', UrcContext(),
     {"data": dataclasses.replace(_UP, up=False), "data_down_reason": NETWORK_DEACTIVATED}),
    (f"{EC25} +CFUN URC: airplane mode", CONNECTED, "+CFUN: 4", UrcContext(),
     {"radio": RadioMode.AIRPLANE, "registrations": {}, "operator": None, "signal": None,
      "data": None}),
    (f"{EC25} +QSIMSTAT: SIM pulled", CONNECTED, "+QSIMSTAT: 1,0", UrcContext(),
     {"sim_state": SimState.NOT_INSERTED, "iccid": None, "imsi": None, "sim_mcc_mnc": None,
      "registrations": {}, "operator": None, "signal": None, "data": None}),
    (f"{EC25} +QSIMSTAT: SIM inserted", ModemState(sim_state=SimState.NOT_INSERTED),
     "+QSIMSTAT: 1,1", UrcContext(), {"sim_state": None, "needs_refresh": True}),
    (f"{MMQ} +QUSIM: 1 outside a boot (a SIM swap)", CONNECTED, "+QUSIM: 1", UrcContext(),
     {"needs_refresh": True}),
    (f"{MMQ} +QUSIM: 1 during a boot", ModemState(), "+QUSIM: 1", UrcContext(booting=True), {}),
    (f'{MUDITA} "+Ctze" ctze +08', ModemState(), '+CTZE: "+08",1,"2020/10/21,13:49:57"',
     UrcContext(), {"utc_offset_min": 120}),
    (f"{EC25} RDY: the modem rebooted", dataclasses.replace(CONNECTED, error_report="x"),
     "RDY", UrcContext(),
     {"reboots_seen": 1, "sim_state": None, "radio": None, "error_report": None,
      "registrations": {}, "operator": None, "signal": None, "data": None}),
    (f"{EC25} POWERED DOWN", CONNECTED, "POWERED DOWN", UrcContext(),
     {"present": False, "registrations": {}, "operator": None, "signal": None,
      "data": None}),
]


@pytest.mark.parametrize(("source", "before", "line", "context", "changed"), ROWS,
                         ids=[row[0] for row in ROWS])
def test_urc_table(source: str, before: ModemState, line: str, context: UrcContext,
                   changed: dict[str, Any]) -> None:
    after = reduce_urc(before, line, context)
    assert after == dataclasses.replace(before, **changed)


@pytest.mark.parametrize("line", ["PB DONE", "SMS DONE", "+QIND: PB DONE", "OK"])
def test_lines_the_state_does_not_follow(line: str) -> None:
    assert reduce_urc(CONNECTED, line) in (None, CONNECTED)


def test_a_urc_that_does_not_parse_raises_and_the_state_is_unchanged() -> None:
    with pytest.raises(ParseError):
        reduce_urc(CONNECTED, "+CPIN: WHAT")
    assert CONNECTED.sim_state is SimState.READY  # frozen: nothing to roll back


@pytest.mark.parametrize(("line", "settled"), [
    ("+QIND: PB DONE", True), ("PB DONE", True), ("+CPIN: SIM PIN", True),
    ("+CPIN: NOT INSERTED", True), ("+CPIN: READY", False), ("SMS DONE", False),
])
def test_boot_settled_by(line: str, settled: bool) -> None:
    assert boot_settled_by(line) is settled


def test_the_view_of_a_connected_modem() -> None:
    status = view(CONNECTED, wired_carrier="KT")
    assert status.registered and status.tac == 0x1F34 and status.rat is AccessTechnology.LTE
    assert status.operator == "KT" and status.data_up and status.ip == "10.0.0.2"
    assert status.same_carrier is True and status.radio_on is True
    assert status.not_connected_reason is None


def test_the_view_after_a_rejection_says_why() -> None:
    rejected = reduce_urc(CONNECTED, '+CEREG: 3,"1F34","01A2B3C",7,0,7')
    assert rejected is not None
    rejected = reduce_urc(rejected, "+CGEV: NW DETACH")
    assert rejected is not None
    status = view(rejected)
    assert status.registered is False and status.operator is None and status.tac is None
    assert status.reject_cause == 7 and not status.data_up
    assert status.not_connected_reason is not None
    assert status.not_connected_reason.startswith("SIM rejected by the network")
