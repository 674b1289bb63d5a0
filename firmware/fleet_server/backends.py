"""Where the fleet server keeps its tables: a SQLite file (one machine, the default) or
PostgreSQL (`database = "postgresql://..."`: several ingest workers, thousands of boxes).

Both speak the same small interface and the same SQL: statements are written once with
`?` placeholders and `INSERT ... ON CONFLICT` (SQLite ≥ 3.24 and PostgreSQL share that
syntax); the PostgreSQL backend turns `?` into psycopg's `%s`. Schema changes are
recorded migrations (`migrations`), each applied in one transaction with its row,
so two workers starting together apply each exactly once (PostgreSQL: under an advisory
lock).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Protocol

from firmware.fleet_server.config import FleetServerConfigError

#: A migration: its name and its DDL statements (portable SQL).
Migration = tuple[str, Sequence[str]]
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
#: pg_advisory_xact_lock key serialising migrations between workers ("sbxfleet").
_MIGRATION_LOCK = 0x736278666C656574
#: pg_try_advisory_lock key of the leading worker ("sbxlead").
_LEADER_LOCK = 0x736278_6C656164


class Backend(Protocol):
    kind: str

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    def transaction(self) -> Any: ...

    def lock_migrations(self) -> None: ...

    def try_lead(self) -> bool: ...

    def close(self) -> None: ...


def is_postgres(database: str) -> bool:
    return database.startswith(POSTGRES_SCHEMES)


def open_backend(database: str) -> Backend:
    """The backend `database` names: a PostgreSQL DSN or a SQLite file path."""
    if is_postgres(database):
        return PostgresBackend(database)
    return SqliteBackend(database)


class SqliteBackend:
    kind = "sqlite"

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute("PRAGMA busy_timeout=5000")

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, tuple(params)).fetchall()

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self.conn.executemany(sql, rows)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def lock_migrations(self) -> None:
        """BEGIN IMMEDIATE already holds the file's write lock."""

    def try_lead(self) -> bool:
        """A SQLite file has one writer process: it always leads."""
        return True

    def close(self) -> None:
        self.conn.close()


class PostgresBackend:
    kind = "postgresql"

    def __init__(self, dsn: str) -> None:
        try:
            import psycopg  # the optional `fleet` extra: boxes never need it
        except ImportError as exc:
            raise FleetServerConfigError(
                [f"fleet_server.database: {_redact(dsn)!r} needs psycopg "
                 "(pip install 'storebox[fleet]')"]) from exc
        try:
            self.conn = psycopg.connect(dsn, autocommit=True)
        except psycopg.Error as exc:
            raise FleetServerConfigError(
                [f"fleet_server.database: cannot connect to {_redact(dsn)!r}: {exc}"]) from exc

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        cursor = self.conn.execute(_placeholders(sql), tuple(params))
        return list(cursor.fetchall()) if cursor.description else []

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            with self.conn.cursor() as cursor:
                cursor.executemany(_placeholders(sql), rows)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self.conn.transaction():
            yield

    def lock_migrations(self) -> None:
        self.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK,))

    def try_lead(self) -> bool:
        """Whether this worker leads: holds the session advisory lock that one worker at a
        time holds (released by PostgreSQL when that worker's connection ends)."""
        ((held,),) = self.execute("SELECT pg_try_advisory_lock(?)", (_LEADER_LOCK,))
        return bool(held)

    def close(self) -> None:
        self.conn.close()


def migrate(backend: Backend, migrations: Sequence[Migration]) -> list[str]:
    """Apply the migrations not yet recorded, in order; the names applied now."""
    backend.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, "
                    "applied_at BIGINT NOT NULL)")
    applied = []
    for name, statements in migrations:
        with backend.transaction():
            backend.lock_migrations()
            if backend.execute("SELECT 1 FROM migrations WHERE name = ?", (name,)):
                continue
            for statement in statements:
                backend.execute(statement)
            backend.execute("INSERT INTO migrations (name, applied_at) VALUES (?, ?)",
                            (name, int(time.time() * 1000)))
        applied.append(name)
    return applied


def _placeholders(sql: str) -> str:
    """`?` → `%s` (our statements never hold a literal `?` or `%`)."""
    return sql.replace("%", "%%").replace("?", "%s")


def _redact(dsn: str) -> str:
    """The DSN without its password."""
    scheme, sep, rest = dsn.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if not at or ":" not in userinfo:
        return dsn
    return f"{scheme}{sep}{userinfo.partition(':')[0]}:***@{host}"
