"""Vendor profiles against a scripted AT port: which commands, in which order, parsed how.

The EC25 simulator covers the Quectel profile end to end (test_modem.py); the SIMCom and
generic paths, and Quectel firmware fallbacks, are pinned down here with canned answers
(shapes as in the parser tests' captures)."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from hw.modem.errors import CommandError, NotSupported
from hw.modem.exchange import Response
from hw.modem.parsers.quectel import QuectelUsbNet
from hw.modem.parsers.registration import AccessTechnology
from hw.modem.profiles import (
    GenericProfile,
    QuectelProfile,
    SimcomProfile,
    Timeouts,
    profile_for,
)
from hw.modem.profiles.generic import check_apn, pdp_context_command

Answer = list[str] | CommandError


class ScriptedPort:
    """An `AtPort` answering from a script; anything unscripted is `ERROR`."""

    def __init__(self, script: dict[str, Answer]) -> None:
        self.script = script
        self.sent: list[str] = []
        self.timeouts: list[float | None] = []

    async def command(
        self,
        command: str,
        *,
        timeout: float | None = None,
        prefix: str | Iterable[str] | None = None,
        payload: bytes | None = None,
    ) -> Response:
        self.sent.append(command)
        self.timeouts.append(timeout)
        answer = self.script.get(command, CommandError(command, "ERROR"))
        if isinstance(answer, CommandError):
            raise answer
        return Response(command, tuple(answer), "OK", 0.001)


@pytest.mark.parametrize(("maker", "model", "cls"), [
    ("Quectel", "EC25", QuectelProfile),
    ("Quectel", "EG25", QuectelProfile),
    ("SIMCOM INCORPORATED", "SIMCOM_SIM7600E-H", SimcomProfile),
    (None, "SIM7600G", SimcomProfile),
    ("Telit", "LE910C4", GenericProfile),
])
def test_profile_for_identity(maker: str | None, model: str, cls: type) -> None:
    profile = profile_for(maker, model)
    assert type(profile) is cls and profile.model == model


def test_profile_options_reach_quectel_only() -> None:
    quectel = profile_for("Quectel", "EC25", usbnet=QuectelUsbNet.RMNET)
    assert isinstance(quectel, QuectelProfile) and not quectel.ecm
    assert type(profile_for("Telit", "LE910", usbnet=QuectelUsbNet.RMNET)) is GenericProfile


async def test_generic_data_bring_up_order() -> None:
    port = ScriptedPort({
        'AT+CGDCONT=1,"IP","internet"': [], "AT+CGATT=1": [], "AT+CGACT=1,1": [],
        "AT+CGPADDR=1": ['+CGPADDR: 1,"10.0.0.5"'],
    })
    profile = GenericProfile(Timeouts(data=42.0))
    assert not await profile.prepare_data(port)
    status = await profile.activate_data(port, "internet")
    assert port.sent == ['AT+CGDCONT=1,"IP","internet"', "AT+CGATT=1", "AT+CGACT=1,1",
                         "AT+CGPADDR=1"]
    assert port.timeouts[1:3] == [42.0, 42.0]  # attach and activation get the data timeout
    assert (status.up, status.ip, status.method) == (True, "10.0.0.5", "pdp")


async def test_generic_data_status_and_teardown() -> None:
    port = ScriptedPort({
        "AT+CGACT?": ["+CGACT: 1,1", "+CGACT: 2,0"],
        "AT+CGPADDR=1": ['+CGPADDR: 1,"10.0.0.5","32.1.13.184.0.0.0.0.0.0.0.0.0.0.0.1"'],
        "AT+CGACT=0,1": [],
    })
    profile = GenericProfile()
    status = await profile.read_data_status(port)
    assert status.up and status.ip == "10.0.0.5" and status.ipv6 == "2001:db8::1"
    await profile.deactivate_data(port)
    assert port.sent[-1] == "AT+CGACT=0,1"


async def test_generic_signal_and_time() -> None:
    port = ScriptedPort({
        "AT+CSQ": ["+CSQ: 24,99"],
        "AT+CESQ": ["+CESQ: 99,99,255,255,20,46"],
        "AT+CCLK?": ['+CCLK: "24/06/01,12:04:05+36"'],
    })
    profile = GenericProfile()
    reading = await profile.read_signal(port)
    assert (reading.rssi_dbm, reading.rsrp_dbm, reading.rsrq_db) == (-65, -95.0, -10.0)
    assert reading.sinr_db is None and reading.rat is AccessTechnology.LTE
    when = await profile.read_network_time(port)
    assert when is not None and when.time.isoformat() == "2024-06-01T12:04:05+09:00"


async def test_generic_signal_without_cesq() -> None:
    reading = await GenericProfile().read_signal(ScriptedPort({"AT+CSQ": ["+CSQ: 10,99"]}))
    assert reading.rssi_dbm == -93 and reading.rsrp_dbm is None and reading.source == "+CSQ"


@pytest.mark.parametrize("cls", [GenericProfile, SimcomProfile])
async def test_slot_switch_is_not_supported_outside_quectel(cls: type[GenericProfile]) -> None:
    port = ScriptedPort({})
    profile = cls(model="X1")
    assert not profile.supports_sim_switch
    with pytest.raises(NotSupported, match=f"SIM slot switching is not supported on a "
                                           f"{profile.name} modem X1"):
        await profile.switch_sim(port, 1)
    assert port.sent == []  # nothing guessed at
    assert await profile.read_sim_slot(port) is None


async def test_simcom_signal_from_cpsi() -> None:
    port = ScriptedPort({"AT+CPSI?": [
        "+CPSI: LTE,Online,450-05,0x2B5C,27447834,123,EUTRAN-BAND3,1550,5,5,-95,-1100,-650,12"]})
    reading = await SimcomProfile().read_signal(port)
    assert port.sent == ["AT+CPSI?"]
    assert reading.rssi_dbm == -65 and reading.rsrp_dbm == -110.0 and reading.rsrq_db == -9.5
    assert reading.sinr_db == 4.0 and reading.rat is AccessTechnology.LTE


async def test_simcom_signal_off_lte_adds_csq() -> None:
    port = ScriptedPort({"AT+CPSI?": ["+CPSI: NO SERVICE,Online"], "AT+CSQ": ["+CSQ: 99,99"]})
    reading = await SimcomProfile().read_signal(port)
    assert port.sent == ["AT+CPSI?", "AT+CSQ"]
    assert reading.rssi_dbm is None and reading.rat is None


async def test_simcom_iccid_and_init() -> None:
    port = ScriptedPort({"AT+CICCID": ["+ICCID: 89820512345678901234"]})
    profile = SimcomProfile()
    assert await profile.read_iccid(port) == "89820512345678901234"
    assert ("AT+CTZU=1", False) in profile.init_commands()
    assert ("AT+CEREG=2", False) in profile.init_commands()


async def test_quectel_signal_falls_back_to_qeng() -> None:
    port = ScriptedPort({'AT+QENG="servingcell"': [
        '+QENG: "servingcell","NOCONN","LTE","FDD",450,08,1A2D001,123,1550,3,5,5,1A2B,'
        '-95,-10,-65,16,30']})
    reading = await QuectelProfile().read_signal(port)
    assert port.sent == ["AT+QCSQ", 'AT+QENG="servingcell"']
    assert reading.source == "+QENG" and reading.sinr_db == 12.0
    assert reading.rat is AccessTechnology.LTE


async def test_quectel_no_service_signal() -> None:
    reading = await QuectelProfile().read_signal(ScriptedPort({"AT+QCSQ": ['+QCSQ: "NOSERVICE"']}))
    assert reading.rssi_dbm is None and reading.rat is None


@pytest.mark.parametrize(("current", "changes"), [("1", False), ("0", True), ("2", True)])
async def test_quectel_prepare_data_sets_ecm_only_when_needed(current: str,
                                                              changes: bool) -> None:
    port = ScriptedPort({'AT+QCFG="usbnet"': [f'+QCFG: "usbnet",{current}'],
                         'AT+QCFG="usbnet",1': []})
    assert await QuectelProfile().prepare_data(port) is changes
    assert ('AT+QCFG="usbnet",1' in port.sent) is changes


async def test_quectel_without_usbnet_setting_needs_no_reboot() -> None:
    assert not await QuectelProfile().prepare_data(ScriptedPort({}))


async def test_quectel_qlts_without_nitz_is_none() -> None:
    port = ScriptedPort({"AT+QLTS=2": ['+QLTS: ""']})
    assert await QuectelProfile().read_network_time(port) is None


async def test_quectel_rmnet_uses_the_generic_data_path() -> None:
    port = ScriptedPort({
        'AT+CGDCONT=1,"IP","internet"': [], "AT+CGATT=1": [], "AT+CGACT=1,1": [],
        "AT+CGPADDR=1": ['+CGPADDR: 1,"10.0.0.5"']})
    status = await QuectelProfile(usbnet=QuectelUsbNet.RMNET).activate_data(port, "internet")
    assert "AT+QNETDEVCTL=1,1,1" not in port.sent and status.method == "pdp"


async def test_quectel_slot_switch_validates_the_slot() -> None:
    port = ScriptedPort({"AT+QDSIM=1": []})
    await QuectelProfile().switch_sim(port, 1)
    with pytest.raises(ValueError):
        await QuectelProfile().switch_sim(port, 2)
    assert port.sent == ["AT+QDSIM=1"]


@pytest.mark.parametrize("apn", ['inter"net', "a,b", "", "x" * 101, "in ternet", "ïnternet"])
def test_apn_that_could_break_the_command_is_refused(apn: str) -> None:
    with pytest.raises(ValueError):
        check_apn(apn)


def test_pdp_context_command() -> None:
    assert pdp_context_command(1, "lte.ktfwing.com") == 'AT+CGDCONT=1,"IP","lte.ktfwing.com"'
    with pytest.raises(ValueError):
        pdp_context_command(0, "internet")
