"""Network namespaces for tests: the drill's own helpers (`lab.netns`), and `tcp_state`,
what a TCP connection from inside a namespace meets (the firewall tests' verdict)."""

from __future__ import annotations

import socket
from collections.abc import Callable

from lab.netns import inside, namespace, run

__all__ = ["inside", "namespace", "run", "tcp_state"]


def tcp_state(ns: str, host: str, port: int, *, timeout_s: float,
              greeted: Callable[[socket.socket], None] | None = None) -> str:
    """"open" (connected, and `greeted`, a check of what the server then says, passed),
    "dropped" (no answer within `timeout_s`) or "refused" (RST or ICMP error), for a
    connection to `host`:`port` from inside the namespace `ns`."""
    with inside(ns):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(timeout_s)
    try:
        s.connect((host, port))
        if greeted is not None:
            greeted(s)
        return "open"
    except TimeoutError:
        return "dropped"
    except OSError:
        return "refused"
    finally:
        s.close()
