"""NetworkManager running inside a test's network namespace (DEVELOPERS.md recipe).

    with network_manager(ns, [NMConnection("wired", "wan0", "10.1.0.2/24", "10.1.0.1", 100)]) as nm:
        os.environ-free: pass nm.bus_address to the D-Bus client (or nm.env to nmcli)

What it does, and why each step is needed:

- `ip netns exec NS unshare -m --propagation private sh run.sh`: `ip netns exec`
  enters the namespace and mounts a sysfs showing *its* interfaces (NetworkManager
  reads /sys/class/net); `unshare -m` gives a private mount namespace so the mounts
  below never reach the host.
- tmpfs on /run (the host's /run/dbus, /run/NetworkManager, /run/udev stay untouched)
  and on /var/lib/NetworkManager (state NetworkManager writes: timestamps, secret_key).
- `/run/udev/data/n<ifindex>` containing `I:1` for each interface: without udev running,
  libudev reports a device "initialized" only when its database entry exists, and
  NetworkManager leaves uninitialized devices unmanaged.
- `dbus-daemon --fork` with a system-bus config (type system, pidfile /run/dbus/pid)
  listening on /run/dbus/system_bus_socket, where NetworkManager looks, *and* on a socket
  in this helper's temporary directory under /tmp, which the test process can reach
  from its own mount namespace (`bus_address`, `DBUS_SYSTEM_BUS_ADDRESS=unix:path=...`).
  No service directories: nothing gets bus-activated (no dispatcher, no hostnamed).
- keyfile connections (mode 0600 -- NetworkManager ignores profiles others can read)
  in a temporary `[keyfile] path=`; IPv4 (and optionally IPv6) manual, with the test's
  address, gateway and route-metric; no DHCP involved.
- `NetworkManager --no-daemon --config=F` with `[main] plugins=keyfile dns=none
  rc-manager=unmanaged no-auto-default=* auth-polkit=false hostname-mode=none`, its own
  empty config directories and state file, so the host's configuration plays no part.
- waits until every connection is activated (nmcli over the exposed bus), with a
  deadline; on failure the error carries NetworkManager's log.

On exit NetworkManager and dbus-daemon are stopped (SIGTERM, then SIGKILL) and waited
for, and the temporary directory is removed; the private mounts die with the processes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class NMConnection:
    """A keyfile profile bound to one interface, statically addressed."""

    id: str
    interface: str
    address4: str  # "10.1.0.2/24"
    gateway4: str | None
    route_metric: int
    address6: str | None = None  # "2001:db8:1::2/64"
    gateway6: str | None = None
    uuid: str = field(default_factory=lambda: str(uuid.uuid4()))
    #: The resolvers the profile gives (as a DHCP lease would): its IP4Config shows them.
    dns4: tuple[str, ...] = ()

    def keyfile(self) -> str:
        address = self.address4 + (f",{self.gateway4}" if self.gateway4 else "")
        lines = ["[connection]", f"id={self.id}", f"uuid={self.uuid}", "type=ethernet",
                 f"interface-name={self.interface}", "autoconnect=true", "",
                 "[ethernet]", "",
                 "[ipv4]", "method=manual", f"address1={address}",
                 f"route-metric={self.route_metric}",
                 *([f"dns={';'.join(self.dns4)};"] if self.dns4 else []), ""]
        if self.address6:
            six = self.address6 + (f",{self.gateway6}" if self.gateway6 else "")
            lines += ["[ipv6]", "method=manual", f"address1={six}",
                      f"route-metric={self.route_metric}", ""]
        else:
            lines += ["[ipv6]", "method=disabled", ""]
        return "\n".join(lines)


@dataclass
class NetworkManagerInNetns:
    netns: str
    directory: Path
    bus_address: str
    process: subprocess.Popen[bytes]
    log: Path
    connections: Sequence[NMConnection]
    dbus_pid: int | None = None

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": self.bus_address}

    def nmcli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(["nmcli", *args], env=self.env, capture_output=True, text=True,
                              timeout=10)
        if check and proc.returncode != 0:
            raise AssertionError(f"nmcli {' '.join(args)}: {proc.stderr.strip()}\n{self.tail()}")
        return proc

    def tail(self, lines: int = 40) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "NetworkManager log:\n" + "\n".join(text.splitlines()[-lines:])

    def alive(self) -> bool:
        return self.process.poll() is None


_DBUS_CONF = """<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <pidfile>/run/dbus/pid</pidfile>
  <listen>unix:path=/run/dbus/system_bus_socket</listen>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="root"/>
    <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"""

_NM_CONF = """[main]
plugins=keyfile
dns=none
rc-manager=unmanaged
no-auto-default=*
auth-polkit=false
hostname-mode=none
systemd-resolved=false

[keyfile]
path={keyfiles}

[logging]
level={level}

