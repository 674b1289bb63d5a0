"""dnsmasq as the LAN's DHCP server and caching DNS forwarder: its files and its command.

Why dnsmasq: one small, long-maintained daemon (Debian's `dnsmasq-base`, 2.90 in
bookworm, no service of its own) that is DHCP server, DNS cache and forwarder at once,
gives each lease's host name to the DNS, binds upstream queries to an interface
(`server=ADDRESS@IFACE`) and re-reads its upstreams on SIGHUP without losing a lease.
The alternatives each need two daemons (ISC Kea or dhcpd with unbound or
systemd-resolved, which serves no LAN) or, with NetworkManager's shared mode, tie the
LAN to one backend and hide the upstream it forwards to.

Everything lives in `<device.state_dir>/lan/` (0700, the daemon's own), written by
storebox at every start (dnsmasq's own configuration files are not read):

- `dnsmasq.conf` (0644): the LAN interfaces, DHCP ranges, cache, domain; `no-resolv`
  (the box's /etc/resolv.conf is not the LAN's upstream) and `servers-file`;
- `servers` (0644): one `server=ADDRESS@IFACE` per upstream (`firmware.lan.resolvers`),
  replaced atomically and announced with SIGHUP when the uplink changes; SIGHUP also
  clears the cache, so no answer learnt from the uplink left is served after a switch;
- `dnsmasq.leases`: dnsmasq's lease file, kept across restarts of dnsmasq and the box.

dnsmasq runs in the foreground (`--keep-in-foreground`, logging to stderr), as the
daemon's own user, listening on the LAN interfaces only (`bind-dynamic`, not loopback:
the box's own resolver is not replaced).
"""

from __future__ import annotations

import ipaddress
import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from firmware.config import Config
from firmware.errors import FirmwareError
from firmware.lan.resolvers import Upstream

__all__ = ["DnsmasqExited", "LanFiles", "count_leases", "render_conf", "render_servers"]

DNSMASQ = "dnsmasq"


class DnsmasqExited(FirmwareError):
    """dnsmasq stopped by itself; `output` is the end of what it said."""

    def __init__(self, code: int, output: str) -> None:
        self.code = code
        self.output = output
        super().__init__(f"dnsmasq exited with {code!r}: {output!r}")


@dataclass(frozen=True)
class LanFiles:
    """The files of the LAN's dnsmasq, in `directory`."""

    directory: Path

    @classmethod
    def under(cls, state_dir: str) -> LanFiles:
        return cls(Path(state_dir) / "lan")

    @property
    def conf(self) -> Path:
        return self.directory / "dnsmasq.conf"

    @property
    def servers(self) -> Path:
        return self.directory / "servers"

    @property
    def leases(self) -> Path:
        return self.directory / "dnsmasq.leases"

    def argv(self, program: str = DNSMASQ) -> list[str]:
        return [program, "--keep-in-foreground", f"--conf-file={self.conf}"]

    def write(self, path: Path, text: str, mode: int = 0o644) -> None:
        """Replace `path` atomically (a reader sees the old file or the new, never half)."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".new")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.chmod(partial, mode)
        os.replace(partial, path)


def _range(text: str, lease_time_s: int) -> str:
    first, _, last = text.partition("-")
    return f"dhcp-range={first.strip()},{last.strip()},{lease_time_s}"


def render_conf(config: Config, files: LanFiles, user: str | None = None) -> str:
    """dnsmasq's configuration for `config.lan` on `config.routing.lan_interfaces`."""
    lan = config.lan
    user = user or pwd.getpwuid(os.getuid()).pw_name
    lines = [
        "# written by storebox (firmware.lan.dnsmasq) at every start: edit storebox.toml",
        f"user={user}",  # the daemon's own: dnsmasq changes user only when root
        "pid-file=",
        "log-facility=-",
        *(f"interface={name}" for name in config.routing.lan_interfaces),
        "except-interface=lo",
        "bind-dynamic",
        "no-resolv",
        "no-hosts",
        "no-poll",
        "strict-order",  # the uplink's own resolvers first (firmware.lan.resolvers)
        f"servers-file={files.servers}",
        f"cache-size={lan.cache_size}",
        "domain-needed",
        "bogus-priv",
    ]
    if lan.domain:
        lines += [f"domain={lan.domain}", f"local=/{lan.domain}/", "expand-hosts"]
    if lan.dhcp_ranges:
        lines += [*(_range(r, lan.lease_time_s) for r in lan.dhcp_ranges),
                  f"dhcp-leasefile={files.leases}",
                  # the LAN's one DHCP server (lan.enabled is the operator's word): a
                  # client asking for an address from the shop's old router is told no
                  # at once instead of waiting out its request
                  "dhcp-authoritative"]
    return "\n".join(lines) + "\n"


def render_servers(upstream: Upstream | None) -> str:
    """The servers file: each upstream asked through the active uplink's interface."""
    lines = ["# written by storebox (firmware.lan.resolvers): the active uplink's resolvers"]
    if upstream is not None:
        lines += [f"server={address}@{upstream.interface}" for address in upstream.servers]
    return "\n".join(lines) + "\n"


def count_leases(path: Path, now: float) -> int:
    """Leases in dnsmasq's lease file not yet expired (`EXPIRY MAC IP NAME CLIENT-ID`
    per line, EXPIRY in wall seconds, 0 for never); 0 when there is no file."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return 0
    count = 0
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 3 or not fields[0].isdigit() or fields[0] == "duid":
            continue
        try:
            ipaddress.ip_address(fields[2])
        except ValueError:
            continue
        expiry = int(fields[0])
        count += expiry == 0 or expiry > now
    return count
