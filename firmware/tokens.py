"""Bearer tokens for the POS API (`api.tokens_file`): hashed, scoped, checked in constant time.

The file (docs/openapi.json, README "Security: tokens and scopes") holds one token a line:

    # storebox API tokens: NAME SCOPES SHA256-HEX CREATED (written by `storebox token`)
    till-1 pos 3a7bd3e2360a3d29eea436fcfb7e44c735d117c42d1c1835420b6b9942dd4f1b 2025-01-01T10:00:00Z

NAME is unique (`[A-Za-z0-9._-]`, 1-64 characters); SCOPES a comma list of `pos`, `read`,
`admin` (none implies another); SHA-256 of the token's UTF-8 bytes in lowercase hex;
CREATED an ISO-8601 UTC time (may be left out). Only the hash is stored: the token itself
is printed once by `storebox token add` and never written anywhere.

Why a plain SHA-256 and no slow KDF (bcrypt, scrypt, argon2): the tokens `storebox token
add` makes are 192 random bits. A slow KDF exists to make guessing a *low-entropy*
password from its hash expensive; against a uniformly random 128-bit (or longer) secret
there is nothing to guess: finding a preimage costs ~2^128 hashes whatever the hash
speed. A slow KDF would only cost the box CPU on every request (and make a flood of
requests a denial of service).

A file in the old form (one plain token a line, no spaces) still loads, with a warning,
each token with scopes `pos,read`; a plain token shorter than 16 characters is refused
(the warning names its line number, never the token). Plain tokens are hashed as they are
read: only their digests stay in memory. `storebox token add|revoke` rewrites the file in
the new form, converting plain tokens (named `legacy-<line>`) to hashes.

The file must be a regular file (no symlink), mode 0600 (or 0400), owned by the daemon's
user; otherwise it is refused as a whole: no token from it is accepted, the daemon logs
the reason and `storebox config check` reports it (`tokens_file_problems`).

Checking a presented token: its SHA-256 is looked up in a dict keyed by digest, then
compared with `hmac.compare_digest` against the stored digest (or a dummy when there is
none), so the time taken does not depend on how much of a stored secret matched and no
loop over the tokens exits early.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import logging
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

log = logging.getLogger("storebox.tokens")

#: The scopes a token may have (docs/openapi.json). None implies another.
SCOPES = ("pos", "read", "admin")
#: Scopes of a token from a file in the old form (one plain token a line).
LEGACY_SCOPES = frozenset({"pos", "read"})
#: Shortest plain token accepted (the old form); `storebox token add` makes 32 characters.
MIN_PLAIN_LENGTH = 16
#: Random bytes in a new token: 192 bits, base64url → 32 characters.
TOKEN_BYTES = 24
MAX_FILE_BYTES = 1 << 20
HEADER = ("# storebox API tokens: NAME SCOPES SHA256-HEX CREATED "
          "(written by `storebox token`; only hashes, never tokens)")
NAME_RE = re.compile(r"[A-Za-z0-9._-]{1,64}\Z")
_HEX_RE = re.compile(r"[0-9a-f]{64}\Z")
_DUMMY_DIGEST = bytes(32)


def digest_of(token: str) -> bytes:
    """SHA-256 of the token's UTF-8 bytes (what the file stores, in hex)."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


@dataclass(frozen=True)
class TokenEntry:
    name: str
    scopes: frozenset[str]
    digest: bytes
    created: str = ""
    line: int = 0
    #: Read from a plain token (the old form), not from a hash.
    legacy: bool = False

    def line_text(self) -> str:
        scopes = ",".join(s for s in SCOPES if s in self.scopes)
        return " ".join(p for p in (self.name, scopes, self.digest.hex(), self.created) if p)

    @property
    def short_id(self) -> str:
        """Enough of the hash to tell entries apart; never the whole hash."""
        return self.digest.hex()[:8]


@dataclass
class ParsedTokens:
    entries: list[TokenEntry] = field(default_factory=list)
    #: One message a refused or doubtful line, naming the line number, never its text.
    warnings: list[str] = field(default_factory=list)
    legacy_lines: list[int] = field(default_factory=list)


def parse_scopes(text: str) -> frozenset[str]:
    """`pos,read` → {"pos", "read"}; ValueError naming what is wrong."""
    scopes = [s.strip() for s in text.split(",")]
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise ValueError(f"unknown scope {unknown[0]!r}; scopes are {', '.join(SCOPES)}"
                         if unknown else "no scope given")
    return frozenset(scopes)


