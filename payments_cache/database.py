"""The store's SQLite database: the file, the connection's guarantees, transactions.

Durability: WAL journal with ``synchronous=FULL`` (every commit is fsync'd before the
method returns), ``secure_delete=ON`` (erased card data is overwritten, not just
unlinked), ``foreign_keys=ON``. Every change is one ``BEGIN IMMEDIATE`` transaction;
any SQLite storage error (disk full, I/O error, locked) rolls it back and raises
`StorageUnavailable`, so nothing is ever half-written and the same `Store` works again
once the cause is gone. After card data is erased the WAL is checkpointed and truncated
so no old page image holding a ciphertext stays behind.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from payments_cache.crypto import fsync_dir
from payments_cache.errors import StorageUnavailable
from payments_cache.migrations import Migration, applied_migrations
from payments_cache.wall_frame import WallFrame

log = logging.getLogger(__name__)

DB_NAME = "payments.sqlite3"


class Database:
    """One SQLite connection (used from the thread that opened it) and its transactions.

    `wall` stamps rows (milliseconds since the epoch); `monotonic` paces the WAL scrub.
    With a `frame`, every write transaction first follows a step of the wall clock
    (`on_wall_step(conn, step_ms)` moves what the step must move)."""

    def __init__(self, conn: sqlite3.Connection, *, wall: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic,
                 scrub_interval_s: float = 0.0, frame: WallFrame | None = None,
                 on_wall_step: Callable[[sqlite3.Connection, int], None] | None = None
                 ) -> None:
        self.conn = conn
        self._wall = wall
        self._monotonic = monotonic
        self._frame = frame
        self._on_wall_step = on_wall_step
        self._scrub_interval_s = scrub_interval_s
        self._scrubbed_at = float("-inf")
        self._scrub_pending = False

    def close(self) -> None:
        with self.guard("close the store"):
            self.flush_erasures()
            self.conn.close()

    @contextlib.contextmanager
    def guard(self, operation: str) -> Iterator[None]:
        """Map SQLite storage failures to `StorageUnavailable`; programming errors pass."""
        try:
            yield
        except (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError):
            raise
        except sqlite3.DatabaseError as exc:
            raise StorageUnavailable(operation, storage_reason(exc)) from exc

    @contextlib.contextmanager
    def tx(self, operation: str, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed (and fsync'd) on exit, rolled back on error.

        ``durable=False`` is for changes whose loss in a power cut is harmless because
        they are redone identically (a forward result: the gateway replays it under the
        same Idempotency-Key): the commit is atomic and survives a crash of the process,
        but is fsync'd with the next durable commit or checkpoint instead of at once.
        """
        with self.guard(operation):
            if not durable:
                self.conn.execute("PRAGMA synchronous = NORMAL")
            try:
                self.conn.execute("BEGIN IMMEDIATE")
                try:
                    self._follow_wall()
                    yield self.conn
                    self.conn.execute("COMMIT")
                except BaseException:
                    self._rollback()
                    raise
            finally:
                if not durable:
                    self.conn.execute("PRAGMA synchronous = FULL")

    def _follow_wall(self) -> None:
        if self._frame is None or not self._frame.pending():
            return
        step = self._frame.follow(self.conn)
        if step and self._on_wall_step is not None:
            self._on_wall_step(self.conn, step)

    def follow_wall(self) -> None:
        """Follow a step of the wall clock now (before a read that compares stored times),
        in a transaction of its own; nothing is done when the clock was not set."""
        if self._frame is not None and self._frame.pending():
            with self.tx("follow the wall clock", durable=False):
                pass

    def _rollback(self) -> None:
        if self.conn.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:
                log.exception("rollback failed")

    def scrub(self) -> None:
        """Checkpoint and truncate the WAL so erased ciphertexts leave no old page image.

        With `scrub_interval_s` > 0 this happens at most that often (the forwarder
        erases hundreds of cards a second); `flush_erasures()` finishes a pending one."""
        now = self._monotonic()
        if self._scrub_interval_s and now - self._scrubbed_at < self._scrub_interval_s:
            self._scrub_pending = True
            return
        self._scrubbed_at = now
        self._scrub_pending = False
        try:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error as exc:
            log.warning("WAL checkpoint after erasing card data failed: %s", exc)

    def flush_erasures(self) -> None:
        """Run a scrub that `scrub_interval_s` postponed, if any."""
        if self._scrub_pending:
            self._scrubbed_at = float("-inf")
            self.scrub()

    def now_ms(self) -> int:
        return int(self._wall() * 1000)


