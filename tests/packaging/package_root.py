"""The amd64 package installed for real into a throwaway Debian 12 root, then booted.

A root made by mmdebstrap from Debian's packages (cached as a tarball in
$STOREBOX_ROOT_CACHE, default /var/cache/storebox-test: ~45 s to make, ~3 s to unpack),
the package installed with dpkg inside it (systemd-nspawn, no network), `storebox config
check`, `storebox token add`, `storebox selftest`; then the root booted with
`systemd-nspawn --boot --private-network`: storebox.service must reach READY=1 under
the hardened unit with a real systemd (PID 1 of the container), keep pinging the
watchdog, pass its selftest, and remove/purge must keep/erase its state.
Run by `make test-package` (after `make deb ARCH=amd64`); root only.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.failover.test_lan_services import resolve

REPO = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
DEB = REPO / "dist" / f"storebox_{VERSION}_amd64.deb"
PACKAGES = ["python3", "nftables", "conntrack", "iproute2", "procps", "systemd",
            "systemd-sysv", "dbus", "udev", "dnsmasq-base"]
CACHE = Path(os.environ.get("STOREBOX_ROOT_CACHE", "/var/cache/storebox-test"))
NSPAWN = ["systemd-nspawn", "-q", "--register=no", "--keep-unit", "--private-network"]
MERCHANT_KEY = "mk_test_0123456789abcdef"


def _need(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        pytest.fail(f"{tool} missing: apt-get install {package} (make deps does)")


def _root_tarball() -> Path:
    key = hashlib.sha256(" ".join(PACKAGES).encode()).hexdigest()[:12]
    tarball = CACHE / f"bookworm-{key}.tar"
    if not tarball.exists():
        _need("mmdebstrap", "mmdebstrap")
        CACHE.mkdir(parents=True, exist_ok=True)
        partial = tarball.with_suffix(".partial.tar")
        subprocess.run(["mmdebstrap", "--quiet", "--variant=apt",
                        f"--include={','.join(PACKAGES)}", "bookworm", str(partial)],
                       check=True, timeout=900)
        partial.rename(tarball)
    return tarball


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.fail("installing into a Debian root needs root (CI runs as root)")
    _need("systemd-nspawn", "systemd-container")
    if not DEB.exists():
        pytest.fail(f"{DEB} missing: make deb ARCH=amd64")
    # nspawn keeps its propagation directory under /run/systemd/nspawn, which must be
    # a tmpfs; a host without a booted systemd has none
    propagate = Path("/run/systemd/nspawn")
    propagate.mkdir(parents=True, exist_ok=True)
    if subprocess.run(["mountpoint", "-q", str(propagate)], check=False).returncode != 0:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", str(propagate)],
                       check=True)
    # not under /tmp: the root's /var/lib/systemd must be a real disk for systemd-creds
    base = Path(os.environ.get("STOREBOX_ROOT_DIR", "/var/tmp"))
    path = Path(tmp_path_factory.mktemp("unused").name)  # unique name
    directory = base / f"storebox-root-{path.name}-{os.getpid()}"
    directory.mkdir(parents=True)
    try:
        subprocess.run(["tar", "-C", str(directory), "-xf", str(_root_tarball())], check=True)
        shutil.copy(DEB, directory / "var/tmp" / DEB.name)
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def inside(root: Path, script: str, check: bool = True,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `script` with sh in the (not booted) root."""
    result = subprocess.run([*NSPAWN, "-D", str(root), "--", "sh", "-c", script],
                            capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{script!r} exited {result.returncode}:\n{result.stdout}"
                             f"{result.stderr}")
    return result


@pytest.fixture(scope="module")
def installed(root: Path) -> Path:
    started = time.monotonic()
    # a booted Pi has a machine id before anyone installs anything
    inside(root, "systemd-machine-id-setup >/dev/null")
    result = inside(root, f"dpkg -i /var/tmp/{DEB.name}")
    took = time.monotonic() - started
    print(f"\ninstall: {took:.1f} s\n{result.stdout}{result.stderr}")
    return root


