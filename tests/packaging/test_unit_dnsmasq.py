"""The LAN's dnsmasq (`lan.enabled`: the daemon runs it as its child) inside the hardened
unit, systemd/storebox.service.

There is no booted systemd here, so the unit's restrictions are emulated as far as this
machine can, from the unit's own text: the capability bounding, inheritable and ambient
sets (`setpriv`), another user (nobody, standing in for `storebox`) with no new
privileges, `ProtectSystem=strict` (every mount read-only in a private mount namespace but
the state directory: `StateDirectory=`), `ProtectKernelTunables` (/sys read-only) and
`ProcSubset=pid`/`ProtectProc=invisible` (a new /proc mounted so). `SystemCallFilter`,
`RestrictAddressFamilies`, `DevicePolicy=closed` and `MemoryDenyWriteExecute` cannot be
imposed without systemd: dnsmasq runs under `strace` and every system call, socket
family, device and mapping it used is checked against what the unit allows (the filter's
groups expanded by `systemd-analyze syscall-filter`), and none of its calls may have been
refused (EPERM/EACCES). The real dnsmasq, with the configuration the daemon writes
(`firmware.lan.dnsmasq`), serves a LAN client in the shop's namespaces: a DHCP lease
(busybox udhcpc) and a DNS answer forwarded to the wired ISP's resolver through wan0.

The static test holds the unit to what dnsmasq needs, so a hardening edit that would break
the LAN's DHCP or DNS fails here before it reaches a box.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

from firmware.config.schema import DeviceConfig
from firmware.lan.dnsmasq import LanFiles, render_conf, render_servers
from firmware.lan.resolvers import upstream_for
from lab.box import configure
from lab.dns import DnsResponder
from lab.shop import LAN_BOX, build_shop
from tests.failover.test_lan_services import FROM_WIRED, LEASES, fresh, resolve, udhcpc
from tests.packaging.test_unit import UNIT
from tests.support.daemon import base_config

NOBODY = 65534
#: What dnsmasq needs of the unit: ARP entries for DHCP replies to clients without an
#: address yet (SIOCSARP) and the interface list (CAP_NET_ADMIN); upstream queries bound
#: to the uplink (`server=ADDRESS@IFACE`: SO_BINDTODEVICE) and the ping before offering
#: an address (CAP_NET_RAW); ports 53 and 67 (CAP_NET_BIND_SERVICE).
CAPABILITIES = {"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE"}
CAPABILITY_BITS = {"CAP_NET_BIND_SERVICE": 10, "CAP_NET_ADMIN": 12, "CAP_NET_RAW": 13}
#: DNS and DHCP (no AF_PACKET: on Linux dnsmasq answers DHCP over UDP and SIOCSARP),
#: interfaces and addresses over rtnetlink, and the user lookup (NSS) over unix sockets.
FAMILIES = {"AF_INET", "AF_INET6", "AF_NETLINK", "AF_UNIX"}
#: The system calls dnsmasq 2.90 made serving DHCP and DNS in the test below.
SYSCALLS = {
    "access", "alarm", "arch_prctl", "bind", "brk", "capget", "chdir", "close", "connect",
    "dup", "dup2", "execve", "exit_group", "fcntl", "fsync", "ftruncate", "futex",
    "getdents64", "getpid", "getrandom", "getsockname", "getuid", "ioctl", "listen", "lseek",
    "mmap", "mprotect", "munmap", "newfstatat", "openat", "pipe2", "poll", "prctl", "pread64",
    "prlimit64", "read", "recvfrom", "recvmsg", "rseq", "rt_sigaction", "rt_sigreturn",
    "sendmsg", "sendto", "set_robust_list", "set_tid_address", "setsockopt", "socket", "umask",
    "uname", "write", "writev"}
#: What `DevicePolicy=closed` still allows (systemd.resource-control(5)).
CLOSED_DEVICES = {"/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom",
                  "/dev/tty", "/dev/ptmx"}

#: ProtectSystem=strict & co, in a private mount namespace: $1 stays writable.
HARDEN = r"""
set -e
W=$1; shift
mount --bind "$W" "$W"
findmnt -rn -o TARGET | sort -u | while read -r m; do
  case "$m" in /proc|/proc/*|/dev|/dev/*|/sys|/sys/*) continue;; esac
  [ "$m" = "$W" ] && continue
  mount -o remount,bind,ro "$m" 2>/dev/null || echo "cannot make $m read-only" >&2
done
mount -o remount,bind,ro /sys
mount -t proc -o subset=pid,hidepid=invisible proc /proc
exec "$@"
"""


def unit_settings(text: str) -> dict[str, list[str]]:
    """The [Service] (and other sections') settings, every value of a repeated key."""
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def words(settings: dict[str, list[str]], key: str) -> set[str]:
    return {w for value in settings.get(key, []) for w in value.split()}


@cache
def syscall_group(name: str) -> frozenset[str]:
    """The system calls of a `SystemCallFilter=` group, nested groups expanded."""
    out = subprocess.run(["systemd-analyze", "syscall-filter", "--no-pager", name],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    calls: set[str] = set()
    for line in out.splitlines()[1:]:
        entry = line.strip()
        if entry.startswith("@"):
            calls |= syscall_group(entry)
        elif re.fullmatch(r"[a-z0-9_]+", entry):
            calls.add(entry)
    return frozenset(calls)


def allowed_syscalls(settings: dict[str, list[str]]) -> set[str]:
    """What the unit's `SystemCallFilter=` lines leave: the allow lists' calls less the
    `~` lines'."""
    allow: set[str] = set()
    deny: set[str] = set()
    for value in settings["SystemCallFilter"]:
        into = deny if value.startswith("~") else allow
        for entry in value.lstrip("~").split():
            into |= syscall_group(entry) if entry.startswith("@") else {entry}
    return allow - deny


def test_the_unit_leaves_dnsmasq_what_it_needs(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.fail("systemd-analyze is missing (Debian package systemd)")
    settings = unit_settings(UNIT.read_text())
    assert words(settings, "CapabilityBoundingSet") >= CAPABILITIES
    # dnsmasq runs as the daemon's user and changes none: it gets only ambient ones
    assert words(settings, "AmbientCapabilities") >= CAPABILITIES
    assert words(settings, "RestrictAddressFamilies") >= FAMILIES
    assert settings["DevicePolicy"] == ["closed"]  # dnsmasq opens /dev/null, allowed
    refused = SYSCALLS - allowed_syscalls(settings)
    assert not refused, f"SystemCallFilter refuses what dnsmasq calls: {sorted(refused)}"
    # its files live in the state directory, the one the unit leaves writable; no pid file
    state_dir = DeviceConfig(id="store-0001").state_dir
    assert settings["ProtectSystem"] == ["strict"]
    writable = [f"/var/lib/{d}" for d in words(settings, "StateDirectory")]
    writable += list(words(settings, "ReadWritePaths"))
    files = LanFiles.under(state_dir)
    assert any(files.leases.is_relative_to(w) and files.conf.is_relative_to(w)
               for w in writable), (writable, files)
    config = configure(base_config(tmp_path), routing={"lan_interfaces": ["eth1"]},
                       lan={"enabled": True})
    conf = render_conf(config, files, "storebox")
    assert "\npid-file=\n" in conf and "\nuser=storebox\n" in conf


@pytest.fixture
def state() -> Iterator[Path]:
    """The unit's state directory (0700, the service user's), under a directory everyone
    may traverse as /var/lib is (pytest's own are root's alone)."""
    parent = Path(tempfile.mkdtemp(prefix="sbx-unit-"))
    try:
        parent.chmod(0o755)
        path = parent / "state"
        path.mkdir(mode=0o700)
        os.chown(path, NOBODY, NOBODY)
        yield path
    finally:
        shutil.rmtree(parent)


def _require(*programs: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("network namespaces, mounts and other users need root")
    missing = [p for p in programs if shutil.which(p) is None]
    if missing:
        pytest.skip(f"not installed: {missing} (make deps)")


def _caps(settings: dict[str, list[str]], key: str) -> str:
    names = sorted(c.lower().removeprefix("cap_") for c in words(settings, key))
    return ",".join(["-all", *(f"+{n}" for n in names)])


def confined(settings: dict[str, list[str]], writable: Path, argv: list[str]) -> list[str]:
    """`argv` as the unit would run it (see module docs), in the current network
    namespace of whoever runs the result."""
    bounding = _caps(settings, "CapabilityBoundingSet")
    ambient = _caps(settings, "AmbientCapabilities")
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", HARDEN, "harden",
            str(writable), "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}",
            "--clear-groups", f"--inh-caps={ambient}", f"--ambient-caps={ambient}",
            f"--bounding-set={bounding}", "--no-new-privs", "--", *argv]


def test_the_emulation_confines(tmp_path: Path, state: Path) -> None:
    """The test below can fail: outside the state directory nothing is writable, and no
    capability outside the unit's is left."""
    _require("setpriv", "unshare", "findmnt")
    settings = unit_settings(UNIT.read_text())
    script = (f"touch {state}/ok && grep -E '^Cap(Eff|Amb|Bnd)' /proc/self/status; "
              f"touch /var/tmp/sbx-unit-$$ 2>&1; touch {state.parent}/outside 2>&1; "
              "ls /proc/sys >/dev/null 2>&1 && echo proc-sys-visible; true")
    out = subprocess.run(confined(settings, state, ["sh", "-c", script]),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert (state / "ok").exists() and not (state.parent / "outside").exists()
    assert out.stdout.count("Read-only file system") == 2, out.stdout
    assert "proc-sys-visible" not in out.stdout
    caps = {k: int(v, 16) for k, v in
            re.findall(r"^(Cap\w+):\s+([0-9a-f]+)$", out.stdout, re.M)}
    assert caps == {"CapEff": _mask(words(settings, "AmbientCapabilities")),
                    "CapAmb": _mask(words(settings, "AmbientCapabilities")),
                    "CapBnd": _mask(words(settings, "CapabilityBoundingSet"))}, out.stdout


def _mask(names: set[str]) -> int:
    """The kernel's bit mask of capability `names` (capability.h's numbers)."""
    return sum(1 << CAPABILITY_BITS[name] for name in names)


class Trace:
    """strace's record of dnsmasq (the process that exec'd it and its children)."""

    def __init__(self, path: Path) -> None:
        lines = path.read_text().splitlines()
        start = next(i for i, line in enumerate(lines)
                     if re.match(r"\d+ +execve\(\"[^\"]*/dnsmasq\"", line))
        self.pid = int(lines[start].split()[0])
        pids = {self.pid}
        self.lines: list[str] = []
        for line in lines[start:]:
            pid = int(line.split()[0])
            if pid not in pids:
                continue
            self.lines.append(line)
            child = re.match(r"\d+ +(?:clone3?|fork|vfork)\(.*\) += (\d+)$", line)
            if child:
                pids.add(int(child.group(1)))

    def syscalls(self) -> set[str]:
        found = set()
        for line in self.lines:
            call = re.match(r"\d+ +(?:<\.\.\. )?([a-z0-9_]+)[( ]", line)
            if call and "resumed>" not in line.split(call.group(1), 1)[1][:10]:
                found.add(call.group(1))
        return found

    def grep(self, pattern: str) -> list[str]:
        return [line for line in self.lines if re.search(pattern, line)]

    def families(self) -> set[str]:
        return {m.group(1) for line in self.grep(r" socket\(")
                if (m := re.search(r"socket\((AF_\w+)", line))}

    def devices(self) -> set[str]:
        return {m.group(1) for line in self.grep(r'open(at)?\(.*"/dev/')
                if (m := re.search(r'"(/dev/[^"]+)"', line))}