def storage_reason(exc: sqlite3.Error) -> str:
    name = getattr(exc, "sqlite_errorname", None)
    return f"{name}: {exc}" if name else str(exc)


def open_connection(directory: Path) -> sqlite3.Connection:
    """The connection to the database in `directory`, created if needed."""
    return _connect(_prepare_db_file(directory))


# --- opening the database --------------------------------------------------------------


def _prepare_db_file(directory: Path) -> Path:
    """The database file, created 0600 inside a 0700 directory (WAL/SHM inherit 0600)."""
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = directory / DB_NAME
        created = not path.exists()
        os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
        os.chmod(path, 0o600)
        if created:
            fsync_dir(directory)
    except OSError as exc:
        raise StorageUnavailable("create the database", str(exc)) from exc
    return path


def _connect(path: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
    except sqlite3.Error as exc:
        raise StorageUnavailable("open the database", storage_reason(exc)) from exc
    conn.row_factory = sqlite3.Row
    try:
        _configure(conn)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise StorageUnavailable("open the database", storage_reason(exc)) from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _configure(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA busy_timeout = 5000")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        raise sqlite3.OperationalError(f"journal_mode is {mode!r}, WAL is required")
    for pragma in ("synchronous = FULL", "secure_delete = ON", "foreign_keys = ON",
                   "trusted_schema = OFF"):
        conn.execute(f"PRAGMA {pragma}")
    checks = {"synchronous": 2, "secure_delete": 1, "foreign_keys": 1}
    for name, expected in checks.items():
        if conn.execute(f"PRAGMA {name}").fetchone()[0] != expected:
            raise sqlite3.OperationalError(f"PRAGMA {name} could not be set")


def snapshot_before_migrating(conn: sqlite3.Connection, directory: Path,
                              migrations: Sequence[Migration]) -> Path | None:
    """Before a database made by earlier firmware is migrated, a copy of it as it was
    (``VACUUM INTO``, 0600): an A/B update that is rolled back restores it, since the
    earlier firmware refuses migrations it does not know. None when nothing is pending
    or the database is new."""
    done = applied_migrations(conn)
    pending = [m.name for m in migrations if m.name not in done]
    if not done or not pending:
        return None
    target = directory / f"{DB_NAME}.before-{pending[0]}"
    if target.exists():
        return target
    partial = target.with_name(target.name + ".partial")
    partial.unlink(missing_ok=True)  # a copy cut short by a crash
    old_umask = os.umask(0o077)  # VACUUM INTO creates the file: 0600 from the start
    try:
        conn.execute("VACUUM INTO ?", (str(partial),))
    finally:
        os.umask(old_umask)
    os.chmod(partial, 0o600)
    os.replace(partial, target)
    fsync_dir(directory)
    log.warning("database snapshot before migrating to %s: %s", pending[-1], target)
    return target


def holds_wrapped_keys(path: Path) -> bool:
    """Whether the database at `path` (if any) holds a wrapped key; read-only, so a
    KEK problem is found before the database is created or changed."""
    if not path.exists():
        return False
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise StorageUnavailable("open the database", storage_reason(exc)) from exc
    try:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        return "keys" in tables and conn.execute(
            "SELECT 1 FROM keys WHERE wrapped IS NOT NULL LIMIT 1").fetchone() is not None
    except sqlite3.DatabaseError as exc:
        raise StorageUnavailable("open the database", storage_reason(exc)) from exc
    finally:
        conn.close()

