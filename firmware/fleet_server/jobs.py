"""Command jobs: one command to many boxes (`storebox fleet cmd`, `POST /api/jobs`).

A job selects its boxes by `where` (the filters of `GET /api/boxes`), signs one command per
box with the operator's key (each bound to its box, valid for a bounded time), publishes
`storebox/<id>/cmd/<name>` at QoS 1 at most `rate` per second, and waits for each box's
`cmd_result` (the command's id is the job's id). Each box ends with one outcome:

- `ok`: answered `"ok": true`;
- `refused`: answered an error the box chose (bad signature, unknown command, ...);
- `error`: answered that the command failed while running (`failed`, `internal`);
- `no_answer`: no answer within `timeout_s` of its send;
- `offline`: not online when its turn came: not sent (its broker session is clean, it
  would never get it);
- `not_sent`: the job was aborted before its turn.

Failures are `refused`, `error` and `no_answer`. Once at least `min_sample` boxes have
an outcome, a job whose failures exceed `abort_after_failures_pct` percent of them stops
sending (`aborted`) and waits for the answers already due. Everything is recorded in the
database (the job and each box's result) and in the audit log.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from firmware.fleet_server.signing import MAX_VALID, OperatorKey
from firmware.fleet_server.where import parse_where

OUTCOMES = ("ok", "refused", "error", "no_answer", "offline", "not_sent")
FAILURES = frozenset({"refused", "error", "no_answer"})
#: Box error codes that mean the command ran and failed (the rest: the box refused it).
ERROR_CODES = frozenset({"failed", "internal"})
MAX_RATE = 10_000.0
DEFAULT_RATE = 100.0
DEFAULT_MIN_SAMPLE = 10
#: The command's validity beyond its answer timeout, for the boxes' clock skew.
VALID_MARGIN = timedelta(minutes=5)
#: How often a running job's new results are written to the database.
SAVE_EVERY_S = 1.0
#: Commands published and not yet acknowledged by the broker (QoS 1), per runner: the
#: rate is not bounded by one broker round trip per box (10,000 boxes at 200/s took 72 s
#: one after the other, BENCHMARKS.md "Fleet").
MAX_IN_FLIGHT = 64

Select = Callable[[list[tuple[str, str]]], list[dict[str, Any]]]


@dataclass(frozen=True)
class JobSpec:
    name: str
    args: dict[str, Any]
    where: list[tuple[str, str]]
    rate: float = DEFAULT_RATE
    abort_after_failures_pct: float | None = None
    min_sample: int = DEFAULT_MIN_SAMPLE
    timeout_s: float = 30.0
    actor: str = "unknown"


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 64 or \
            any(c in value for c in "/+#\0"):
        raise ValueError(f"name: a command name (1-64 characters, no / + #), got {value!r}")
    return value


def _where(value: Any) -> list[tuple[str, str]]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"where: a list of \"KEY=VALUE\" strings, got {value!r}")
    try:
        return parse_where(value)
    except ValueError as exc:
        raise ValueError(f"where: {exc}") from None


def _number(body: dict[str, Any], key: str, default: float | None, low: float,
            high: float) -> float | None:
    value = body.get(key, default)
    if value is None:
        return None
    if not isinstance(value, int | float) or isinstance(value, bool) or \
            not low <= value <= high:
        raise ValueError(f"{key}: a number from {low:g} to {high:g}, got {value!r}")
    return float(value)


def parse_spec(body: Any, timeout_s: float) -> JobSpec:
    """The job a `POST /api/jobs` body asks for; ValueError naming the bad field."""
    if not isinstance(body, dict):
        raise ValueError(f"the body must be a JSON object, got {body!r}")
    known = {"name", "args", "where", "rate", "abort_after_failures_pct", "min_sample",
             "timeout_s", "operator"}
    for key in body:
        if key not in known:
            raise ValueError(f"{key}: unknown field (fields: {', '.join(sorted(known))})")
    args = body.get("args", {})
    if not isinstance(args, dict):
        raise ValueError(f"args: a JSON object, got {args!r}")
    actor = body.get("operator", "unknown")
    if not isinstance(actor, str) or not actor or len(actor) > 200:
        raise ValueError(f"operator: who asks (1-200 characters), got {actor!r}")
    min_sample = _number(body, "min_sample", DEFAULT_MIN_SAMPLE, 1, 1_000_000)
    return JobSpec(
        _name(body.get("name")), args, _where(body.get("where", [])),
        rate=_number(body, "rate", DEFAULT_RATE, 0.01, MAX_RATE) or DEFAULT_RATE,
        abort_after_failures_pct=_number(body, "abort_after_failures_pct", None, 0, 100),
        min_sample=int(min_sample or DEFAULT_MIN_SAMPLE),
        timeout_s=_number(body, "timeout_s", timeout_s, 0.1, 3000) or timeout_s,
        actor=actor)


def outcome_of(answer: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """(outcome, error code, message) of a box's `cmd_result`."""
    if answer.get("ok") is True:
        return "ok", None, None
    raw = answer.get("error")
    error = raw if isinstance(raw, dict) else {}
    code = str(error.get("code") or "unknown")
    message = str(error.get("message") or "")[:500]
    return ("error" if code in ERROR_CODES else "refused"), code, message


