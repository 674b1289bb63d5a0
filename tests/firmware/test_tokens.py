"""API tokens (`firmware.tokens`, `storebox token`): hashed, scoped, constant-time, file checks,
the old plain form, and the CLI against the running daemon with SIGHUP."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware.cli.main import main
from firmware.errors import ApiClientError
from firmware.tokens import (
    MIN_PLAIN_LENGTH,
    TokenStore,
    daemon_uid,
    digest_of,
    parse_tokens,
    tokens_file_problems,
)
from tests.support.daemon import TOKEN, DaemonProcess, write_config, write_tokens

HEX64 = re.compile(r"[0-9a-f]{64}")


def secret_file(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def hashed_line(name: str, scopes: str, token: str, created: str = "") -> str:
    return f"{name} {scopes} {hashlib.sha256(token.encode()).hexdigest()} {created}".strip()


# --------------------------------------------------------------------------- the format


def test_hashed_lines_give_names_scopes_and_digests() -> None:
    text = ("# comment\n\n" + hashed_line("till-1", "pos", "a" * 32, "2025-01-01T00:00:00Z")
            + "\n" + hashed_line("ops", "read,admin", "b" * 32) + "\n")
    parsed = parse_tokens(text)
    assert parsed.warnings == []
    till, ops = parsed.entries
    assert (till.name, till.scopes, till.created, till.line) == (
        "till-1", frozenset({"pos"}), "2025-01-01T00:00:00Z", 3)
    assert (ops.name, ops.scopes, ops.created, ops.legacy) == (
        "ops", frozenset({"read", "admin"}), "", False)
    assert till.digest == hashlib.sha256(b"a" * 32).digest()


@pytest.mark.parametrize(("line", "reason"), [
    ("till-1 pos,write " + "0" * 64, "unknown scope 'write'"),
    ("till-1 pos " + "0" * 63, "SHA-256 in 64 lowercase hex"),
    ("till-1 pos " + "A" * 64, "SHA-256 in 64 lowercase hex"),
    ("till/1 pos " + "0" * 64, "bad token name"),
    ("till-1 pos", "expected NAME SCOPES SHA256-HEX"),
    ("a b c d e", "expected NAME SCOPES SHA256-HEX"),
])
def test_a_malformed_line_is_refused_naming_its_line_only(line: str, reason: str) -> None:
    good = hashed_line("ok", "pos", "c" * 32)
    parsed = parse_tokens(f"{good}\n{line}\n", "F")
    assert [e.name for e in parsed.entries] == ["ok"]
    assert len(parsed.warnings) == 1
    assert parsed.warnings[0].startswith("F line 2: ")
    assert reason in parsed.warnings[0]
    assert line not in parsed.warnings[0]


def test_duplicate_names_and_tokens_are_refused() -> None:
    text = "\n".join([hashed_line("a", "pos", "x" * 32), hashed_line("a", "read", "y" * 32),
                      hashed_line("b", "read", "x" * 32)])
    parsed = parse_tokens(text, "F")
    assert [e.name for e in parsed.entries] == ["a"]
    assert parsed.warnings == ["F line 2: token name 'a' used twice; refused",
                               "F line 3: the same token as an earlier line; refused"]


def test_old_plain_file_loads_as_pos_read_with_a_warning() -> None:
    plain = "plain-token-0123456789"
    parsed = parse_tokens(f"# old\n{plain}\n", "F")
    (entry,) = parsed.entries
    assert entry.legacy and entry.name == "legacy-2" and entry.line == 2
    assert entry.scopes == frozenset({"pos", "read"})
    assert entry.digest == digest_of(plain)
    assert parsed.legacy_lines == [2]
    assert len(parsed.warnings) == 1 and "plain tokens (line 2)" in parsed.warnings[0]
    assert plain not in parsed.warnings[0]


def test_short_plain_tokens_are_refused_naming_the_line_never_the_token() -> None:
    short = "x" * (MIN_PLAIN_LENGTH - 1)
    just_long_enough = "y" * MIN_PLAIN_LENGTH
    parsed = parse_tokens(f"# tokens\nz\n{short}\n{just_long_enough}\n", "F")
    assert [e.digest for e in parsed.entries] == [digest_of(just_long_enough)]
    refused = [w for w in parsed.warnings if w.endswith("; refused")]
    assert refused == ["F line 2: plain token shorter than 16 characters; refused",
                       "F line 3: plain token shorter than 16 characters; refused"]
    assert not any(short in w for w in parsed.warnings)


def test_the_one_character_token_of_old_is_no_longer_accepted(tmp_path: Path,
                                                              caplog: Any) -> None:
    store = TokenStore(str(secret_file(tmp_path / "t", "k\n")))
    assert not store.check("k")
    assert "line 1: plain token shorter than 16 characters" in caplog.text


# --------------------------------------------------------------------------- the store


def test_store_authenticates_by_hash_and_gives_the_scopes(tmp_path: Path) -> None:
    path = write_tokens(tmp_path / "t", [("till", "pos", "till-token-0123456789"),
                                         ("ops", "read,admin", "ops-token-0123456789")])
    store = TokenStore(str(path))
    assert len(store) == 2 and store.problem is None
    till = store.authenticate("till-token-0123456789")
    assert till is not None and till.name == "till" and till.scopes == {"pos"}
    ops = store.authenticate("ops-token-0123456789")
    assert ops is not None and ops.scopes == {"read", "admin"}
    for wrong in ("", "till-token-012345678", "till-token-0123456789x",
                  digest_of("till-token-0123456789").hex()):  # the hash is no token
        assert store.authenticate(wrong) is None
    assert "till-token" not in path.read_text()


def test_constant_time_compare_once_per_check_whatever_the_number_of_tokens(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = [(f"t{i}", "pos", f"token-{i:04d}-0123456789abcdef") for i in range(500)]
    store = TokenStore(str(write_tokens(tmp_path / "t", tokens)))
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)  # the module firmware.tokens calls
    hit = store.authenticate("token-0250-0123456789abcdef")
    assert hit is not None and hit.name == "t250"
    assert calls == [(digest_of("token-0250-0123456789abcdef"),) * 2]
    calls.clear()
    assert store.authenticate("token-9999-0123456789abcdef") is None
    assert len(calls) == 1 and calls[0][0] == digest_of("token-9999-0123456789abcdef")
    assert calls[0][1] == bytes(32)  # compared with a dummy: the same work as a hit


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o620])
def test_a_file_others_may_read_is_refused_as_a_whole(tmp_path: Path, mode: int,
                                                      caplog: Any) -> None:
    path = write_tokens(tmp_path / "t", [("till", "pos", "till-token-0123456789")])
    path.chmod(mode)
    store = TokenStore(str(path))
    assert len(store) == 0 and not store.check("till-token-0123456789")
    assert store.problem is not None and f"mode {mode:04o}" in store.problem
    assert "refused" in caplog.text
    assert tokens_file_problems(str(path)) == [store.problem]
    path.chmod(0o600)  # fixed and reloaded (SIGHUP): accepted again
    assert store.reload() == 1 and store.problem is None
    assert store.check("till-token-0123456789")


def test_a_0400_file_is_fine(tmp_path: Path) -> None:
    path = write_tokens(tmp_path / "t", [("till", "pos", "till-token-0123456789")])
    path.chmod(0o400)
    assert TokenStore(str(path)).check("till-token-0123456789")


def test_a_file_owned_by_another_user_is_refused(tmp_path: Path) -> None:
    path = write_tokens(tmp_path / "t", [("till", "pos", "till-token-0123456789")])
    other = os.geteuid() + 4242
    store = TokenStore(str(path), owner_uid=other)  # as if the daemon ran as `other`
    assert not store.check("till-token-0123456789")
    assert store.problem is not None and f"not by the daemon's user (uid {other})" in \
        store.problem
    if os.geteuid() == 0:
        os.chown(path, other, -1)
        assert TokenStore(str(path), owner_uid=other).check("till-token-0123456789")
        assert TokenStore(str(path)).problem is not None


def test_symlinks_directories_and_missing_files_are_refused(tmp_path: Path) -> None:
    real = write_tokens(tmp_path / "real", [("till", "pos", "till-token-0123456789")])
    (tmp_path / "link").symlink_to(real)
    (tmp_path / "dir").mkdir(mode=0o700)
    problems = {name: tokens_file_problems(str(tmp_path / name))
                for name in ("link", "dir", "missing")}
    assert "symlink" in problems["link"][0]
    assert "not a regular file" in problems["dir"][0]
    assert problems["missing"] == [f"the POS tokens file '{tmp_path / 'missing'}' "
                                   "does not exist"]
    assert not TokenStore(str(tmp_path / "link")).check("till-token-0123456789")


def test_daemon_uid_is_the_state_dirs_owner(tmp_path: Path) -> None:
    assert daemon_uid(str(tmp_path)) == os.stat(tmp_path).st_uid
    assert daemon_uid(str(tmp_path / "absent")) == os.geteuid()
    assert daemon_uid(None) == os.geteuid()


def test_config_check_says_why_the_tokens_file_is_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    tokens = tmp_path / "pos-tokens"
    assert main(["config", "check", "--config", str(config)]) == 0
    capsys.readouterr()
    tokens.chmod(0o644)
    assert main(["config", "check", "--config", str(config)]) == 2
    err = capsys.readouterr().err.splitlines()
    line = next(n for n, text in enumerate(config.read_text().splitlines(), start=1)
                if text.startswith("tokens_file"))
    assert err == [f"{config}:{line}: api.tokens_file: the POS tokens file '{tokens}' may be "
                   "read by group or others (mode 0644): refused; make it 0600"]


# --------------------------------------------------------------------------- the CLI


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    return tmp_path / "pos-tokens"


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["token", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_token_add_prints_it_once_and_stores_only_its_hash(
        tokens_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "add", "--scope", "pos,read", "--name", "till-1",
                         "--tokens-file", str(tokens_file))
    assert code == 0
    token = out.strip()
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", token)  # 24 random bytes = 192 bits
    assert "shown only this once" in err and token not in err
    assert tokens_file.stat().st_mode & 0o777 == 0o600
    assert tokens_file.stat().st_uid == os.geteuid()
    text = tokens_file.read_text()
    assert token not in text
    (line,) = [x for x in text.splitlines() if not x.startswith("#")]
    name, scopes, hexdigest, created = line.split()
    assert (name, scopes, hexdigest) == ("till-1", "pos,read", digest_of(token).hex())
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", created)
    entry = TokenStore(str(tokens_file)).authenticate(token)
    assert entry is not None and entry.scopes == {"pos", "read"}
    assert [p.name for p in tokens_file.parent.iterdir()] == ["pos-tokens"]  # no temp left


def test_two_adds_give_different_tokens_and_names_are_unique(
        tokens_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = cli(capsys, "add", "--scope", "pos", "--name", "a", "--tokens-file", str(tokens_file))
    b = cli(capsys, "add", "--scope", "admin", "--name", "b", "--tokens-file", str(tokens_file))
    assert a[0] == b[0] == 0 and a[1] != b[1]
    again = cli(capsys, "add", "--scope", "pos", "--name", "a", "--tokens-file",
                str(tokens_file))
    assert again[0] == 1 and again[1] == "" and "exists" in again[2]
    store = TokenStore(str(tokens_file))
    assert len(store) == 2
    assert store.check(a[1].strip()) and store.check(b[1].strip())


@pytest.mark.parametrize(("args", "message"), [
    (["--scope", "pos,write", "--name", "x"], "unknown scope 'write'"),
    (["--scope", "", "--name", "x"], "--scope"),
    (["--scope", "pos", "--name", "has space"], "--name"),
])
def test_token_add_refuses_bad_scopes_and_names(tokens_file: Path, args: list[str],
                                                message: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "add", *args, "--tokens-file", str(tokens_file))
    assert code == 2 and out == "" and message in err
    assert not tokens_file.exists()


def test_token_list_shows_names_scopes_created_never_whole_hashes(
        tokens_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cli(capsys, "add", "--scope", "pos", "--name", "till-1", "--tokens-file", str(tokens_file))
    cli(capsys, "add", "--scope", "read,admin", "--name", "ops", "--tokens-file",
        str(tokens_file))
    code, out, _ = cli(capsys, "list", "--tokens-file", str(tokens_file))
    assert code == 0
    assert not HEX64.search(out)
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "SCOPES", "CREATED", "ID"]
    assert [line.split()[:2] for line in lines[1:]] == [["till-1", "pos"], ["ops", "read,admin"]]
    code, out, _ = cli(capsys, "list", "--json", "--tokens-file", str(tokens_file))
    rows = json.loads(out)
    assert [(r["name"], r["scopes"], r["form"]) for r in rows] == [
        ("till-1", ["pos"], "hashed"), ("ops", ["read", "admin"], "hashed")]
    assert all(len(r["id"]) == 8 and r["created"] for r in rows)
    assert not HEX64.search(out)


def test_token_revoke(tokens_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keep = cli(capsys, "add", "--scope", "pos", "--name", "keep", "--tokens-file",
               str(tokens_file))[1].strip()
    gone = cli(capsys, "add", "--scope", "pos", "--name", "gone", "--tokens-file",
               str(tokens_file))[1].strip()
    code, out, _ = cli(capsys, "revoke", "gone", "--tokens-file", str(tokens_file))
    assert code == 0 and "revoked 'gone'" in out and "SIGHUP" in out
    store = TokenStore(str(tokens_file))
    assert store.check(keep) and not store.check(gone)
    code, _, err = cli(capsys, "revoke", "gone", "--tokens-file", str(tokens_file))
    assert code == 1 and "no token named 'gone'" in err
    assert tokens_file.stat().st_mode & 0o777 == 0o600


def test_a_rewrite_converts_an_old_plain_file_to_hashes(
        tokens_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plain = "old-plain-token-0123456789"
    secret_file(tokens_file, f"# old form\n{plain}\nshort\n", mode=0o644)
    code, out, _ = cli(capsys, "list", "--tokens-file", str(tokens_file))
    assert code == 0 and "legacy-2" in out and "(plain, old form)" in out
    code, out, err = cli(capsys, "add", "--scope", "admin", "--name", "ops",
                         "--tokens-file", str(tokens_file))
    assert code == 0
    assert "line 3: plain token shorter than 16 characters" in err
    assert "1 plain tokens of the old form are now stored as hashes" in err
    assert plain not in err and plain not in tokens_file.read_text()
    assert "short" not in tokens_file.read_text()
    assert tokens_file.stat().st_mode & 0o777 == 0o600  # the rewrite fixed the mode too
    store = TokenStore(str(tokens_file))
    legacy = store.authenticate(plain)
    assert legacy is not None and legacy.name == "legacy-2" and legacy.scopes == {"pos", "read"}
    assert store.warnings == []  # no plain token left


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root (CI runs as root)")
def test_a_rewrite_keeps_the_files_owner(tokens_file: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    cli(capsys, "add", "--scope", "pos", "--name", "a", "--tokens-file", str(tokens_file))
    os.chown(tokens_file, 4242, 4343)
    cli(capsys, "add", "--scope", "pos", "--name", "b", "--tokens-file", str(tokens_file))
    st = tokens_file.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (4242, 4343, 0o600)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root (CI runs as root)")
def test_a_new_file_belongs_to_the_daemons_user(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path)
    (tmp_path / "pos-tokens").unlink()
    os.chown(tmp_path / "state", 4242, 4242)  # the daemon's user owns its state_dir
    code, _, _ = cli(capsys, "add", "--scope", "pos", "--name", "a", "--config", str(config))
    assert code == 0
    assert (tmp_path / "pos-tokens").stat().st_uid == 4242


# --------------------------------------------------------------------------- the daemon


@pytest.fixture
def daemon(netns: str, tmp_path: Path) -> Iterator[DaemonProcess]:
    proc = DaemonProcess(netns, write_config(tmp_path), env={"WATCHDOG_USEC": "400000"})
    try:
        proc.notify.wait_for("READY", "1")
        yield proc
    finally:
        proc.stop()


def reloads(daemon: DaemonProcess) -> int:
    doc = daemon.get("/v1/status")  # the admin socket: no token, never rate limited
    return sum(e["kind"] == "config_reloaded" for e in doc["recent_events"])


def sighup(daemon: DaemonProcess) -> None:
    """SIGHUP, then wait (paced by the daemon's watchdog pings) until it reloaded."""
    before = reloads(daemon)
    daemon.signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while reloads(daemon) == before:
        assert time.monotonic() < deadline, daemon.log()
        daemon.notify.wait_for("WATCHDOG", "1")


def test_cli_add_and_revoke_reach_the_running_daemon_on_sighup(
        daemon: DaemonProcess, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(daemon.config)
    code, out, _ = cli(capsys, "add", "--scope", "read", "--name", "monitor", "--config", config)
    assert code == 0
    token = out.strip()
    with pytest.raises(ApiClientError, match="401"):  # not before SIGHUP
        daemon.get_tcp("/v1/status", token)
    sighup(daemon)
    assert daemon.get_tcp("/v1/status", token)["device_id"] == "store-test"
    with pytest.raises(ApiClientError, match="403 forbidden"):  # read only
        daemon.get_tcp("/v1/queue/drain", token, method="POST")
    assert daemon.get_tcp("/v1/status")["device_id"] == "store-test"  # TOKEN still there

    assert cli(capsys, "revoke", "monitor", "--config", config)[0] == 0
    assert daemon.get_tcp("/v1/status", token)  # until SIGHUP
    sighup(daemon)
    with pytest.raises(ApiClientError, match="401"):
        daemon.get_tcp("/v1/status", token)
    assert token not in daemon.log()
    code, out, _ = cli(capsys, "list", "--config", config)
    assert code == 0 and "monitor" not in out and "tests" in out


def test_a_refused_tokens_file_leaves_the_daemon_running_with_no_token(
        netns: str, tmp_path: Path) -> None:
    config = write_config(tmp_path)
    (tmp_path / "pos-tokens").chmod(0o644)
    proc = DaemonProcess(netns, config, env={"WATCHDOG_USEC": "400000"})
    try:
        proc.notify.wait_for("READY", "1")
        with pytest.raises(ApiClientError, match="401"):
            proc.get_tcp("/v1/status")
        doc = proc.get("/v1/status")  # the socket still serves the technician
        faults = [e for e in doc["recent_events"] if e["kind"] == "fault"
                  and e.get("reason") == "tokens_file_refused"]
        assert faults and "mode 0644" in faults[0]["message"], doc["recent_events"]
        assert "mode 0644): refused" in proc.log()
        (tmp_path / "pos-tokens").chmod(0o600)
        sighup(proc)
        assert proc.get_tcp("/v1/status")["device_id"] == "store-test"
        assert TOKEN not in proc.log()
    finally:
        proc.stop()


def test_old_plain_tokens_file_still_works_with_the_daemon(netns: str, tmp_path: Path,
                                                           caplog: Any) -> None:
    config = write_config(tmp_path)
    plain = "plain-old-token-0123456789"
    secret_file(tmp_path / "pos-tokens", f"{plain}\n")
    proc = DaemonProcess(netns, config)
    try:
        proc.notify.wait_for("READY", "1")
        assert proc.get_tcp("/v1/status", plain)["device_id"] == "store-test"  # read
        with pytest.raises(ApiClientError, match="403"):  # but not admin
            proc.get_tcp("/v1/keys/rotate", plain, method="POST")
        assert "plain tokens (line 1): loaded with scopes pos,read" in proc.log()
        assert plain not in proc.log()
    finally:
        proc.stop()


def test_log_records_never_carry_a_token(tmp_path: Path, caplog: Any) -> None:
    caplog.set_level(logging.DEBUG)
    plain = "plain-old-token-0123456789"
    TokenStore(str(secret_file(tmp_path / "t", f"{plain}\nshort-one\nx y\n")))
    assert caplog.records and plain not in caplog.text and "short-one" not in caplog.text
