"""The tables of fleet operations: command jobs and each box's result, desired-config
documents, and the audit log (who did what, when). Same portable SQL as `db.py`
(SQLite and PostgreSQL), migrations `0003_jobs` and `0004_config_refusals` (each box's
latest refusal of a desired-config version, so that `fleet config status` shows it after
a restart of the server: a box answers each version once and is not asked again).

The audit log is append-only: this module only ever INSERTs into it, and it has no
key a caller could update by.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from firmware.fleet_server.backends import Backend, Migration

MIGRATION: Migration = ("0003_jobs", [
    """CREATE TABLE jobs (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, args TEXT NOT NULL, selector TEXT NOT NULL,
        rate DOUBLE PRECISION NOT NULL, abort_after_failures_pct DOUBLE PRECISION,
        min_sample INTEGER NOT NULL, timeout_s DOUBLE PRECISION NOT NULL, signed INTEGER,
        actor TEXT NOT NULL, created_at TEXT NOT NULL, ended_at TEXT, status TEXT NOT NULL,
        reason TEXT, targets INTEGER NOT NULL, counts TEXT NOT NULL)""",
    """CREATE TABLE job_results (
        job_id TEXT NOT NULL, device_id TEXT NOT NULL, command_id TEXT NOT NULL,
        sent_at TEXT, answered_at TEXT, outcome TEXT NOT NULL, code TEXT, message TEXT,
        result TEXT, PRIMARY KEY (job_id, device_id))""",
    """CREATE TABLE audit_log (
        id TEXT PRIMARY KEY, at TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
        subject TEXT, detail TEXT NOT NULL)""",
    "CREATE INDEX audit_log_at ON audit_log (at)",
    """CREATE TABLE desired_config (
        version INTEGER PRIMARY KEY, issued_at TEXT NOT NULL, actor TEXT NOT NULL,
        doc TEXT NOT NULL)"""])

REFUSALS_MIGRATION: Migration = ("0004_config_refusals", [
    """CREATE TABLE config_refusals (
        device_id TEXT PRIMARY KEY, version INTEGER, code TEXT, message TEXT,
        field TEXT, at TEXT NOT NULL)"""])
_REFUSAL_COLUMNS = ("device_id", "version", "code", "message", "field", "at")
_SELECT_REFUSALS = "SELECT device_id, version, code, message, field, at FROM config_refusals"
_UPSERT_REFUSAL = (
    "INSERT INTO config_refusals VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (device_id) "
    "DO UPDATE SET version = excluded.version, code = excluded.code, "
    "message = excluded.message, field = excluded.field, at = excluded.at")

#: The columns of `jobs`, in the order `_job` reads them.
_SELECT_JOBS = (
    "SELECT id, name, args, selector, rate, abort_after_failures_pct, min_sample, timeout_s, "
    "signed, actor, created_at, ended_at, status, reason, targets, counts FROM jobs")
_UPSERT_JOB = (
    "INSERT INTO jobs (id, name, args, selector, rate, abort_after_failures_pct, min_sample, "
    "timeout_s, signed, actor, created_at, ended_at, status, reason, targets, counts) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (id) DO UPDATE SET ended_at = excluded.ended_at, status = excluded.status, "
    "reason = excluded.reason, targets = excluded.targets, counts = excluded.counts")
_UPSERT_RESULT = (
    "INSERT INTO job_results VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (job_id, device_id) DO UPDATE SET sent_at = excluded.sent_at, "
    "answered_at = excluded.answered_at, outcome = excluded.outcome, code = excluded.code, "
    "message = excluded.message, result = excluded.result")


def new_id(prefix: str) -> str:
    """A short random id: unique across workers without a shared sequence."""
    return f"{prefix}{secrets.token_hex(6)}"


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


class OperationsStore:
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    # ------------------------------------------------------------------ jobs

    def save_job(self, job: dict[str, Any], results: Sequence[dict[str, Any]] = ()) -> None:
        """The job's row and the given per-box results, in one transaction."""
        row = (job["id"], job["name"], _json(job["args"]), _json(job["where"]), job["rate"],
               job["abort_after_failures_pct"], job["min_sample"], job["timeout_s"],
               int(job["signed"]), job["actor"], job["created_at"], job["ended_at"],
               job["status"], job["reason"], job["targets"], _json(job["counts"]))
        with self.backend.transaction():
            self.backend.execute(_UPSERT_JOB, row)
            self.backend.executemany(_UPSERT_RESULT, [_result_row(job["id"], r)
                                                      for r in results])

    def jobs(self, limit: int = 100) -> list[dict[str, Any]]:
        rows = self.backend.execute(_SELECT_JOBS + " ORDER BY created_at DESC, id LIMIT ?",
                                    (limit,))
        return [_job(row) for row in rows]

    def job(self, job_id: str) -> dict[str, Any] | None:
        rows = self.backend.execute(_SELECT_JOBS + " WHERE id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    def results(self, job_id: str) -> list[dict[str, Any]]:
        rows = self.backend.execute(
            "SELECT device_id, command_id, sent_at, answered_at, outcome, code, message, "
            "result FROM job_results WHERE job_id = ? ORDER BY device_id", (job_id,))
        return [{"device_id": d, "command_id": c, "sent_at": s, "answered_at": a,
                 "outcome": o, "code": code, "message": m,
                 "result": json.loads(r) if r else None}
                for d, c, s, a, o, code, m, r in rows]

    # ------------------------------------------------------------------ desired config

    def add_config(self, doc: dict[str, Any], actor: str) -> None:
        self.backend.execute("INSERT INTO desired_config VALUES (?, ?, ?, ?)",
                             (doc["version"], doc["issued_at"], actor, _json(doc)))

    def latest_config(self) -> dict[str, Any] | None:
        rows = self.backend.execute("SELECT doc, actor FROM desired_config "
                                    "ORDER BY version DESC LIMIT 1")
        if not rows:
            return None
        doc, actor = rows[0]
        return {**json.loads(doc), "actor": actor}

    def save_refusals(self, refused: Sequence[dict[str, Any]],
                      accepted: Sequence[str]) -> None:
        """Each box's latest refusal (`refused`: rows of `_REFUSAL_COLUMNS`), and no row
        for the boxes that applied a version since (`accepted`), in one transaction."""
        with self.backend.transaction():
            self.backend.executemany(_UPSERT_REFUSAL, [
                tuple(r.get(c) for c in _REFUSAL_COLUMNS) for r in refused])
            self.backend.executemany("DELETE FROM config_refusals WHERE device_id = ?",
                                     [(d,) for d in accepted])

    def refusals(self) -> dict[str, dict[str, Any]]:
        """device -> its latest refusal, as `save_refusals` was given it."""
        rows = self.backend.execute(_SELECT_REFUSALS)
        return {row[0]: dict(zip(_REFUSAL_COLUMNS, row, strict=True)) for row in rows}

    # ------------------------------------------------------------------ audit

    def audit(self, at: datetime, actor: str, action: str, subject: str | None,
              detail: dict[str, Any]) -> None:
        """Append one line to the audit log."""
        self.backend.execute("INSERT INTO audit_log VALUES (?, ?, ?, ?, ?, ?)",
                             (new_id("a-"), at.isoformat(), actor, action, subject,
                              _json(detail)))

    def audit_log(self, limit: int = 200) -> list[dict[str, Any]]:
        rows = self.backend.execute("SELECT at, actor, action, subject, detail FROM "
                                    "audit_log ORDER BY at DESC, id LIMIT ?", (limit,))
        return [{"at": at, "actor": actor, "action": action, "subject": subject,
                 "detail": json.loads(detail)} for at, actor, action, subject, detail in rows]


def _result_row(job_id: str, r: dict[str, Any]) -> tuple[Any, ...]:
    result = r.get("result")
    return (job_id, r["device_id"], r["command_id"], r.get("sent_at"), r.get("answered_at"),
            r["outcome"], r.get("code"), r.get("message"),
            _json(result) if result is not None else None)


def _job(row: tuple[Any, ...]) -> dict[str, Any]:
    (ident, name, args, selector, rate, pct, min_sample, timeout_s, signed, actor, created,
     ended, status, reason, targets, counts) = row
    return {"id": ident, "name": name, "args": json.loads(args), "where": json.loads(selector),
            "rate": rate, "abort_after_failures_pct": pct, "min_sample": int(min_sample),
            "timeout_s": timeout_s, "signed": bool(signed), "actor": actor,
            "created_at": created, "ended_at": ended, "status": status, "reason": reason,
            "targets": int(targets), "counts": json.loads(counts)}