def test_install_sets_up_user_state_key_and_unit(installed: Path) -> None:
    out = inside(installed, "id storebox; stat -c '%U %a' /var/lib/storebox "
                            "/etc/storebox/pos-tokens /etc/credstore.encrypted/storebox-kek; "
                            "systemctl is-enabled storebox.service").stdout.split("\n")
    assert "dialout" in out[0] and "gpio" in out[0]
    assert out[1:5] == ["storebox 700", "storebox 600", "root 600", "enabled"]
    verify = subprocess.run(["systemd-analyze", "verify", f"--root={installed}",
                             "storebox.service"], capture_output=True, text=True, check=False)
    assert (verify.stdout + verify.stderr).strip() == ""


def test_config_check_names_the_missing_merchant_key_then_passes(installed: Path) -> None:
    before = inside(installed, "storebox config check", check=False)
    assert before.returncode == 2
    said = before.stdout + before.stderr  # nspawn passes the container's stderr on stdout
    assert "/etc/storebox/storebox.toml:" in said and "merchant_key_file" in said
    inside(installed, f"echo {MERCHANT_KEY} | install -m 0600 -o storebox -g storebox "
                      "/dev/stdin /etc/storebox/merchant-key")
    after = inside(installed, "storebox config check")
    assert after.stdout.strip() == "/etc/storebox/storebox.toml: ok"


def test_pairing_a_till(installed: Path) -> None:
    out = inside(installed, "storebox token add --scope pos --name till-1 && "
                            "storebox token list").stdout
    assert "till-1" in out
    assert inside(installed, "stat -c '%U %a' /etc/storebox/pos-tokens").stdout.strip() == \
        "storebox 600"


def test_selftest_without_the_daemon_is_not_healthy(installed: Path) -> None:
    """Not booted, nothing started: it cannot say healthy; with no grace left, broken."""
    result = inside(installed, "storebox selftest --json --grace 0", check=False)
    doc = json.loads(result.stdout)
    assert result.returncode == 1 and doc["verdict"] == "broken"
    checks = {c["name"]: c for c in doc["checks"]}
    assert checks["config"]["result"] == "ok"
    assert checks["nft"]["result"] == "ok" and checks["conntrack"]["result"] == "ok"
    assert checks["gpio"]["result"] == "ok"
    assert checks["api"]["result"] == "broken"


