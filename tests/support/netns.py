"""Network namespaces for tests: created per test, removed afterwards, host untouched."""

from __future__ import annotations

import itertools
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

_counter = itertools.count()


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, check=check, capture_output=True, text=True)


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
