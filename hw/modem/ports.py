"""Finding the modem's AT port (`lte.port = "auto"`): USB vendor/product and interface
number through sysfs, as ModemManager's udev rules type the ports. Pure file reads under
a root path (`sysfs_root`, `dev_root`), so tests run against a fake tree.

A USB serial port `/sys/class/tty/ttyUSB2` links (`device`) to the interface's tty node
`.../1-1.3:1.2/ttyUSB2`; its parent is the interface (`bInterfaceNumber` = `02`) and the
interface's parent the USB device (`idVendor` = `2c7c`, `idProduct` = `0125`). The AT
port is the interface the table below names for that vendor:product.

Interface numbers are ModemManager's (`src/plugins/quectel/77-mm-quectel-port-types.rules`,
`src/plugins/simtech/77-mm-simtech-port-types.rules`: `ID_MM_PORT_TYPE_AT_PRIMARY`).
Note: the RM500Q/RM520N put the primary AT port on interface 2 too (not 3: that is their
secondary AT port, which would also answer, but is the one PPP uses).

After a re-enumeration (power-key cycle, `AT+QCFG="usbnet"` reboot) the tty numbers may
change (`ttyUSB2` -> `ttyUSB6` when the old nodes were still held); `find_at_port()` is
simply called again (`hw.modem.health.ModemSupervisor`'s `reopen`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from hw.modem.errors import PortOpenError

__all__ = ["AUTO", "KNOWN_MODEMS", "UsbModemPort", "find_at_port", "resolve_port",
           "usb_tty_ports"]

#: The `lte.port` value that asks for discovery.
AUTO: Final = "auto"


@dataclass(frozen=True, slots=True)
class KnownModem:
    name: str
    at_interface: int


#: (idVendor, idProduct) -> the modem and its primary AT interface (ModemManager rules).
KNOWN_MODEMS: Final[Mapping[tuple[str, str], KnownModem]] = {
    ("2c7c", "0125"): KnownModem("Quectel EC25/EG25", 2),
    ("2c7c", "0121"): KnownModem("Quectel EC21", 2),
    ("2c7c", "0191"): KnownModem("Quectel EG91", 2),
    ("2c7c", "0195"): KnownModem("Quectel EG95", 2),
    ("2c7c", "0296"): KnownModem("Quectel BG96", 2),
    ("2c7c", "0306"): KnownModem("Quectel EG06/EP06/EM06", 2),
    ("2c7c", "0512"): KnownModem("Quectel EG12/EG18", 2),
    ("2c7c", "0800"): KnownModem("Quectel RM500Q/RM502Q", 2),
    ("2c7c", "0801"): KnownModem("Quectel RM520N", 2),
    ("2c7c", "0128"): KnownModem("Quectel EM060K", 5),
    ("1e0e", "9001"): KnownModem("SIMCom SIM7100/SIM7600", 2),
    ("1e0e", "9205"): KnownModem("SIMCom SIM7070/SIM7080", 2),
    ("1e0e", "9206"): KnownModem("SIMCom SIM7070/SIM7080 (secondary layout)", 2),
    ("1e0e", "9011"): KnownModem("SIMCom A7600E-H", 4),
}


@dataclass(frozen=True, slots=True)
class UsbModemPort:
    """One USB tty: its device path, the USB ids and the interface number."""

    tty: str
    device: str
    vendor: str
    product: str
    interface: int
    usb_path: str  # the USB device's sysfs name (`1-1.3`): the same modem across ports

    @property
    def modem(self) -> KnownModem | None:
        return KNOWN_MODEMS.get((self.vendor, self.product))

    @property
    def is_at_port(self) -> bool:
        modem = self.modem
        return modem is not None and modem.at_interface == self.interface


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip().lower()
    except OSError:
        return None


def usb_tty_ports(sysfs_root: str | os.PathLike[str] = "/sys",
                  dev_root: str | os.PathLike[str] = "/dev") -> list[UsbModemPort]:
    """Every USB serial tty (`ttyUSB*`, `ttyACM*`) with its ids, sorted by name."""
    tty_dir = Path(sysfs_root) / "class" / "tty"
    try:
        names = sorted(os.listdir(tty_dir))
    except OSError:
        return []
    ports: list[UsbModemPort] = []
    for name in names:
        if not name.startswith(("ttyUSB", "ttyACM")):
            continue
        try:
            node = (tty_dir / name / "device").resolve(strict=True)
        except OSError:
            continue
        # ttyUSB: device -> <iface>/ttyUSBn; ttyACM: device -> <iface> itself
        interface_dir = node if (node / "bInterfaceNumber").exists() else node.parent
        usb_dir = interface_dir.parent
        number = _read(interface_dir / "bInterfaceNumber")
        vendor, product = _read(usb_dir / "idVendor"), _read(usb_dir / "idProduct")
        if number is None or vendor is None or product is None:
            continue
        try:
            interface = int(number, 16)
        except ValueError:
            continue
        ports.append(UsbModemPort(tty=name, device=str(Path(dev_root) / name), vendor=vendor,
                                  product=product, interface=interface,
                                  usb_path=usb_dir.name))
    return ports


def find_at_port(sysfs_root: str | os.PathLike[str] = "/sys",
                 dev_root: str | os.PathLike[str] = "/dev") -> str:
    """The device path of the first known modem's AT port; `PortOpenError` (port "auto")
    naming what was seen when there is none (no modem enumerated yet, or an unknown one)."""
    ports = usb_tty_ports(sysfs_root, dev_root)
    for port in ports:
        if port.is_at_port:
            return port.device
    seen = ", ".join(sorted({f"{p.vendor}:{p.product}" for p in ports})) or "no USB tty"
    raise PortOpenError(AUTO, f"no known LTE modem's AT port found ({seen})")


def resolve_port(port: str, sysfs_root: str | os.PathLike[str] = "/sys",
                 dev_root: str | os.PathLike[str] = "/dev") -> str:
    """`port` itself, or the discovered AT port when it is `"auto"`."""
    if port.strip().lower() != AUTO:
        return port
    return find_at_port(sysfs_root, dev_root)
