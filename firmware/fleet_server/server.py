"""`storebox fleet serve`: MQTT ingest, the JSON API, server-sent events, the dashboard.

The ingest is one aiomqtt client with normal subscriptions to every box's `status`,
`state` and `events` (so every box's retained `status` and `state` arrive at once; see
`subscriptions`), a persistent session, reconnecting with backoff; the model is updated
per message and the database in batches (`flush_s`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import aiomqtt
from aiohttp import web

from firmware.fleet.mqtt_client import cancel_all, stopping
from firmware.fleet_server.config import FleetServerConfig, broker_of
from firmware.fleet_server.db import FleetDb
from firmware.fleet_server.link import mqtt_client
from firmware.fleet_server.model import Change, FleetModel
from firmware.fleet_server.operations import Operations
from firmware.fleet_server.shop_api import ShopApi
from firmware.fleet_server.stream import Broadcast
from firmware.fleet_server.where import matches, parse_where

log = logging.getLogger("storebox.fleet_server")

TICK_S = 1.0
#: A stopping task still running after this long is cancelled again (`cancel_all`).
STOP_RECANCEL_S = 2.0


def _now() -> datetime:
    return datetime.now(UTC)


def subscriptions(shared_group: str) -> list[tuple[str, int]]:
    """What one worker subscribes to, with the QoS: every box's status, state and events,
    (scale-out) the events shared with the other workers of `shared_group`.

    `state` at QoS 0: it is retained and comes at least every minute, so the broker's
    copy on every (re)subscription and the next one make up for one lost with a broken
    connection, and no PUBACK per state is sent (at 1,700 states a second the PUBACKs
    were a fifth of the server's CPU, BENCHMARKS.md "Fleet"). Status and events at QoS 1:
    a Will or an event is said once."""
    events = "storebox/+/events"
    return [("storebox/+/status", 1), ("storebox/+/state", 0),
            (f"$share/{shared_group}/{events}" if shared_group else events, 1)]


class FleetServer:
    def __init__(self, config: FleetServerConfig,
                 wall: Callable[[], datetime] = _now) -> None:
        self.config = config
        self.wall = wall
        self.db = FleetDb(config.database)
        self.model = FleetModel(config, self._changed, defer_recount=True)
        for box in self.db.load_boxes():
            self.model.boxes[box.device_id] = box
        self.model.id_base = self.db.last_incident_id()
        for incident in self.db.load_open_incidents():
            self.model.restore(incident)
        self.broadcast = Broadcast()
        self.revision = 0
        self._waiters: list[asyncio.Future[None]] = []
        self.mqtt_up = False
        self.runner: web.AppRunner | None = None
        self.port: int | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.operations = Operations(config, self.db.backend, self.select, self._online,
                                     wall=wall)

    def select(self, where: list[tuple[str, str]]) -> list[dict[str, Any]]:
        """The boxes (as `GET /api/boxes` shows them) that match `where`."""
        return [r for r in self.model.boxes_json(self.wall()) if matches(r, where)]

    def _online(self, device: str) -> bool:
        box = self.model.boxes.get(device)
        return box is not None and box.online

    # ------------------------------------------------------------------ changes

    def _changed(self, change: Change) -> None:
        self.db.queue(change)
        if change["type"] == "seq" or not self.broadcast.viewers:  # seq: bookkeeping only
            return
        view = self._view(change)  # one frame for every viewer (stream.py)
        data = json.dumps(view, separators=(",", ":"))
        self.broadcast.publish(f"event: {view['type']}\ndata: {data}\n\n".encode())

    @property
    def streams(self) -> set[object]:
        """The viewers of `/api/stream` now."""
        return self.broadcast.viewers

    def _view(self, change: Change) -> dict[str, Any]:
        if change["type"] == "box":
            return {"type": "box",
                    "box": change["box"].to_json(self.wall(), self.model.stale_after_s)}
        if change["type"] == "incident":
            return {"type": "incident", "incident": change["incident"].to_json()}
        return {k: v for k, v in change.items() if k != "doc"} | {"kind": change["kind"]}

    def _touch(self) -> None:
        self.revision += 1
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def until(self, check: Callable[[], bool]) -> None:
        """Wait until `check()` holds, woken by every message handled and every tick (for
        tests and tools: bound it with `asyncio.timeout`)."""
        while not check():
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            await waiter

    # ------------------------------------------------------------------ ingest

    async def ingest(self) -> None:
        host, port, _ = broker_of(self.config)
        delay = 0.5
        while True:
            try:
                # a persistent session: events a box publishes while this worker is
                # reconnecting (a broker restart: the boxes may be back first) are kept
                # for it by the broker, not lost (BENCHMARKS.md, fleet)
                async with mqtt_client(self.config, self.config.client_id,
                                       clean_session=False,
                                       max_queued_incoming_messages=0) as client:
                    topics = subscriptions(self.config.shared_group)
                    for topic, qos in topics:
                        await client.subscribe(topic, qos=qos)
                    self.mqtt_up, delay = True, 0.5
                    log.info("fleet server: subscribed to %s on %s:%d",
                             ", ".join(t for t, _ in topics), host, port)
                    async for message in client.messages:
                        payload = message.payload
                        data = bytes(payload) if isinstance(payload, bytes | bytearray) \
                            else str(payload or "").encode()
                        self.model.handle(str(message.topic), data, self.wall())
                        self._touch()
            except aiomqtt.MqttError as exc:
                self.mqtt_up = False
                if stopping():  # the exit failed while we were being cancelled
                    raise asyncio.CancelledError from exc
                log.warning("fleet server: broker %s:%d: %s; again in %.1fs", host, port,
                            exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    async def _flush_and_tick(self) -> None:
        while True:
            await asyncio.sleep(min(self.config.flush_s, TICK_S))
            self.model.settle()
            self.model.tick(self.wall())
            try:
                self.db.flush()
            except Exception:
                log.exception("fleet server: cannot write the database")
            self.operations.flush()
            self._touch()

    # ------------------------------------------------------------------ HTTP

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._page)
        app.router.add_get("/api/boxes", self._boxes)
        app.router.add_get("/api/incidents", self._incidents)
        app.router.add_get("/api/stream", self.broadcast.serve)
        app.router.add_get("/healthz", self._health)
        ShopApi(self.model, self.db, self.wall).add_routes(app)
        self.operations.add_routes(app)
        return app

    def _where(self, request: web.Request) -> list[tuple[str, str]]:
        try:
            return parse_where(request.query.getall("where", []))
        except ValueError as exc:
            raise web.HTTPBadRequest(text=str(exc)) from exc

    async def _boxes(self, request: web.Request) -> web.Response:
        where = self._where(request)
        return web.json_response(self.select(where))

    async def _incidents(self, request: web.Request) -> web.Response:
        where = self._where(request)
        return web.json_response([r for r in self.model.incidents_json() if matches(r, where)])

    async def _health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "mqtt": self.mqtt_up,
                                  "boxes": len(self.model.boxes),
                                  "messages": self.model.messages,
                                  "malformed": self.model.malformed})

    async def _page(self, request: web.Request) -> web.Response:
        page = resources.files("firmware.fleet_server").joinpath("dashboard.html")
        return web.Response(text=page.read_text(encoding="utf-8"), content_type="text/html")

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        host, port = self.config.host_port
        self.runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else port
        self._tasks = [asyncio.create_task(self.ingest(), name="fleet-ingest"),
                       asyncio.create_task(self._flush_and_tick(), name="fleet-flush"),
                       asyncio.create_task(self.operations.run(), name="fleet-operations")]
        log.info("fleet server: http://%s:%d/", host, self.port)

    async def stop(self) -> None:
        # the ingest's and the link's DISCONNECTs take milliseconds: a task still running
        # after STOP_RECANCEL_S lost its cancellation and is cancelled again
        await cancel_all(self._tasks, recancel_s=STOP_RECANCEL_S)
        await self.operations.stop()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None
        self.operations.flush()
        self.db.close()

    @property
    def url(self) -> str:
        host, _ = self.config.host_port
        return f"http://{host}:{self.port}"


async def serve(config: FleetServerConfig) -> int:
    server = FleetServer(config)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    import signal

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()
    return 0