def wait_for(path: Path, text: str, proc: subprocess.Popen[bytes],
             timeout: float = 20.0) -> None:
    """Until `text` is in the log at `path`; fails at once when `proc` ended."""
    deadline = time.monotonic() + timeout
    while text not in path.read_text():
        assert proc.poll() is None, f"dnsmasq ended: {path.read_text()}"
        assert time.monotonic() < deadline, path.read_text()
        time.sleep(0.05)


def _files(tmp_path: Path, state: Path) -> LanFiles:
    config = configure(base_config(tmp_path), device={"state_dir": str(state)},
                       routing={"lan_interfaces": ["lan0"]},
                       wired={"interface": "wan0", "dns": ["10.1.0.1"]},
                       lan={"enabled": True, "dhcp_ranges": [LEASES], "fallback_dns": []})
    files = LanFiles.under(str(state))
    files.write(files.conf, render_conf(config, files, "nobody"))
    files.write(files.servers, render_servers(upstream_for(config, "wired")))
    for path in (files.directory, files.conf, files.servers):
        os.chown(path, NOBODY, NOBODY)
    return files


def _stop(trace_path: Path, proc: subprocess.Popen[bytes]) -> Trace:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(Trace(trace_path).pid, signal.SIGTERM)
        proc.wait(timeout=15)  # strace ends with its last tracee
    return Trace(trace_path)