class Booted:
    """The root booted by systemd-nspawn --boot; commands run in it with nsenter."""

    def __init__(self, root: Path, log: Path) -> None:
        self.log = log.open("w")
        self.proc = subprocess.Popen([*NSPAWN, "-D", str(root), "--boot"],
                                     stdin=subprocess.DEVNULL, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.init = self._container_init()

    def _container_init(self) -> int:
        """The container's PID 1 once it is systemd listening on its private socket."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and self.proc.poll() is None:
            for task in Path(f"/proc/{self.proc.pid}/task").glob("*"):
                for child in (task / "children").read_text().split():
                    proc = Path("/proc") / child
                    try:
                        ready = ((proc / "comm").read_text().strip() == "systemd"
                                 and (proc / "root/run/systemd/private").exists())
                    except OSError:
                        ready = False
                    if ready:
                        return int(child)
            time.sleep(0.1)
        raise AssertionError(f"systemd-nspawn --boot did not start: {self.log.name}")

    def run(self, cmd: str, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["nsenter", "-t", str(self.init), "-m", "-u", "-i", "-n", "-p",
                                 "--", "sh", "-c", cmd], capture_output=True, text=True,
                                timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"{cmd!r} exited {result.returncode}:\n{result.stdout}"
                                 f"{result.stderr}")
        return result

    def unit(self, *props: str) -> dict[str, str]:
        out = self.run(f"systemctl show storebox.service -p {','.join(props)}").stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def stop(self) -> None:
        self.proc.terminate()  # nspawn asks the container's systemd to power off
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def booted(installed: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Booted]:
    inside(installed, f"test -s /etc/storebox/merchant-key || echo {MERCHANT_KEY} | "
                      "install -m 0600 -o storebox -g storebox /dev/stdin "
                      "/etc/storebox/merchant-key")
    box = Booted(installed, tmp_path_factory.mktemp("boot") / "console.log")
    try:
        # blocks until the boot is done (running, or degraded when a unit failed)
        state = box.run("systemctl is-system-running --wait", check=False, timeout=180)
        print(f"\nboot: {state.stdout.strip()}")
        yield box
    finally:
        box.stop()


def test_service_reaches_ready_under_the_hardened_unit(booted: Booted) -> None:
    unit = booted.unit("ActiveState", "SubState", "NRestarts", "MainPID", "StatusText",
                       "ExecMainStartTimestampMonotonic", "ActiveEnterTimestampMonotonic")
    if unit["ActiveState"] != "active":
        journal = booted.run("journalctl -u storebox --no-pager | tail -40", check=False)
        raise AssertionError(f"storebox.service {unit}\n{journal.stdout}")
    assert unit["SubState"] == "running" and unit["NRestarts"] == "0"
    assert unit["StatusText"].startswith("running;")  # STATUS= from the daemon
    ready_s = (int(unit["ActiveEnterTimestampMonotonic"])
               - int(unit["ExecMainStartTimestampMonotonic"])) / 1e6
    print(f"\nstart to READY=1 under systemd: {ready_s:.2f} s")
    pid = unit["MainPID"]
    status = booted.run(f"grep -E '^(Uid|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' "
                        f"/proc/{pid}/status").stdout
    fields = dict(line.split(":", 1) for line in status.splitlines())
    # CAP_NET_BIND_SERVICE (10: dnsmasq's ports 53 and 67), CAP_NET_ADMIN (12), CAP_NET_RAW
    # (13), nothing else
    assert fields["CapEff"].strip() == fields["CapBnd"].strip() == "0000000000003400"
    assert fields["NoNewPrivs"].strip() == "1" and fields["Seccomp"].strip() == "2"
    assert fields["Uid"].split()[0] != "0"
    assert booted.run(f"stat -c %U /proc/{pid}").stdout.strip() == "storebox"


def test_watchdog_keeps_being_pinged(booted: Booted) -> None:
    first = booted.unit("WatchdogTimestampMonotonic", "MainPID")
    deadline = time.monotonic() + 25  # WatchdogSec=20: pings every 10 s
    while time.monotonic() < deadline:
        now = booted.unit("WatchdogTimestampMonotonic", "MainPID", "NRestarts")
        if int(now["WatchdogTimestampMonotonic"]) > int(first["WatchdogTimestampMonotonic"]):
            assert now["MainPID"] == first["MainPID"] and now["NRestarts"] == "0"
            return
        time.sleep(0.5)
    raise AssertionError(f"no WATCHDOG=1 within 25 s: {first}")


def test_selftest_on_the_booted_box_commits(booted: Booted) -> None:
    recorded = booted.run("storebox selftest --record")
    assert "recorded /var/lib/storebox/selftest-record.json" in recorded.stdout
    result = booted.run("storebox selftest --json", check=False)
    doc = json.loads(result.stdout)
    assert result.returncode == 0, json.dumps(doc, indent=2)
    checks = {c["name"]: c["result"] for c in doc["checks"]}
    for name in ("config", "record", "database", "service", "api", "keys", "nft",
                 "conntrack", "gpio"):
        assert checks[name] == "ok", (name, doc)
    status = json.loads(booted.run("storebox status --json").stdout)
    assert status["payments"]["key_provider"] == "systemd-creds"
    assert status["api"]["tls"] is True and len(status["api"]["cert_sha256"]) == 64


def test_the_lans_dnsmasq_serves_under_the_hardened_unit(booted: Booted,
                                                         tmp_path: Path) -> None:
    """`lan.enabled`: the daemon's dnsmasq, started by the daemon inside the unit (its
    capabilities, system-call filter, read-only system), gives a LAN client a lease and
    answers its DNS (the lease's host name under `lan.domain`)."""
    if shutil.which("udhcpc") is None:
        pytest.fail("udhcpc missing: apt-get install udhcpc (make deps does)")
    client = f"sbxpkgcli-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", client], check=True)
    try:
        subprocess.run(["ip", "link", "add", "sbxpkglan0", "type", "veth", "peer", "name",
                        "eth0", "netns", client], check=True)
        subprocess.run(["ip", "link", "set", "sbxpkglan0", "netns", str(booted.init), "name",
                        "lan0"], check=True)
        subprocess.run(["ip", "-n", client, "link", "set", "eth0", "up"], check=True)
        booted.run("ip addr add 192.168.50.1/24 dev lan0 && ip link set lan0 up")
        booted.run("sed -i 's/^lan_interfaces = \\[\\]/lan_interfaces = [\"lan0\"]/' "
                   "/etc/storebox/storebox.toml && printf '%s\\n' '[lan]' 'enabled = true' "
                   "'dhcp_ranges = [\"192.168.50.100-192.168.50.150\"]' "
                   "'domain = \"shop.lan\"' >> /etc/storebox/storebox.toml && "
                   "storebox config check && systemctl restart storebox")
        dnsmasq = _wait_for_dnsmasq(booted)
        status = booted.run(f"grep -E '^(Uid|CapEff|CapAmb|NoNewPrivs|Seccomp):' "
                            f"/proc/{dnsmasq}/status").stdout
        fields = {k: v.strip() for k, v in (line.split(":", 1) for line in status.splitlines())}
        assert fields["CapEff"] == fields["CapAmb"] == "0000000000003400", fields
        assert fields["NoNewPrivs"] == "1" and fields["Seccomp"] == "2", fields
        assert booted.run(f"stat -c %U /proc/{dnsmasq}").stdout.strip() == "storebox"
        script = tmp_path / "udhcpc.sh"
        script.write_text(f"#!/bin/sh\n[ \"$1\" = bound ] && env > {tmp_path}/lease.env\n"
                          "exit 0\n")
        script.chmod(0o755)
        subprocess.run(["ip", "netns", "exec", client, "udhcpc", "-i", "eth0", "-f", "-q",
                        "-n", "-t", "10", "-T", "1", "-x", "hostname:till-1", "-s",
                        str(script)], check=True, capture_output=True, timeout=60)
        lease = dict(line.split("=", 1) for line in
                     (tmp_path / "lease.env").read_text().splitlines() if "=" in line)
        assert lease["ip"].startswith("192.168.50.") and lease["dns"] == "192.168.50.1", lease
        leases = booted.run("cat /var/lib/storebox/lan/dnsmasq.leases").stdout
        assert lease["ip"] in leases and "till-1" in leases, leases
        subprocess.run(["ip", "-n", client, "addr", "add", f"{lease['ip']}/24", "dev",
                        "eth0"], check=True)
        answer = resolve(client, "till-1.shop.lan", server="192.168.50.1")
        assert answer == lease["ip"], answer
        unit = booted.unit("ActiveState", "NRestarts")
        assert unit == {"ActiveState": "active", "NRestarts": "0"}, unit
    finally:
        subprocess.run(["ip", "netns", "del", client], check=False)


