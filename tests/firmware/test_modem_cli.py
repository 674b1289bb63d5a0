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
