"""firmware.hardening: no core dumps, no memory reads by other same-user processes.

What is checked from outside is what an attacker would meet: ``/proc/<pid>/limits``
for the core limit, and another process of the same user without CAP_SYS_PTRACE
trying to open ``/proc/<pid>/mem`` (the permission check of a ptrace attach). A
control process that did not harden itself shows that the probe can succeed.

The dumpable flag of another process shows nowhere in /proc (the owner of
/proc/<pid>/* turns root, which says nothing when the process is root), and a process
with CAP_SYS_PTRACE passes regardless, as does a probe lacking any capability its
target holds. So targets and probe run as the same user with the same capabilities,
CAP_SYS_PTRACE dropped from the bounding set: then only the flag decides.
"""

from __future__ import annotations

import json
import logging
import resource
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from firmware import hardening
from firmware.hardening import harden_memory
from tests.support.daemon import DaemonProcess, write_config

REPO = Path(__file__).resolve().parents[2]

# Runs a command without CAP_SYS_PTRACE in its bounding set, so that it and everything
# it execs lacks it: an ordinary same-user process. (Not root: there is nothing to
# drop, and prctl refuses; the process has no capabilities anyway.)
WITHOUT_PTRACE = [sys.executable, "-c", r"""
import ctypes, os, sys
ctypes.CDLL(None).prctl(24, 19, 0, 0, 0)   # PR_CAPBSET_DROP, CAP_SYS_PTRACE
os.execvp(sys.argv[1], sys.argv[1:])
"""]

# Tries to open another process's memory: the permission check of a ptrace attach.
PROBE = r"""
import os, sys
try:
    os.close(os.open(f"/proc/{sys.argv[1]}/mem", os.O_RDONLY))
except PermissionError:
    print("denied")
else:
    print("readable")
"""

# Hardens itself when asked, reports what it sees from the inside, then waits for
# its stdin to close so the test can look at it from the outside meanwhile.
CHILD = r"""
import ctypes, json, resource, sys
from firmware.hardening import harden_memory
libc = ctypes.CDLL(None, use_errno=True)
applied = harden_memory().to_json() if sys.argv[1] == "harden" else None
print(json.dumps({"applied": applied, "dumpable": libc.prctl(3, 0, 0, 0, 0),
                  "core": resource.getrlimit(resource.RLIMIT_CORE)}), flush=True)
sys.stdin.read()
"""


def probe_memory(pid: int) -> str:
    """'denied' or 'readable': can a same-user process without CAP_SYS_PTRACE, and with
    the same other capabilities as the target, open /proc/<pid>/mem?"""
    out = subprocess.run([*WITHOUT_PTRACE, sys.executable, "-c", PROBE, str(pid)],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def core_limit(pid: int) -> tuple[str, str]:
    """The soft and hard core-file limits as /proc/<pid>/limits shows them."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max core file size"):
            soft, hard = line.split()[4:6]
            return soft, hard
    raise AssertionError(f"no core limit in /proc/{pid}/limits")


@contextmanager
def child(mode: str) -> Iterator[tuple[int, dict[str, Any]]]:
    proc = subprocess.Popen([*WITHOUT_PTRACE, sys.executable, "-c", CHILD, mode], cwd=REPO,
                            text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdin is not None
    try:
        yield proc.pid, json.loads(proc.stdout.readline())
    finally:
        proc.stdin.close()
        assert proc.wait(10) == 0


def test_a_hardened_process_has_no_core_limit_and_is_not_dumpable() -> None:
    with child("harden") as (pid, seen):
        assert seen["applied"] == {"core_dumps_off": True, "not_dumpable": True,
                                   "warnings": []}
        assert seen["dumpable"] == 0
        assert seen["core"] == [0, 0]
        assert core_limit(pid) == ("0", "0")
        assert probe_memory(pid) == "denied"


def test_the_probe_can_read_a_process_that_did_not_harden() -> None:
    """The control: the same child without the call is dumpable and readable."""
    with child("plain") as (pid, seen):
        assert seen["dumpable"] == 1
        assert probe_memory(pid) == "readable"


def test_a_second_call_changes_nothing_and_stays_quiet() -> None:
    script = ("import json, logging; logging.basicConfig(level=logging.DEBUG); "
              "from firmware.hardening import harden_memory; "
              "a = harden_memory(); b = harden_memory(); "
              "print(json.dumps([a.to_json(), b.to_json()]))")
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                         text=True, check=True)
    first, second = json.loads(out.stdout)
    assert first == second == {"core_dumps_off": True, "not_dumpable": True,
                               "warnings": []}
    assert out.stderr.count("memory hardening: core dumps off") == 1
    assert "memory hardening already in place" in out.stderr


def test_fails_soft_with_a_warning_when_not_permitted(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A sandbox that refuses both calls: the daemon still starts, and says so."""
    def refuse_prctl(option: int, arg: int = 0) -> int:
        if option == hardening.PR_GET_DUMPABLE:
            return 1
        raise PermissionError(1, "Operation not permitted")

    def refuse_setrlimit(which: int, limits: tuple[int, int]) -> None:
        raise ValueError("not allowed to raise maximum limit")

    monkeypatch.setattr(hardening, "_prctl", refuse_prctl)
    monkeypatch.setattr(resource, "getrlimit", lambda which: (-1, -1))
    monkeypatch.setattr(resource, "setrlimit", refuse_setrlimit)
    with caplog.at_level(logging.WARNING, logger="storebox.hardening"):
        result = harden_memory()
    assert not result.core_dumps_off and not result.not_dumpable and not result.complete
    assert len(result.warnings) == 2
    assert "RLIMIT_CORE" in result.warnings[0]
    assert "PR_SET_DUMPABLE" in result.warnings[1] and "sandbox" in result.warnings[1]
    assert [r.getMessage() for r in caplog.records] == [
        f"memory hardening: {w}; card data in memory is less protected"
        for w in result.warnings]


class DaemonWithoutPtrace(DaemonProcess):
    """The real daemon, started as `DaemonProcess` does but without CAP_SYS_PTRACE."""

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.starts += 1
        with self.log_path.open("ab") as log:
            return subprocess.Popen(
                ["ip", "netns", "exec", self.netns, *WITHOUT_PTRACE, sys.executable, "-m",
                 "firmware", "run", "--config", str(self.config)],
                stderr=log, stdout=subprocess.DEVNULL, env=self.env)


def test_the_daemon_is_hardened_before_it_is_ready(netns: str, tmp_path: Path) -> None:
    daemon = DaemonWithoutPtrace(netns, write_config(tmp_path))
    try:
        daemon.notify.wait_for("READY", "1")
        pid = daemon.proc.pid
        # `ip netns exec` and the wrapper exec: the pid is the daemon's Python itself.
        assert Path(f"/proc/{pid}/exe").resolve() == Path(sys.executable).resolve()
        assert "firmware\x00run" in Path(f"/proc/{pid}/cmdline").read_text()
        assert core_limit(pid) == ("0", "0")
        assert probe_memory(pid) == "denied"
        assert "memory hardening: core dumps off, process not dumpable" in daemon.log()
    finally:
        assert daemon.stop() == 0
