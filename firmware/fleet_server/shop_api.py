"""The API behind a shop's page and an incident's claim report (docs/cli.md):

- `GET /api/boxes/<id>`: the box as in `/api/boxes`, with its whole last state document
  and the incidents it is part of;
- `GET /api/boxes/<id>/timeline[?limit=N]`: its state changes and events, newest first;
- `GET /api/incidents/<id>/claim.csv` and `/api/incidents/<id>/claim` (JSON, with
  totals): each shop's outage minutes and offline payments, from the boxes' ledgers.

The present comes from the model; the past from the database, flushed first so what this
worker has just received is in it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from aiohttp import web

from firmware.fleet_server import claim, records
from firmware.fleet_server.db import FleetDb
from firmware.fleet_server.model import FleetModel, Incident

log = logging.getLogger("storebox.fleet_server")

MAX_TIMELINE = 1000


class ShopApi:
    def __init__(self, model: FleetModel, db: FleetDb, wall: Callable[[], datetime]) -> None:
        self.model = model
        self.db = db
        self.wall = wall

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/api/boxes/{device_id}", self.box)
        app.router.add_get("/api/boxes/{device_id}/timeline", self.timeline)
        app.router.add_get("/api/incidents/{incident_id}/claim.csv", self.claim_csv)
        app.router.add_get("/api/incidents/{incident_id}/claim", self.claim_json)

    def _flush(self) -> None:
        try:
            self.db.flush()
        except Exception:  # the reads still answer with what is written
            log.exception("fleet server: cannot write the database")

    async def box(self, request: web.Request) -> web.Response:
        device = request.match_info["device_id"]
        box = self.model.boxes.get(device)
        if box is None:
            raise web.HTTPNotFound(text=f"no box {device!r}")
        doc = box.to_json(self.wall(), self.model.stale_after_s)
        doc["state"] = box.state
        doc["incidents"] = [{k: v for k, v in i.to_json().items() if k != "devices"}
                            for i in reversed(self.model.incidents) if device in i.members]
        return web.json_response(doc)

    async def timeline(self, request: web.Request) -> web.Response:
        device = request.match_info["device_id"]
        try:
            limit = min(int(request.query.get("limit", "200")), MAX_TIMELINE)
        except ValueError as exc:
            raise web.HTTPBadRequest(
                text=f"limit {request.query.get('limit')!r}: not a number") from exc
        if device not in self.model.boxes:
            raise web.HTTPNotFound(text=f"no box {device!r}")
        self._flush()
        return web.json_response(records.timeline(self.db.backend, device, max(1, limit)))

    def _claim(self, request: web.Request) -> tuple[Incident, list[dict[str, Any]]]:
        text = request.match_info["incident_id"]
        try:
            iid = int(text)
        except ValueError as exc:
            raise web.HTTPBadRequest(text=f"incident {text!r}: not a number") from exc
        incident = next((i for i in self.model.incidents if i.id == iid), None)
        self._flush()
        if incident is None:
            incident = self.db.load_incident(iid)
        if incident is None:
            raise web.HTTPNotFound(text=f"no incident {iid}")
        outages = records.outage_rows(self.db.backend, incident.members)
        margin = timedelta(seconds=self.model.config.incident_window_s)
        return incident, claim.claim_rows(incident, self.model.boxes, outages, self.wall(),
                                          margin)

    async def claim_csv(self, request: web.Request) -> web.Response:
        incident, rows = self._claim(request)
        return web.Response(
            text=claim.as_csv(rows), content_type="text/csv",
            headers={"Content-Disposition":
                     f'attachment; filename="incident-{incident.id}-claim.csv"'})

    async def claim_json(self, request: web.Request) -> web.Response:
        incident, rows = self._claim(request)
        summary = {k: v for k, v in incident.to_json().items() if k != "devices"}
        return web.json_response({"incident": summary, "totals": claim.totals(rows),
                                  "rows": rows})
