"""Issue #10 part 5: `lte.port = "auto"` finds the AT port in a fake sysfs tree, and the
supervisor finds it again (without a reset) after the modem re-enumerated."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hw.modem.channel import AtChannel
from hw.modem.errors import PortOpenError
from hw.modem.health import ModemSupervisor, SupervisorPolicy
from hw.modem.ports import find_at_port, resolve_port, usb_tty_ports
from hw.modem.simulator import ModemSimulator
from tests.hw.modem_harness import Events, FakeSleep, modem_on

pytestmark = pytest.mark.timeout(60)


class FakeSysfs:
    """/sys/class/tty and /sys/devices as the kernel lays out a USB modem's serial
    interfaces (`ttyUSBn` under `<usb>:1.<if>`; `ttyACMn` directly on the interface)."""

    def __init__(self, root: Path) -> None:
        self.sys = root / "sys"
        self.dev = root / "dev"
        (self.sys / "class" / "tty").mkdir(parents=True)
        self.dev.mkdir()

    def add_modem(self, usb: str, vendor: str, product: str,
                  ttys: dict[int, str], acm: bool = False) -> None:
        device = self.sys / "devices" / "platform" / "usb1" / usb
        device.mkdir(parents=True, exist_ok=True)
        (device / "idVendor").write_text(vendor + "\n")
        (device / "idProduct").write_text(product + "\n")
        for interface, tty in ttys.items():
            iface = device / f"{usb}:1.{interface}"
            iface.mkdir(exist_ok=True)
            (iface / "bInterfaceNumber").write_text(f"{interface:02x}\n")
            target = iface if acm else iface / tty
            target.mkdir(exist_ok=True)
            link = self.sys / "class" / "tty" / tty
            link.mkdir()
            os.symlink(os.path.relpath(target, link), link / "device")

    def remove_tty(self, tty: str) -> None:
        (self.sys / "class" / "tty" / tty / "device").unlink()
        (self.sys / "class" / "tty" / tty).rmdir()
        (self.dev / tty).unlink(missing_ok=True)

    def device_node(self, tty: str, target: str) -> None:
        """/dev/<tty> (a symlink to a simulator's pty)."""
        os.symlink(target, self.dev / tty)


@pytest.fixture
def sysfs(tmp_path: Path) -> FakeSysfs:
    return FakeSysfs(tmp_path)


EC25 = {0: "ttyUSB0", 1: "ttyUSB1", 2: "ttyUSB2", 3: "ttyUSB3"}


@pytest.mark.parametrize(("vendor", "product", "expected"), [
    # ModemManager src/plugins/quectel/77-mm-quectel-port-types.rules (AT primary)
    ("2c7c", "0125", "ttyUSB2"),   # EC25/EG25
    ("2c7c", "0121", "ttyUSB2"),   # EC21
    ("2c7c", "0800", "ttyUSB2"),   # RM500Q: interface 2 too (3 is the secondary AT port)
    ("2c7c", "0801", "ttyUSB2"),   # RM520N
    # ModemManager src/plugins/simtech/77-mm-simtech-port-types.rules
    ("1e0e", "9001", "ttyUSB2"),   # SIM7600
])
def test_the_at_port_is_found_by_ids_and_interface(sysfs: FakeSysfs, vendor: str,
                                                   product: str, expected: str) -> None:
    sysfs.add_modem("1-1.3", vendor, product, EC25)
    assert find_at_port(sysfs.sys, sysfs.dev) == str(sysfs.dev / expected)


def test_other_usb_serial_devices_are_ignored(sysfs: FakeSysfs) -> None:
    sysfs.add_modem("1-1.1", "0403", "6001", {0: "ttyUSB0"})  # an FTDI cable
    sysfs.add_modem("1-1.2", "2c7c", "0128", {3: "ttyUSB1", 4: "ttyUSB2", 5: "ttyUSB3"})
    ports = usb_tty_ports(sysfs.sys, sysfs.dev)
    assert [(p.tty, p.vendor, p.interface) for p in ports] == [
        ("ttyUSB0", "0403", 0), ("ttyUSB1", "2c7c", 3), ("ttyUSB2", "2c7c", 4),
        ("ttyUSB3", "2c7c", 5)]
    assert find_at_port(sysfs.sys, sysfs.dev) == str(sysfs.dev / "ttyUSB3")  # EM060K: if 5


def test_acm_ports_and_unknown_modems(sysfs: FakeSysfs) -> None:
    sysfs.add_modem("2-1", "1e0e", "9011", {2: "ttyACM0", 4: "ttyACM1"}, acm=True)
    assert find_at_port(sysfs.sys, sysfs.dev) == str(sysfs.dev / "ttyACM1")


def test_nothing_found_names_what_was_seen(sysfs: FakeSysfs) -> None:
    with pytest.raises(PortOpenError, match="no USB tty"):
        find_at_port(sysfs.sys, sysfs.dev)
    sysfs.add_modem("1-1.1", "0403", "6001", {0: "ttyUSB0"})
    with pytest.raises(PortOpenError, match="0403:6001"):
        find_at_port(sysfs.sys, sysfs.dev)
    assert resolve_port("/dev/ttyUSB9", sysfs.sys) == "/dev/ttyUSB9"  # typed: left alone
    with pytest.raises(PortOpenError):
        resolve_port("auto", sysfs.sys, sysfs.dev)


async def test_a_reenumerated_modem_is_found_again_without_a_reset(sysfs: FakeSysfs) -> None:
    async with modem_on() as (first, modem):
        sysfs.add_modem("1-1.3", "2c7c", "0125", EC25)
        sysfs.device_node("ttyUSB2", first.slave_path)
        assert find_at_port(sysfs.sys, sysfs.dev) == str(sysfs.dev / "ttyUSB2")

        async def reopen() -> AtChannel:
            return await AtChannel.open(find_at_port(sysfs.sys, sysfs.dev),
                                        default_timeout=1.0)

        fake = FakeSleep()
        events = Events()
        sup = ModemSupervisor(modem, SupervisorPolicy(refresh_every=1000, boot_timeout_s=5.0),
                              on_event=events, monotonic=fake.monotonic, sleep=fake,
                              reopen=reopen)
        assert await sup.start()
        # the modem re-enumerates: the old port goes away, the new one is ttyUSB6 (the
        # old numbers were still held), on another "device" (a second simulator)
        await first.stop()
        for tty in EC25.values():
            sysfs.remove_tty(tty)
        async with ModemSimulator() as second:
            sysfs.add_modem("1-1.3", "2c7c", "0125", {0: "ttyUSB4", 1: "ttyUSB5",
                                                      2: "ttyUSB6", 3: "ttyUSB7"})
            sysfs.device_node("ttyUSB6", second.slave_path)
            assert await sup.tick()
            assert sup.reopened_total == 1 and sup.resets_total == 0
            assert events.of("modem_reset") == []
            (recovered,) = events.of("modem_recovered")
            assert recovered["step"] == "reopen" and recovered["reason"] == "port_reopened"
            assert modem.channel.url == str(sysfs.dev / "ttyUSB6")
            assert "ATE0" in second.received and modem.snapshot().registered
            await modem.close()


async def test_a_port_that_does_not_come_back_climbs_the_ladder(sysfs: FakeSysfs) -> None:
    async with modem_on() as (sim, modem):
        async def reopen() -> AtChannel:
            return await AtChannel.open(find_at_port(sysfs.sys, sysfs.dev))

        fake = FakeSleep()
        events = Events()
        sup = ModemSupervisor(modem, SupervisorPolicy(refresh_every=1000, boot_timeout_s=3.0,
                                                      backoff_s=(0.0,), step_timeout_s=5.0),
                              on_event=events, monotonic=fake.monotonic, sleep=fake,
                              reopen=reopen)
        assert await sup.start()
        await sim.stop()
        assert not await sup.tick()
        resets = events.of("modem_reset")
        assert resets and resets[0]["reason"] == "port_closed"
        assert fake.calls[:2] == [1.0, 1.0]  # two more looks, a second apart, then the ladder