def parse_tokens(text: str, path: str = "tokens_file") -> ParsedTokens:
    """Both forms, line by line: `NAME SCOPES HEX [CREATED]` or one plain token."""
    parsed = ParsedTokens()
    names: set[str] = set()
    digests: set[bytes] = set()
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        where = f"{path} line {number}"
        if len(fields) == 1:
            if len(line) < MIN_PLAIN_LENGTH:
                parsed.warnings.append(f"{where}: plain token shorter than "
                                       f"{MIN_PLAIN_LENGTH} characters; refused")
                continue
            entry = TokenEntry(f"legacy-{number}", LEGACY_SCOPES, digest_of(line),
                               line=number, legacy=True)
            parsed.legacy_lines.append(number)
        elif len(fields) in (3, 4):
            name, scopes_text, hex_digest = fields[:3]
            if not NAME_RE.match(name):
                parsed.warnings.append(f"{where}: bad token name (letters, digits, '.', "
                                       "'_', '-'; at most 64); refused")
                continue
            try:
                scopes = parse_scopes(scopes_text)
            except ValueError as exc:
                parsed.warnings.append(f"{where}: {exc}; refused")
                continue
            if not _HEX_RE.match(hex_digest):
                parsed.warnings.append(f"{where}: the third field must be the token's "
                                       "SHA-256 in 64 lowercase hex digits; refused")
                continue
            entry = TokenEntry(name, scopes, bytes.fromhex(hex_digest),
                               fields[3] if len(fields) == 4 else "", number)
        else:
            parsed.warnings.append(f"{where}: expected NAME SCOPES SHA256-HEX [CREATED] or "
                                   "one plain token; refused")
            continue
        if entry.name in names:
            parsed.warnings.append(f"{where}: token name {entry.name!r} used twice; refused")
            continue
        if entry.digest in digests:
            parsed.warnings.append(f"{where}: the same token as an earlier line; refused")
            continue
        names.add(entry.name)
        digests.add(entry.digest)
        parsed.entries.append(entry)
    if parsed.legacy_lines:
        lines = ", ".join(str(n) for n in parsed.legacy_lines)
        parsed.warnings.append(
            f"{path} holds plain tokens (line {lines}): loaded with scopes pos,read; "
            "`storebox token add` or `revoke` rewrites the file with hashes only")
    return parsed


# --------------------------------------------------------------------------- the file


def daemon_uid(state_dir: str | None = None) -> int:
    """The daemon's user as seen from here: the owner of `state_dir` when it exists (systemd's
    StateDirectory= gives it to the service's user), else whoever runs this."""
    if state_dir:
        with contextlib.suppress(OSError):
            return os.stat(state_dir).st_uid
    return os.geteuid()


def read_tokens_file(path: str, owner_uid: int | None = None) -> tuple[str | None, str | None]:
    """(text, None), or (None, why the file is refused). The file must be a regular file
    (symlinks are not followed), not accessible to group or others, owned by `owner_uid`
    (default: this process's user, i.e. the daemon's)."""
    what = "the POS tokens file"
    if not path:
        return None, f"no file named for {what}"
    uid = os.geteuid() if owner_uid is None else owner_uid
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        return None, f"{what} {path!r} does not exist"
    except OSError as exc:
        if os.path.islink(path):
            return None, (f"{what} {path!r} is a symlink; the box does not follow "
                          "symlinks: refused")
        return None, f"cannot read {what} {path!r}: {exc.strerror or exc}"
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, f"{what} {path!r} is not a regular file: refused"
        if st.st_mode & 0o077:
            return None, (f"{what} {path!r} may be read by group or others (mode "
                          f"{stat.S_IMODE(st.st_mode):04o}): refused; make it 0600")
        if st.st_uid != uid:
            return None, (f"{what} {path!r} is owned by uid {st.st_uid}, not by the "
                          f"daemon's user (uid {uid}): refused; chown it")
        if st.st_size > MAX_FILE_BYTES:
            return None, f"{what} {path!r} is larger than {MAX_FILE_BYTES} bytes: refused"
        data = os.read(fd, MAX_FILE_BYTES + 1)
    except OSError as exc:
        return None, f"cannot read {what} {path!r}: {exc.strerror or exc}"
    finally:
        os.close(fd)
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        return None, f"{what} {path!r} is not UTF-8 text: refused"


