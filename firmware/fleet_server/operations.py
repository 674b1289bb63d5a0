"""Fleet operations in `fleet serve`: command jobs, the desired config, the audit log,
and their JSON API:

- `POST /api/jobs` `{"name", "args", "where": ["KEY=VALUE", ...], "rate",
  "abort_after_failures_pct", "min_sample", "timeout_s", "operator"}` → 202, the job;
- `GET /api/jobs` (newest first), `GET /api/jobs/<id>[?results=all|failures|none]`;
- `POST /api/config` `{"settings": {"section.key": value}, "operator"}` → the signed
  document; `GET /api/config`: its version and how many boxes converged;
- `GET /api/audit`: the audit log, newest first.

`operator` is who asks, as the caller says (`storebox fleet cmd` sends `user@host`);
the API listens where `fleet_server.listen` says, loopback by default, behind whatever
the operator puts in front of it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import aiomqtt
from aiohttp import web

from firmware.fleet.mqtt_client import cancel_all
from firmware.fleet.topics import DESIRED_CONFIG_RESULT
from firmware.fleet_server.backends import Backend
from firmware.fleet_server.config import FleetServerConfig
from firmware.fleet_server.desired import DesiredConfigs
from firmware.fleet_server.jobs import FAILURES, Job, JobRunner, Select, parse_spec
from firmware.fleet_server.jobs_store import OperationsStore, new_id
from firmware.fleet_server.link import OperationsLink
from firmware.fleet_server.signing import load_operator_key

log = logging.getLogger("storebox.fleet_server")


def _bad(message: str, status: type[web.HTTPException] = web.HTTPBadRequest) -> Exception:
    return status(text=json.dumps({"error": message}), content_type="application/json")


async def _body(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError as exc:
        raise _bad(f"the body is not JSON: {exc}") from exc


class Operations:
    def __init__(self, config: FleetServerConfig, backend: Backend, select: Select,
                 online: Callable[[str], bool], wall: Callable[[], datetime]) -> None:
        self.config = config
        self.store = OperationsStore(backend)
        self.key = load_operator_key(config.command_key_file)
        self.link = OperationsLink(config, self._result)
        self.select = select
        self.online = online
        self.wall = wall
        self.runner = JobRunner(self._publish, self.key, self._save, wall=wall)
        self.desired = DesiredConfigs(self.store, self.key, self.link.publish, select, wall)
        self.tasks: set[asyncio.Task[None]] = set()

    async def _publish(self, topic: str, payload: bytes) -> None:
        await self.link.publish(topic, payload)

    def _result(self, device: str, doc: dict[str, Any]) -> None:
        if doc.get("name") == DESIRED_CONFIG_RESULT:
            self.desired.answer(device, doc)
        else:
            self.runner.answer(device, doc)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/api/jobs", self._create_job)
        app.router.add_get("/api/jobs", self._jobs)
        app.router.add_get("/api/jobs/{id}", self._job)
        app.router.add_post("/api/config", self._push_config)
        app.router.add_get("/api/config", self._config_status)
        app.router.add_get("/api/audit", self._audit)

    async def run(self) -> None:
        await self.link.run()

    def flush(self) -> None:
        """Write what waits for the database (desired-config refusals); with the
        server's batches."""
        self.desired.flush()

    async def stop(self) -> None:
        await cancel_all(self.tasks)  # a job's own clean-up (`JobRunner.run`) never awaits

    # ------------------------------------------------------------------ jobs

    def start_job(self, body: Any) -> Job:
        """Select the boxes, record the job and start it; ValueError for a bad request."""
        spec = parse_spec(body, self.config.command_timeout_s)
        devices = sorted(row["device_id"] for row in self.select(spec.where))
        if not devices:
            raise ValueError(f"where: no box matches "
                             f"{[f'{k}={v}' for k, v in spec.where]}")
        job = Job(spec, new_id("j-"), self.wall(), devices, signed=self.key is not None)
        self.store.save_job(job.to_json())
        self.store.audit(job.created_at, spec.actor, "job_created", job.id,
                         {"name": spec.name, "args": spec.args, "where": job.to_json()["where"],
                          "targets": len(devices), "signed": job.signed})
        log.info("fleet server: job %s: %s to %d boxes at %g/s for %s", job.id, spec.name,
                 len(devices), spec.rate, spec.actor)
        task = asyncio.create_task(self._run_job(job), name=f"job-{job.id}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return job

    async def _run_job(self, job: Job) -> None:
        try:
            await self.runner.run(job, self.online)
        finally:
            self.runner.jobs.pop(job.id, None)

    def _save(self, job: Job) -> None:
        results = [job.results[d] for d in job.dirty]
        job.dirty.clear()
        try:
            self.store.save_job(job.to_json(), results)
            if job.ended_at is not None:
                self.store.audit(job.ended_at, job.spec.actor, "job_ended", job.id,
                                 {"status": job.status, "reason": job.reason,
                                  "counts": job.counts})
        except Exception:
            job.dirty.update(r["device_id"] for r in results)  # written with the next save
            log.exception("fleet server: cannot record job %s", job.id)

    async def _create_job(self, request: web.Request) -> web.Response:
        try:
            job = self.start_job(await _body(request))
        except ValueError as exc:
            raise _bad(str(exc)) from exc
        return web.json_response(job.to_json(), status=202)

    async def _jobs(self, request: web.Request) -> web.Response:
        rows = [self._live(row) for row in self.store.jobs()]
        return web.json_response(rows)

    def _live(self, row: dict[str, Any]) -> dict[str, Any]:
        job = self.runner.jobs.get(row["id"])
        return job.to_json() if job is not None else row

    async def _job(self, request: web.Request) -> web.Response:
        row = self.store.job(request.match_info["id"])
        if row is None:
            raise _bad(f"no job {request.match_info['id']!r}", web.HTTPNotFound)
        row = self._live(row)
        which = request.query.get("results", "all")
        if which != "none":
            job = self.runner.jobs.get(row["id"])
            results = list(job.results.values()) if job is not None \
                else self.store.results(row["id"])
            if which == "failures":
                results = [r for r in results if r["outcome"] in FAILURES]
            row["results"] = sorted(results, key=lambda r: str(r["device_id"]))
        return web.json_response(row)

    # ------------------------------------------------------------------ config, audit

    async def _push_config(self, request: web.Request) -> web.Response:
        body = await _body(request)
        if not isinstance(body, dict):
            raise _bad(f"the body must be a JSON object, got {body!r}")
        try:
            doc = await self.desired.push(body.get("settings"),
                                          str(body.get("operator") or "unknown"))
        except ValueError as exc:
            raise _bad(str(exc)) from exc
        except aiomqtt.MqttError as exc:
            raise _bad(f"stored, but not published yet: {exc}",
                       web.HTTPServiceUnavailable) from exc
        return web.json_response(doc, status=201)

    async def _config_status(self, request: web.Request) -> web.Response:
        return web.json_response(self.desired.status())

    async def _audit(self, request: web.Request) -> web.Response:
        return web.json_response(self.store.audit_log())
