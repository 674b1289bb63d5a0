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
