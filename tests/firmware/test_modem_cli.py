"""`storebox modem info|at` as a real process against the EC25 simulator on a pty."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator

import pytest
import serial

from hw.modem.simulator import ModemSimulator, SimCard


async def storebox(*args: str, timeout: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "firmware", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def sim() -> AsyncIterator[ModemSimulator]:
    simulator = ModemSimulator(sims=[SimCard.kt(), SimCard.skt()])
    await simulator.start()
    try:
        yield simulator
    finally:
        await simulator.stop()


async def test_info_reads_like_mmcli(sim: ModemSimulator) -> None:
    code, out, err = await storebox("modem", "info", "--port", sim.slave_path,
                                    "--wired-carrier", "KT")
    assert code == 0, err
    sections = [line.split("|")[0].strip() for line in out.splitlines()
                if "|" in line and line.split("|")[0].strip()]
    assert sections == ["General", "Hardware", "SIM", "3GPP", "Signal", "Bearer"]
    assert "model: EC25" in out
    assert "operator id: 45008" in out
    assert "registration: yes (home)" in out
    assert "rssi: -65 dBm" in out
    assert "one outage takes both" in out


async def test_info_json_and_carrier_diversity(sim: ModemSimulator) -> None:
    code, out, _ = await storebox("modem", "info", "--port", sim.slave_path, "--json",
                                  "--wired-carrier", "SK Telecom")
    assert code == 0
    doc = json.loads(out)
    assert doc["identity"]["model"] == "EC25"
    assert doc["sim_mcc_mnc"] == "45008"
    assert doc["registered"] is True and doc["rat"] == "lte"
    assert doc["same_carrier"] is False


async def test_raw_at_command(sim: ModemSimulator) -> None:
    code, out, _ = await storebox("modem", "at", "--port", sim.slave_path, "AT+CSQ")
    assert code == 0
    assert out.splitlines() == ["+CSQ: 24,99", "OK"]
    code, out, _ = await storebox("modem", "at", "--port", sim.slave_path, "AT+NOSUCH")
    assert code == 1
    assert out.strip() == "ERROR"


async def test_a_mute_modem_gives_one_line_and_nonzero(sim: ModemSimulator) -> None:
    sim.mute()
    code, out, err = await storebox("modem", "info", "--port", sim.slave_path,
                                    "--timeout", "0.5")
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"storebox modem: {sim.slave_path}: no answer to ")


async def test_a_port_owned_by_someone_else_is_not_fought_over(sim: ModemSimulator) -> None:
    owner = serial.Serial(sim.slave_path, exclusive=True)
    try:
        code, _, err = await storebox("modem", "info", "--port", sim.slave_path)
    finally:
        owner.close()
    assert code == 1
    assert "the port is in use: the storebox daemon owns it while it runs" in err
    assert "Traceback" not in err


async def test_no_such_port() -> None:
    code, _, err = await storebox("modem", "info", "--port", "/dev/ttyNOSUCH9")
    assert code == 1
    assert err.startswith("storebox modem: /dev/ttyNOSUCH9: cannot open the port")
    assert err.count("\n") == 1


async def test_info_while_the_modem_is_still_booting(sim: ModemSimulator) -> None:
    # issue #10: power-up RDY arrives while the first command is outstanding (input is
    # lost while the modem boots): the CLI waits for the boot, re-initialises, answers
    sim.boot_delay_s = 3.0
    sim.power_cycle()
    code, out, err = await storebox("modem", "info", "--port", sim.slave_path, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["registered"] is True and doc["mcc_mnc"] == "45008"
    assert doc["signal_dbm"] == -65 and doc["reboots_seen"] == 1
    assert doc["parse_errors"] == 0 and sim.power == "on"


async def test_info_when_the_modem_reboots_mid_session(sim: ModemSimulator) -> None:
    # issue #10: "modem rebooted ('RDY') while 'AT+COPS?' was outstanding" used to exit 1
    sim.reboot_on("AT+COPS?")
    code, out, err = await storebox("modem", "info", "--port", sim.slave_path, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["operator"] == "KT" and doc["mcc_mnc"] == "45008"
    assert doc["registered"] is True and doc["reboots_seen"] == 1
    assert sim.received.count("ATE0") >= 2  # re-initialised after the reboot


#: Answers in the layouts modems really send (issue #10): `storebox modem info` reads
#: values through each of them.
LAYOUTS = [
    ("NR5G-SA +QCSQ (RM520N)", "AT+QCSQ", b'\r\n+QCSQ: "NR5G",-75,4,-11\r\n\r\nOK\r\n',
     "rsrp_dbm", -75.0),
    ("EN-DC two-line +QCSQ", "AT+QCSQ",
     b'\r\n+QCSQ: "LTE",-61,-89,180,-9\r\n+QCSQ: "NR5G",-80,20,-12\r\n\r\nOK\r\n',
     "rsrp_dbm", -89.0),
    ("+CEREG n=3 with <cause_type>,<reject_cause> after the cell", "AT+CEREG?",
     b'\r\n+CEREG: 3,1,"1A2B","1A2D001",7,,\r\n\r\nOK\r\n', "tac", 0x1A2B),
    ("<tac>,<rac>,<ci>,<AcT> (Novatel E362)", "AT+CEREG?",
     b"\r\n+CEREG: 2,1, 1A2B, 20 ,1A2D001 ,7\r\n\r\nOK\r\n", "cell_id", 0x1A2D001),
    ("glued final", "AT+CSQ", b"\r\n+CSQ: 18,99OK\r\n", "registered", True),
    ("a +CTZE URC inside the +COPS answer", "AT+COPS?",
     b'\r\n+COPS: 0,0,"KT",7\r\n+CTZE: "+36",0,"2024/05/01,03:00:00"\r\n\r\nOK\r\n',
     "utc_offset_min", 540),
]


@pytest.mark.parametrize(("name", "command", "raw", "field", "value"), LAYOUTS)
async def test_info_reads_values_through_each_layout(sim: ModemSimulator, name: str,
                                                     command: str, raw: bytes, field: str,
                                                     value: object) -> None:
    sim.answer_raw(command, raw)
    code, out, err = await storebox("modem", "info", "--port", sim.slave_path, "--json")
    assert code == 0, (name, err)
    doc = json.loads(out)
    assert doc[field] == value, name
    assert doc["registered"] is True and doc["sim_mcc_mnc"] == "45008", name
    assert doc["imsi"] == "45008******7890"


async def test_info_says_why_lte_is_not_connected(sim: ModemSimulator) -> None:
    sim.lose_registration(3, cause=7)
    code, out, err = await storebox("modem", "info", "--port", sim.slave_path)
    assert code == 0, err
    assert "why not: SIM rejected by the network: plan expired" in out
    assert "reject cause: EMM #7" in out
    sim.restore_registration()
    sim.remove_sim(0)
    code, out, err = await storebox("modem", "info", "--port", sim.slave_path, "--json")
    assert code == 0, err
    assert json.loads(out)["not_connected_reason"] == "no SIM"


def test_status_and_fleet_document_say_why_lte_is_not_connected() -> None:
    from firmware.cli.status_view import render_status
    from firmware.components.modem import apply_snapshot
    from firmware.state import BoxState
    from firmware.status import status_document
    from hw.modem.parsers.identity import SimState
    from hw.modem.parsers.registration import RegistrationStatus
    from hw.modem.status import ModemStatus

    state = BoxState("store-0001", "1.2.3")
    apply_snapshot(state, ModemStatus(
        present=True, sim_state=SimState.READY, registered=False,
        registration=RegistrationStatus.DENIED, reject_cause=7, imsi="45008******7890",
        not_connected_reason="SIM rejected by the network: plan expired or SIM not "
                             "activated? (EMM #7 EPS services not allowed)"))
    doc = status_document(state)  # also the fleet's retained `state` message
    modem = doc["modem"]
    assert modem["not_connected_reason"].startswith("SIM rejected by the network")
    assert modem["reject_cause"] == 7 and modem["imsi"] == "45008******7890"
    text = render_status(doc)
    assert "why not: SIM rejected by the network: plan expired" in text
    apply_snapshot(state, ModemStatus(present=True, data_up=True, registered=True))
    assert "why not" not in render_status(status_document(state))
