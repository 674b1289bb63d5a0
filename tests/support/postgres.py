"""A real PostgreSQL server (Debian's `postgresql`) for the tests that need one: its own
cluster in a temporary directory, on a free loopback port, run as the `postgres` user
(the server refuses root); a fresh database per test (`create_database`)."""

from __future__ import annotations

import contextlib
import itertools
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.mosquitto import free_port

BINDIR = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)),
              Path("/usr/lib/postgresql/15/bin"))
USER = "fleet"
_names = itertools.count(1)


class PostgresServer:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="sbx-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> PostgresServer:
        shutil.chown(self.dir, "postgres", "postgres")
        self._as_postgres(str(BINDIR / "initdb"), "-D", str(self.data), "-U", USER,
                          "--auth=trust", "-E", "UTF8", "--no-sync")
        log = open(self.dir / "server.log", "wb")  # the server inherits it; closed below
        self.proc = subprocess.Popen(
            ["runuser", "-u", "postgres", "--", str(BINDIR / "postgres"), "-D", str(self.data),
             "-p", str(self.port), "-k", str(self.dir), "-c", "listen_addresses=127.0.0.1"],
            stdout=log, stderr=log)
        log.close()
        self._wait_ready()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()  # SIGTERM: a "smart" shutdown once clients are gone
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new empty database; its DSN."""
        import psycopg

        name = f"fleet_{next(_names)}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")  # name is ours: fleet_<n>
        return self.dsn(name)

    def log(self) -> str:
        return (self.dir / "server.log").read_text(errors="replace")

    def _as_postgres(self, *argv: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *argv], check=True,
                       capture_output=True)

    def _wait_ready(self, within_s: float = 30.0) -> None:
        """Poll `pg_isready` (the server's own readiness check) until it accepts."""
        deadline = time.monotonic() + within_s
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited {self.proc.returncode}:\n{self.log()}")
            ready = subprocess.run([str(BINDIR / "pg_isready"), "-q", "-h", "127.0.0.1",
                                    "-p", str(self.port)], check=False)
            if ready.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"postgres not ready in {within_s}s:\n{self.log()}")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(0.1)
