"""The one exception base of the modem package; every error carries the fields it is about."""

from __future__ import annotations

from hw.errors import HwError


class ModemError(HwError):
    """Base of every error raised by `hw.modem` (under `hw.errors.HwError`)."""


class ParseError(ModemError):
    """An information response of `command` could not be parsed.

    `line` is the offending input: the line that failed (less surrounding blanks), or the
    whole response when its shape is wrong; `reason` says what was expected. The message
    names the input with `!r` so control characters stay visible.
    """

    def __init__(self, command: str, line: str, reason: str) -> None:
        self.command = command
        self.line = line
        self.reason = reason
        super().__init__(f"{command}: {reason}: {line!r}")


# --- transport / channel (hw.modem.transport, hw.modem.channel) -------------------------


class PortOpenError(ModemError):
    """The AT port `port` (a device path or pyserial URL) could not be opened."""

    def __init__(self, port: str, reason: str) -> None:
        self.port = port
        self.reason = reason
        super().__init__(f"cannot open AT port {port!r}: {reason}")


class PortClosed(ModemError):
    """The AT port `port` is closed: hang-up/EOF, an I/O error, or closed by its owner."""

    def __init__(self, port: str, reason: str) -> None:
        self.port = port
        self.reason = reason
        super().__init__(f"AT port {port!r} closed: {reason}")


class CommandTimeout(ModemError):
    """No final result code for `command` within `timeout_s` seconds.

    `resync` is true when the command was never sent because the channel could not
    resynchronise with the modem after an earlier unanswered command.
    """

    def __init__(self, command: str, timeout_s: float, *, resync: bool = False) -> None:
        self.command = command
        self.timeout_s = timeout_s
        self.resync = resync
        what = "could not resync before sending" if resync else "no final result code for"
        super().__init__(f"{what} {command!r} within {timeout_s:g} s")


class CommandError(ModemError):
    """`command` ended with an error final result code `final` (`ERROR`, `+CME ERROR: 10`...).

    `cme_code` / `cms_code` are the numeric +CME/+CMS codes (verbose texts mapped to their
    3GPP TS 27.007/27.005 numbers when known), else None.
    """

    def __init__(
        self, command: str, final: str, cme_code: int | None = None, cms_code: int | None = None
    ) -> None:
        self.command = command
        self.final = final
        self.cme_code = cme_code
        self.cms_code = cms_code
        super().__init__(f"{command!r} failed: {final!r}")


class ModemRebooted(ModemError):
    """The modem announced a reboot (`RDY`) while `command` was outstanding."""

    def __init__(self, command: str, line: str = "RDY") -> None:
        self.command = command
        self.line = line
        super().__init__(f"modem rebooted ({line!r}) while {command!r} was outstanding")


# --- modem operations (hw.modem.modem, hw.modem.profiles) -------------------------------


class NotSupported(ModemError):
    """`operation` is not available on this modem (`vendor` profile, `model`)."""

    def __init__(self, operation: str, vendor: str, model: str | None = None) -> None:
        self.operation = operation
        self.vendor = vendor
        self.model = model
        on = f"{vendor} modem {model}" if model else f"{vendor} modem"
        super().__init__(f"{operation} is not supported on a {on}")


class SimFault(ModemError):
    """The SIM cannot be used without a person: `reason` is one of

    - `"pin_required"` — the SIM asks for its PIN and none is configured;
    - `"pin_rejected"` — the configured PIN was refused (it is never tried again);
    - `"pin_unconfirmed"` — a PIN attempt got no answer and the SIM is still locked (not
      retried: the attempt may have counted);
    - `"puk_required"` — the SIM is PUK-locked (no PIN is ever sent then);
    - `"locked"` — another lock (PH-SIM, network personalisation, PIN2/PUK2...);
    - `"failure"` — the SIM failed or is blocked for good.

    `state` is the `+CPIN` state (a `hw.modem.parsers.identity.SimState` value).
    """

    def __init__(self, reason: str, state: str, detail: str = "") -> None:
        self.reason = reason
        self.state = state
        self.detail = detail
        tail = f": {detail}" if detail else ""
        super().__init__(f"SIM fault {reason} (state {state}){tail}")


class NotRegistered(ModemError):
    """The modem did not register on a network within `timeout_s` (so no data call)."""

    def __init__(self, timeout_s: float, status: str | None) -> None:
        self.timeout_s = timeout_s
        self.status = status
        super().__init__(f"not registered within {timeout_s:g} s (registration {status})")
