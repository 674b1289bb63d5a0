"""The systemd notify protocol (sd_notify(3)), written directly to $NOTIFY_SOCKET.

systemd documents this datagram protocol as a stable interface: newline-separated
KEY=VALUE assignments in one datagram on a unix socket. An address starting with
'@' is in the abstract namespace. With no $NOTIFY_SOCKET every call is a no-op.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("storebox.sdnotify")


class Notifier:
    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self._sock: socket.socket | None = None
        if self.address:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            # never block the event loop on a reader that is not keeping up
            self._sock.setblocking(False)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, **assignments: str | int) -> bool:
        """Send e.g. notify(READY=1, STATUS="serving"); False when not under systemd."""
        if self._sock is None:
            return False
        payload = "\n".join(f"{k}={v}" for k, v in assignments.items()).encode()
        try:
            self._sock.sendto(payload, self.address)
        except BlockingIOError:
            log.debug("systemd's notify socket is full; dropped %r", payload[:40])
            return False
        except OSError as exc:
            log.warning("cannot notify systemd at %r: %s", self.address, exc)
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval_s() -> float | None:
    """Half of $WATCHDOG_USEC, if the watchdog is on for this process."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 1_000_000 / 2