def tokens_file_problems(path: str, owner_uid: int | None = None) -> list[str]:
    """For `storebox config check` (`firmware.config.files`): why the daemon would refuse the
    whole file (missing, unreadable, not a regular file, mode beyond 0600, wrong owner).
    Refused single lines are warnings the daemon logs, not problems."""
    problem = read_tokens_file(path, owner_uid)[1]
    return [problem] if problem else []


class TokenStore:
    """The accepted tokens (digests only); `reload()` re-reads the file (SIGHUP)."""

    def __init__(self, path: str, owner_uid: int | None = None) -> None:
        self.path = path
        self.owner_uid = owner_uid
        #: Why the whole file is refused, or None.
        self.problem: str | None = None
        self.warnings: list[str] = []
        #: Called after every reload with `problem` (the API turns it into a fault event).
        self.on_reload: Callable[[str | None], None] | None = None
        self._by_digest: dict[bytes, TokenEntry] = {}
        self.reload()

    def reload(self) -> int:
        text, self.problem = read_tokens_file(self.path, self.owner_uid)
        if text is None:
            log.error("%s; every API request over TCP will get 401", self.problem)
            self._by_digest = {}
            self.warnings = []
        else:
            parsed = parse_tokens(text, repr(self.path))
            for warning in parsed.warnings:
                log.warning("%s", warning)
            self.warnings = parsed.warnings
            self._by_digest = {e.digest: e for e in parsed.entries}
            if not self._by_digest:
                log.error("tokens_file %r holds no usable token; every API request over TCP "
                          "will get 401", self.path)
        if self.on_reload is not None:
            self.on_reload(self.problem)
        return len(self._by_digest)

    def __len__(self) -> int:
        return len(self._by_digest)

    def entries(self) -> list[TokenEntry]:
        return sorted(self._by_digest.values(), key=lambda e: e.line)

    def authenticate(self, presented: str) -> TokenEntry | None:
        """The entry whose token is `presented`, else None. Looked up by digest, confirmed
        with `hmac.compare_digest` (a dummy digest when none matched, so both paths do the
        same work)."""
        digest = digest_of(presented)
        entry = self._by_digest.get(digest)
        matched = hmac.compare_digest(digest, entry.digest if entry else _DUMMY_DIGEST)
        return entry if matched and entry is not None else None

    def check(self, presented: str) -> bool:
        """True when `presented` is one of the tokens (any scope)."""
        return self.authenticate(presented) is not None


# --------------------------------------------------------------------------- writing (CLI)


def new_token() -> str:
    """A fresh token: 192 random bits, URL-safe base64 (32 characters)."""
    import secrets

    return secrets.token_urlsafe(TOKEN_BYTES)


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@contextlib.contextmanager
def locked_dir(path: str) -> Iterator[None]:
    """An exclusive flock on the file's directory while a `storebox token` command
    reads, changes and rewrites the file (two at once would lose one's change)."""
    fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def write_tokens_file(path: str, entries: Iterable[TokenEntry],
                      owner: tuple[int, int] | None = None) -> None:
    """Replace the file atomically: a 0600 temporary file in the same directory, written and
    fsync'd, chowned to `owner` (uid, gid) when given, renamed over `path`, directory
    fsync'd. A reader sees the old file or the new one, never half of one."""
    target = os.path.abspath(path)
    directory = os.path.dirname(target)
    body = "".join(f"{e.line_text()}\n" for e in entries)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", dir=directory)
    try:
        os.fchmod(fd, 0o600)
        if owner is not None and (os.fstat(fd).st_uid, os.fstat(fd).st_gid) != owner:
            os.fchown(fd, *owner)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(f"{HEADER}\n{body}")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def file_owner(path: str, default_uid: int) -> tuple[int, int] | None:
    """Who a rewritten file should belong to: its present owner, else `default_uid` (with
    that user's primary group when root can tell it); None to leave it to the writer."""
    try:
        st = os.stat(path)
        return st.st_uid, st.st_gid
    except OSError:
        pass
    if default_uid == os.geteuid():
        return None
    try:
        import pwd

        return default_uid, pwd.getpwuid(default_uid).pw_gid
    except (KeyError, ImportError):
        return default_uid, os.getegid()


def load_for_edit(path: str) -> ParsedTokens:
    """The file as `storebox token` sees it: read whatever its mode (the rewrite fixes it);
    a missing file is an empty one."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    return parse_tokens(text, repr(path))
