"""Errors of the failover package: one base class, typed subclasses with fields.

Network failures seen by probes are *results*, never exceptions; these errors
are for bad configuration and programming mistakes.
"""

from __future__ import annotations


class FailoverError(Exception):
    """Base class of every error raised by the failover package."""


class TargetError(FailoverError):
    """A probe target string that cannot be parsed."""

    def __init__(self, text: str, reason: str) -> None:
        self.text = text
        self.reason = reason
        super().__init__(f"bad probe target {text!r}: {reason}")


class ProbeConfigError(FailoverError):
    """Bad arguments to a probe or a probe round (quorum, timeout, ...)."""

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field}={value!r}: {reason}")


class DecisionConfigError(FailoverError):
    """Bad parameters for link monitoring, uplink selection or the LTE budget."""

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field}={value!r}: {reason}")


class RouteConfigError(FailoverError):
    """Bad arguments to route control: an interface name, a metric scheme, an uplink."""

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field}={value!r}: {reason}")


class RouteError(FailoverError):
    """Route control could not change the kernel's (or NetworkManager's) routes."""

    def __init__(self, operation: str, uplink: str | None, interface: str | None,
                 reason: str) -> None:
        self.operation = operation
        self.uplink = uplink
        self.interface = interface
        self.reason = reason
        where = f" uplink {uplink!r} ({interface!r})" if uplink is not None else ""
        super().__init__(f"{operation}{where}: {reason}")


class UplinkUnavailableError(RouteError):
    """The uplink cannot carry a route now: no interface, no address, no gateway, or
    (NetworkManager) no active connection. Retry once the OS has configured it."""


class NetworkManagerError(RouteError):
    """NetworkManager refused a D-Bus call; `dbus_error` is the D-Bus error name."""

    def __init__(self, operation: str, uplink: str | None, interface: str | None,
                 dbus_error: str, message: str) -> None:
        self.dbus_error = dbus_error
        self.dbus_message = message
        super().__init__(operation, uplink, interface, f"{dbus_error}: {message}")


class ConntrackError(FailoverError):
    """The conntrack tool failed (not installed, no permission, kernel refused)."""

    def __init__(self, command: list[str], returncode: int | None, stderr: str) -> None:
        self.command = command
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(f"{' '.join(command)!r} failed (exit {returncode!r}): {stderr.strip()}")


class NftConfigError(FailoverError):
    """A bad LAN forwarding setting: interface name, allowlist entry, uplink name."""

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field}={value!r}: {reason}")


class NftError(FailoverError):
    """`nft` rejected a transaction; nothing of it was applied (nft -f is atomic)."""

    def __init__(self, operation: str, returncode: int | None, stderr: str) -> None:
        self.operation = operation
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(f"nft {operation} failed (exit {returncode!r}): {stderr.strip()}")
