"""Keep card data in this process's memory out of reach of core dumps and other processes.

While a payment is in flight the daemon holds the PAN and the CVC in memory. Two ways
they could leave it without the code ever writing them:

- a **core dump** when the process crashes (written to the SD card, or handed to
  systemd-coredump / apport), which holds the whole address space;
- another process of the **same user** attaching with ptrace (a debugger, an exploited
  helper) or reading ``/proc/<pid>/mem``.

`harden_memory` sets ``RLIMIT_CORE`` to (0, 0), so no core file is written and the
limit cannot be raised again without CAP_SYS_RESOURCE, and ``prctl(PR_SET_DUMPABLE,
0)``, which also stops core dumps through a pipe handler, makes ``/proc/<pid>/mem``,
``environ`` and the like owned by root, and refuses ptrace-attach to anyone without
CAP_SYS_PTRACE. Both are per process (every thread) and inherited by nothing that is
exec'd: the dumpable flag is reset by execve, the core limit is inherited (harmless).
The daemon calls it at its start, before any card can arrive.

Swap is the third way (a swapped-out page lands on the SD card); it is a system
setting: see the README, "Memory and swap".

Where a step is not possible (not Linux, a sandbox refusing the call) it fails soft:
the daemon still runs, the step is reported as not applied and a warning names it.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import resource
import sys
from dataclasses import dataclass, field

log = logging.getLogger("storebox.hardening")

PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4


@dataclass(frozen=True)
class Hardening:
    """What `harden_memory` left in place, for the log and the status."""

    #: RLIMIT_CORE is (0, 0): no core file can be written.
    core_dumps_off: bool
    #: PR_GET_DUMPABLE is 0: no core dump, no ptrace-attach or /proc/<pid>/mem read by
    #: another process without CAP_SYS_PTRACE.
    not_dumpable: bool
    #: One line per step that could not be applied (empty when both are in place).
    warnings: tuple[str, ...] = field(default=())

    @property
    def complete(self) -> bool:
        return self.core_dumps_off and self.not_dumpable

    def to_json(self) -> dict[str, object]:
        return {"core_dumps_off": self.core_dumps_off, "not_dumpable": self.not_dumpable,
                "warnings": list(self.warnings)}


def _prctl(option: int, arg: int = 0) -> int:
    """prctl(2) through the C library; raises OSError with the call's errno."""
    libc = ctypes.CDLL(None, use_errno=True)
    result: int = libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg), ctypes.c_ulong(0),
                             ctypes.c_ulong(0), ctypes.c_ulong(0))
    if result == -1:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
    return result


def is_dumpable() -> bool | None:
    """This process's PR_GET_DUMPABLE; None where it cannot be asked (not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return _prctl(PR_GET_DUMPABLE) != 0
    except (OSError, AttributeError):
        return None


def _core_dumps_off() -> str | None:
    """Set RLIMIT_CORE to (0, 0); the warning when that is not possible."""
    try:
        if resource.getrlimit(resource.RLIMIT_CORE) != (0, 0):
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (OSError, ValueError) as exc:
        return f"cannot turn core dumps off (setrlimit RLIMIT_CORE): {exc}"
    return None


def _not_dumpable() -> str | None:
    """prctl(PR_SET_DUMPABLE, 0); the warning when that is not possible."""
    if not sys.platform.startswith("linux"):
        return f"cannot make the process non-dumpable on {sys.platform} (Linux only)"
    try:
        if _prctl(PR_GET_DUMPABLE) != 0:
            _prctl(PR_SET_DUMPABLE, 0)
    except AttributeError:
        return "cannot make the process non-dumpable: the C library has no prctl"
    except OSError as exc:
        hint = " (refused by a sandbox or seccomp filter?)" if exc.errno in (
            errno.EPERM, errno.EACCES, errno.ENOSYS) else ""
        return f"cannot make the process non-dumpable (prctl PR_SET_DUMPABLE): {exc}{hint}"
    return None


def harden_memory() -> Hardening:
    """Turn core dumps off and make the process non-dumpable; report what holds.

    Idempotent: a second call changes nothing and logs at debug level only. Never
    raises: each step that cannot be applied is logged as a warning and reported.
    """
    already = (resource.getrlimit(resource.RLIMIT_CORE) == (0, 0)
               and is_dumpable() is False)
    warnings = tuple(w for w in (_core_dumps_off(), _not_dumpable()) if w is not None)
    result = Hardening(core_dumps_off=resource.getrlimit(resource.RLIMIT_CORE) == (0, 0),
                       not_dumpable=is_dumpable() is False, warnings=warnings)
    for warning in warnings:
        log.warning("memory hardening: %s; card data in memory is less protected", warning)
    if already:
        log.debug("memory hardening already in place")
    elif result.complete:
        log.info("memory hardening: core dumps off, process not dumpable (no ptrace "
                 "attach or /proc/<pid>/mem read by other processes)")
    return result