def _wait_for_dnsmasq(booted: Booted, timeout: float = 60) -> int:
    """dnsmasq's pid once the restarted daemon runs it (in storebox.service's cgroup)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pids = booted.run("systemctl show -p MainPID --value storebox && "
                          "pgrep -x dnsmasq || true").stdout.split()
        parent = booted.run(f"ps -o ppid= -p {pids[1]}", check=False).stdout.strip() \
            if len(pids) == 2 else ""
        if parent:  # (a dnsmasq that ended at once is restarted: look again)
            assert parent == pids[0], (pids, parent)  # the daemon's child
            return int(pids[1])
        time.sleep(0.2)
    journal = booted.run("journalctl -u storebox --no-pager | grep -i -e lan -e dnsmasq "
                         "| tail -20", check=False)
    raise AssertionError(f"no dnsmasq under storebox.service:\n{journal.stdout}")


def test_remove_keeps_state_and_purge_erases_it(booted: Booted, installed: Path) -> None:
    booted.stop()
    inside(installed, "dpkg -r storebox")
    kept = inside(installed, "ls /var/lib/storebox /etc/credstore.encrypted").stdout
    assert "payments.sqlite3" in kept and "storebox-kek" in kept
    assert (installed / "etc/storebox/storebox.toml").exists()  # a conffile stays
    inside(installed, "dpkg --purge storebox")
    assert not (installed / "var/lib/storebox").exists()
    assert not (installed / "etc/credstore.encrypted/storebox-kek").exists()
    assert not (installed / "etc/storebox/storebox.toml").exists()