@dataclass
class Job:
    spec: JobSpec
    id: str
    created_at: datetime
    #: The boxes selected, in send order.
    devices: list[str]
    signed: bool
    status: str = "running"
    reason: str | None = None
    ended_at: datetime | None = None
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Sent, not yet answered: device -> monotonic deadline.
    waiting: dict[str, float] = field(default_factory=dict)
    #: Results not yet written to the database.
    dirty: set[str] = field(default_factory=set)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    sent: int = 0
    #: How many results have each outcome (kept as they change: a job may be 10,000 boxes).
    tally: Counter[str] = field(default_factory=Counter)
    #: Publishes not yet acknowledged by the broker, and the first that failed.
    deliveries: set[asyncio.Task[None]] = field(default_factory=set)
    publish_error: BaseException | None = None

    def record(self, device: str, outcome: str, **fields: Any) -> None:
        row = self.results.get(device)
        if row is None:
            row = self.results[device] = {"device_id": device, "command_id": self.id}
        else:
            self.tally[row["outcome"]] -= 1
        row.update(fields, outcome=outcome)
        self.tally[outcome] += 1
        self.dirty.add(device)
        self.changed.set()

    @property
    def counts(self) -> dict[str, int]:
        return {o: self.tally[o] for o in OUTCOMES} | {"sent": self.sent,
                                                       "waiting": len(self.waiting)}

    @property
    def failure_share(self) -> tuple[int, int]:
        """(failures, boxes with an outcome among ok and the failures)."""
        failures = sum(self.tally[o] for o in FAILURES)
        return failures, failures + self.tally["ok"]

    def should_abort(self) -> bool:
        pct = self.spec.abort_after_failures_pct
        if pct is None:
            return False
        failures, done = self.failure_share
        return done >= self.spec.min_sample and failures * 100.0 > pct * done

    def to_json(self) -> dict[str, Any]:
        spec = self.spec
        return {"id": self.id, "name": spec.name, "args": spec.args,
                "where": [f"{k}={v}" for k, v in spec.where], "rate": spec.rate,
                "abort_after_failures_pct": spec.abort_after_failures_pct,
                "min_sample": spec.min_sample, "timeout_s": spec.timeout_s,
                "signed": self.signed, "actor": spec.actor,
                "created_at": self.created_at.isoformat(),
                "ended_at": self.ended_at.isoformat() if self.ended_at else None,
                "status": self.status, "reason": self.reason, "targets": len(self.devices),
                "counts": self.counts}