def test_dnsmasq_serves_the_lan_under_the_units_restrictions(tmp_path: Path,
                                                             state: Path) -> None:
    _require("dnsmasq", "udhcpc", "strace", "setpriv", "unshare", "findmnt")
    settings = unit_settings(UNIT.read_text())
    files = _files(tmp_path, state)
    log = tmp_path / "dnsmasq.log"
    trace_path = tmp_path / "dnsmasq.trace"
    with build_shop() as shop:
        resolver = DnsResponder(shop.isp_wired, "10.1.0.1", FROM_WIRED)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                ["strace", "-f", "-qq", "-o", str(trace_path), "ip", "netns", "exec",
                 shop.box, *confined(settings, state, files.argv())],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        try:
            wait_for(log, "DHCP, sockets bound exclusively to interface lan0", proc)
            lease = udhcpc(shop.client, tmp_path)
            assert lease["ip"].startswith("192.168.50.") and lease["dns"] == LAN_BOX, lease
            assert lease["ip"] in files.leases.read_text()  # written where the unit lets it
            # forwarded to the wired ISP's resolver through wan0 (bound: CAP_NET_RAW)
            assert resolve(shop.client, fresh("unit")) == FROM_WIRED
            assert resolver.queries >= 1
            trace = _stop(trace_path, proc)
        finally:
            if proc.poll() is None:
                proc.kill()  # strace (its tracee is killed with it)
                proc.wait()
            resolver.close()
    check_trace(trace, settings, log)


def check_trace(trace: Trace, settings: dict[str, list[str]], log: Path) -> None:
    """Nothing dnsmasq did would have been refused by what the emulation cannot impose."""
    refused = trace.grep(r"= -1 (EPERM|EACCES)")
    assert not refused, refused[:10]
    used = trace.syscalls()
    assert not used - allowed_syscalls(settings), sorted(used - allowed_syscalls(settings))
    # the static test's list is what dnsmasq really calls (update it with a new dnsmasq)
    assert used <= SYSCALLS, sorted(used - SYSCALLS)
    assert trace.families() <= words(settings, "RestrictAddressFamilies"), trace.families()
    assert trace.devices() <= CLOSED_DEVICES, trace.devices()
    wx = trace.grep(r"PROT_(WRITE\|PROT_EXEC|EXEC\|PROT_WRITE)")
    assert not wx, wx  # MemoryDenyWriteExecute
    assert "cannot make" not in log.read_text(), log.read_text()
