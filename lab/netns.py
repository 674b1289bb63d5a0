"""Network namespaces for the drill and the tests: created per use, removed afterwards.

The host's own interfaces and routes are never touched: everything happens inside
namespaces created here, and they are deleted on exit (also when the body fails).
"""

from __future__ import annotations

import ctypes
import itertools
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

_counter = itertools.count()


def run(*args: str, check: bool = True, stdin: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    """Run a command, capture its output; CalledProcessError when it fails (`check`)."""
    return subprocess.run(args, check=check, capture_output=True, text=True, input=stdin)


@contextmanager
def namespace(prefix: str = "sbxt") -> Iterator[str]:
    """A fresh network namespace with loopback up; deleted on exit."""
    name = f"{prefix}-{os.getpid()}-{next(_counter)}"
    run("ip", "netns", "add", name)
    try:
        run("ip", "-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        run("ip", "netns", "del", name, check=False)


_libc = ctypes.CDLL(None, use_errno=True)
_CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    if _libc.setns(fd, _CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@contextmanager
def inside(name: str) -> Iterator[None]:
    """Run the calling thread inside namespace `name`: sockets it opens live there.

    Only the calling thread moves (setns(2)); it is moved back on exit, to the namespace
    it was in (its own: a worker thread's may differ from the main thread's).
    """
    with open("/proc/thread-self/ns/net") as home, open(f"/run/netns/{name}") as target:
        _setns(target.fileno())
        try:
            yield
        finally:
            _setns(home.fileno())
