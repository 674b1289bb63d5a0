"""How a probe failed, in a few words: an answer that says no (``ProbeFailed``), or
the OS or aiohttp error that ended it."""

from __future__ import annotations

import errno
import os
import socket
import ssl

import aiohttp

from failover.errors import FailoverError

__all__ = ["ProbeFailed", "describe_failure"]


class ProbeFailed(FailoverError):
    """A definitive, expected failure (an answer that says no)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def describe_failure(exc: BaseException, interface: str) -> str:
    if isinstance(exc, ProbeFailed):
        return exc.reason
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return f"TLS certificate rejected: {exc.certificate_error}"
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"TLS error: {exc}"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return describe_failure(exc.os_error, interface)
    if isinstance(exc, ssl.SSLError):
        return f"TLS error: {exc.reason or exc}"
    if isinstance(exc, socket.gaierror):
        return f"name resolution failed: {exc.strerror}"
    if isinstance(exc, OSError) and exc.errno is not None:
        if exc.errno == errno.ENODEV:
            return f"no such interface {interface!r}"
        if exc.errno == errno.ENETUNREACH:
            return f"network unreachable (no route via {interface!r}?)"
        name = errno.errorcode.get(exc.errno, str(exc.errno))
        return f"{os.strerror(exc.errno).lower()} ({name})"
    if isinstance(exc, aiohttp.ClientError):
        return f"{type(exc).__name__}: {exc}"
    return f"{type(exc).__name__}: {exc}"
