"""Faults at an ISP, injected with nftables in the ISP's namespace (the box never sees them).

- `blackhole`: everything arriving from the box is dropped; the link stays up (KT 2021).
- `random_loss`: `percent` % of packets dropped each way (nft `numgen`; this kernel has no
  netem).
- `heal`: all faults of that namespace gone, a latency (`lab.latency`) too.
- latency: `lab.latency.add_latency` (a userspace relay: nft cannot delay a packet).

Every fault lives in one table, `inet sbxlab`, of the ISP's namespace. Setting a fault
replaces that table in one nft transaction (the previous fault of that ISP ends at the
same instant); `heal` deletes it.
"""

from __future__ import annotations

from lab.errors import DrillError
from lab.latency import remove_latency
from lab.netns import run

FAULT_TABLE = "sbxlab"


def _replace(ns: str, body: str) -> None:
    nft(ns, f"table inet {FAULT_TABLE}\ndelete table inet {FAULT_TABLE}\n{body}")


def nft(ns: str, script: str) -> None:
    """Apply an nft script in namespace `ns`; DrillError with nft's message when refused."""
    proc = run("ip", "netns", "exec", ns, "nft", "-f", "-", check=False, stdin=script)
    if proc.returncode != 0:
        raise DrillError(f"nft in {ns}", proc.stderr.strip() or f"exit {proc.returncode}")


def blackhole(ns: str, ifname: str) -> None:
    """Drop everything arriving from the box on the ISP side; the link stays up."""
    _replace(ns, f"""
        table inet {FAULT_TABLE} {{
          chain in {{ type filter hook prerouting priority -300; policy accept;
            iifname "{ifname}" meta l4proto {{ tcp, udp, icmp }} counter drop
          }}
        }}
        """)


def random_loss(ns: str, ifname: str, percent: int) -> None:
    """Drop `percent`% of packets each way at the ISP side (nft numgen, no netem)."""
    if not 0 <= percent <= 100:
        raise DrillError("random_loss", f"percent {percent!r} is not between 0 and 100")
    _replace(ns, f"""
        table inet {FAULT_TABLE} {{
          chain in {{ type filter hook prerouting priority -300; policy accept;
            iifname "{ifname}" numgen random mod 100 < {percent} counter drop
          }}
          chain out {{ type filter hook postrouting priority 300; policy accept;
            oifname "{ifname}" numgen random mod 100 < {percent} counter drop
          }}
        }}
        """)


def heal(ns: str) -> None:
    """Remove every fault from namespace `ns` (nothing to do when there is none)."""
    remove_latency(ns)
    run("ip", "netns", "exec", ns, "nft", "delete", "table", "inet", FAULT_TABLE, check=False)


def dropped(ns: str) -> int:
    """Packets the faults of namespace `ns` have dropped so far (0 without faults)."""
    proc = run("ip", "netns", "exec", ns, "nft", "list", "table", "inet", FAULT_TABLE,
               check=False)
    total = 0
    for line in proc.stdout.splitlines():
        if "counter packets" in line:
            total += int(line.split("counter packets")[1].split()[0])
    return total