class JobRunner:
    """Runs jobs: paces the sends, matches the answers, times out, aborts, records."""

    def __init__(self, publish: Callable[[str, bytes], Awaitable[None]],
                 key: OperatorKey | None, save: Callable[[Job], None], *,
                 wall: Callable[[], datetime],
                 monotonic: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.publish = publish
        self.key = key
        self.save = save
        self.wall = wall
        self.monotonic = monotonic
        self.sleep = sleep
        self.jobs: dict[str, Job] = {}
        self._in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)

    def answer(self, device: str, doc: dict[str, Any]) -> None:
        """A box's `cmd_result`: the outcome of its job's command, if it waits for one."""
        job = self.jobs.get(str(doc.get("id")))
        if job is None or device not in job.waiting:
            return
        del job.waiting[device]
        outcome, code, message = outcome_of(doc)
        result = doc.get("result") if outcome == "ok" else None
        job.record(device, outcome, answered_at=self.wall().isoformat(), code=code,
                   message=message, result=result)

    async def run(self, job: Job, online: Callable[[str], bool]) -> None:
        """Send, wait, finish: the whole life of `job`."""
        self.jobs[job.id] = job
        saver = asyncio.create_task(self._save_often(job))
        try:
            await self._send_all(job, online)
            await self._delivered(job)
            await self._wait_answers(job)
        except Exception as exc:  # the broker went away for good: what was sent stands
            await self._delivered(job, check=False)
            job.status, job.reason = "failed", f"{type(exc).__name__}: {exc}"
            for device in job.devices:
                if device not in job.results:
                    job.record(device, "not_sent")
            await self._wait_answers(job)
        finally:
            saver.cancel()
            for task in list(job.deliveries):  # stopped: the server is going away
                task.cancel()
            self._finish(job)

    async def _send_all(self, job: Job, online: Callable[[str], bool]) -> None:
        start = self.monotonic()
        for n, device in enumerate(job.devices):
            if job.should_abort():
                failures, done = job.failure_share
                job.status = "aborted"
                job.reason = (f"{failures} of {done} boxes failed, more than "
                              f"{job.spec.abort_after_failures_pct:g}%")
                for rest in job.devices[n:]:
                    job.record(rest, "not_sent")
                return
            self._expire(job)
            delay = start + n / job.spec.rate - self.monotonic()
            if delay > 0:
                await self.sleep(delay)
            if not online(device):
                job.record(device, "offline")
                continue
            if job.publish_error is not None:
                raise job.publish_error
            await self._send(job, device)

    async def _send(self, job: Job, device: str) -> None:
        now = self.wall()
        args = job.spec.args
        if self.key is not None:
            valid = min(MAX_VALID, timedelta(seconds=job.spec.timeout_s) + VALID_MARGIN)
            doc = self.key.sign_command(device, job.spec.name, job.id, args, now + valid)
        else:
            doc = {"id": job.id, "args": args}
        job.waiting[device] = self.monotonic() + job.spec.timeout_s
        job.record(device, "waiting", sent_at=now.isoformat())
        job.sent += 1
        await self._in_flight.acquire()
        task = asyncio.create_task(self._deliver(
            job, device, f"storebox/{device}/cmd/{job.spec.name}",
            json.dumps(doc, separators=(",", ":")).encode()))
        job.deliveries.add(task)
        task.add_done_callback(job.deliveries.discard)

    async def _deliver(self, job: Job, device: str, topic: str, payload: bytes) -> None:
        """Publish one command; a failure makes it `not_sent` and stops the job's sends."""
        try:
            await self.publish(topic, payload)
        except Exception as exc:
            job.waiting.pop(device, None)
            job.record(device, "not_sent")
            job.sent -= 1
            if job.publish_error is None:
                job.publish_error = exc
        finally:
            self._in_flight.release()

    async def _delivered(self, job: Job, check: bool = True) -> None:
        """Wait for the publishes in flight; raise the first failure (`check`)."""
        while job.deliveries:
            await asyncio.gather(*job.deliveries, return_exceptions=True)
        if check and job.publish_error is not None:
            raise job.publish_error

    def _expire(self, job: Job) -> None:
        now = self.monotonic()
        for device, deadline in list(job.waiting.items()):
            if deadline <= now:
                del job.waiting[device]
                job.record(device, "no_answer", message=f"no cmd_result within "
                                                        f"{job.spec.timeout_s:g}s")

    async def _wait_answers(self, job: Job) -> None:
        while job.waiting:
            self._expire(job)
            if not job.waiting:
                return
            job.changed.clear()
            rest = min(job.waiting.values()) - self.monotonic()
            try:
                async with asyncio.timeout(max(rest, 0.0) + 0.01):
                    await job.changed.wait()
            except TimeoutError:
                pass

    async def _save_often(self, job: Job) -> None:
        while True:
            await asyncio.sleep(SAVE_EVERY_S)
            self.save(job)

    def _finish(self, job: Job) -> None:
        if job.status == "running":
            job.status = "done"
        job.ended_at = self.wall()
        job.changed.set()
        self.save(job)