[connectivity]
enabled=false
"""


def _ifindexes(netns: str) -> dict[str, int]:
    out = subprocess.run(["ip", "-n", netns, "-j", "link", "show"], check=True,
                         capture_output=True, text=True).stdout
    return {link["ifname"]: int(link["ifindex"]) for link in json.loads(out)}


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A zombie still answers kill(0); it is gone for our purposes.
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        if state == "Z":
            return True
        time.sleep(0.02)
    return False


@contextmanager
def network_manager(netns: str, connections: Sequence[NMConnection], *,
                    timeout: float = 20.0) -> Iterator[NetworkManagerInNetns]:
    """NetworkManager managing `connections` inside network namespace `netns`."""
    directory = Path(tempfile.mkdtemp(prefix="sbx-nm-"))
    os.chmod(directory, 0o700)
    nm: NetworkManagerInNetns | None = None
    try:
        indexes = _ifindexes(netns)
        missing = [c.interface for c in connections if c.interface not in indexes]
        if missing:
            raise AssertionError(f"no such interfaces in {netns}: {missing}")
        keyfiles = directory / "system-connections"
        keyfiles.mkdir(mode=0o700)
        for conn in connections:
            path = keyfiles / f"{conn.id}.nmconnection"
            path.write_text(conn.keyfile())
            path.chmod(0o600)
        (directory / "conf.d").mkdir()
        socket_path = directory / "system_bus_socket"
        (directory / "dbus.conf").write_text(_DBUS_CONF.format(socket=socket_path))
        level = os.environ.get("SBX_NM_LOG_LEVEL", "INFO")  # TRACE to debug
        (directory / "NetworkManager.conf").write_text(
            _NM_CONF.format(keyfiles=keyfiles, level=level))
        udev = "\n".join(f"printf 'I:1\\n' > /run/udev/data/n{indexes[c.interface]}"
                         for c in connections)
        script = f"""set -eu
mount -t tmpfs -o mode=0755 storebox-test-run /run
mount -t tmpfs -o mode=0700 storebox-test-nm /var/lib/NetworkManager
mkdir -p /run/dbus /run/udev/data /run/NetworkManager
{udev}
cp {directory}/dbus.conf /run/dbus/system.conf
dbus-daemon --config-file=/run/dbus/system.conf --fork --print-pid=3 3>{directory}/dbus.pid
export DBUS_SYSTEM_BUS_ADDRESS=unix:path=/run/dbus/system_bus_socket
exec NetworkManager --no-daemon --debug --config={directory}/NetworkManager.conf \\
    --config-dir={directory}/conf.d --system-config-dir={directory}/conf.d \\
    --state-file={directory}/NetworkManager.state \\
    --pid-file=/run/NetworkManager/NetworkManager.pid
"""
        (directory / "run.sh").write_text(script)
        log = directory / "nm.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                ["ip", "netns", "exec", netns, "unshare", "--mount", "--propagation",
                 "private", "sh", str(directory / "run.sh")],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        nm = NetworkManagerInNetns(netns=netns, directory=directory,
                                   bus_address=f"unix:path={socket_path}", process=process,
                                   log=log, connections=connections)
        deadline = time.monotonic() + timeout
        pending = {c.interface for c in connections}
        while pending:
            if not nm.alive():
                raise AssertionError(f"NetworkManager exited ({process.returncode})\n{nm.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"not activated within {timeout} s: {sorted(pending)}\n"
                                     f"{nm.tail()}")
            if nm.dbus_pid is None and (directory / "dbus.pid").exists():
                text = (directory / "dbus.pid").read_text().strip()
                nm.dbus_pid = int(text) if text else None
            if socket_path.exists():
                for interface in sorted(pending):
                    state = nm.nmcli("-t", "-g", "GENERAL.STATE", "device", "show", interface,
                                     check=False).stdout.strip()
                    if state.startswith("100"):
                        pending.discard(interface)
            if pending:
                time.sleep(0.05)
        yield nm
    finally:
        if nm is not None:
            _stop(nm)
        shutil.rmtree(directory, ignore_errors=True)


def _stop(nm: NetworkManagerInNetns) -> None:
    if nm.alive():
        nm.process.send_signal(signal.SIGTERM)
        try:
            nm.process.wait(10)
        except subprocess.TimeoutExpired:
            nm.process.kill()
            nm.process.wait(5)
    if nm.dbus_pid is None and (nm.directory / "dbus.pid").exists():
        text = (nm.directory / "dbus.pid").read_text().strip()
        nm.dbus_pid = int(text) if text else None
    if nm.dbus_pid is not None:
        try:
            os.kill(nm.dbus_pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        if not _wait_gone(nm.dbus_pid, 5):
            os.kill(nm.dbus_pid, signal.SIGKILL)
            _wait_gone(nm.dbus_pid, 5)
