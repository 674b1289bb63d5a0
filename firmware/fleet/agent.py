"""The fleet agent: the box's link to the fleet operator over MQTT (docs/mqtt.md).

One supervised component (built by `firmware.components.fleet`). While the broker is
reachable it keeps, under `storebox/<device.id>/`:

- `status`: retained JSON (docs/mqtt.md) `{"status": "online", "session", "since"}`
  after every connect (birth); `offline` with the same `session` is the Last Will (the
  broker says it when the link dies) and is published on a clean stop too. The session
  is `<boot id>-<connect counter>`, the counter kept in `fleet.sqlite3`, so a late Will
  of an older connection never looks like the newest one;
- `state`: retained, the status document of `firmware.status` computed at publish time
  (a view, never a copy), on every state change but at most once per
  `fleet.state_min_interval_s` (a burst is coalesced: the LTE link is metered) and at
  least every `fleet.state_every_s`, with `config_version` and `site` (§6a);
- `events`: one JSON object per event of `EVENT_KINDS` (and of `EVENT_KINDS_REV2`:
  `steer`/`unsteer`, and `outage` from the outage ledger's rows in the state), in order,
  each with `seq` (per box, increasing, kept across restarts: `firmware.fleet.store`)
  and `session`. Events are collected whether or not the broker is reachable and wait
  in `fleet.sqlite3` until acknowledged, up to
  `fleet.event_buffer` (the oldest are dropped beyond that, and the next event
  published says how many in `dropped_before`). Those that waited carry
  `"delayed": true`. QoS 1: an event whose PUBACK was lost is sent again (the `seq`
  tells duplicates apart);
- `cmd/<name>` → `cmd_result`: `firmware.fleet.commands`;
- the fleet's retained desired-config document → `cmd_result`: `firmware.fleet.desired`.

The broker being away is normal (the box exists for when the internet fails): the agent
retries with capped exponential backoff and jitter and never blocks or stops the box.
It always connects with the client id `storebox-<device.id>`: a half-dead old connection
is taken over by the new one (its Last Will goes out *before* the new birth message, so
`online` is what stays retained).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import aiomqtt

from firmware.errors import FirmwareError
from firmware.events import Event
from firmware.fleet.auth import brief
from firmware.fleet.broker import Broker
from firmware.fleet.commands import CommandSet
from firmware.fleet.desired import DesiredConfig
from firmware.fleet.mqtt_client import MqttClient, cancel_all, stopping
from firmware.fleet.store import FleetStore, Pending, boot_id
from firmware.fleet.topics import (
    DESIRED_CONFIG,
    EVENT_KINDS,
    EVENT_KINDS_REV2,
    Topics,
    status_payload,
    topics_for,
)
from firmware.logs import scrub
from firmware.state import BoxState
from firmware.status import status_document
from firmware.supervisor import Backoff

log = logging.getLogger("storebox.fleet")
#: paho's own lines ("failed to receive on socket" at ERROR for every lost link): the
#: agent logs why a link ended itself, once, at the right level.
_paho_log = logging.getLogger("storebox.fleet.mqtt")
_paho_log.setLevel(logging.CRITICAL)

#: Reaching the broker's port (on the loop, cancellable at once).
REACH_TIMEOUT_S = 10.0
#: TCP (and TLS) connect, in aiomqtt's executor thread: a thread cannot be cancelled and
#: the process waits for it at exit, so the port is reached first (`_reach`), on the loop.
CONNECT_TIMEOUT_S = 5.0
#: CONNACK, SUBACK, PUBACK.
REQUEST_TIMEOUT_S = 10.0
#: On a clean stop: publishing `offline` and disconnecting, together at most this long.
GOODBYE_TIMEOUT_S = 1.5
#: Commands waiting to be read; more are dropped by the MQTT client (with a warning).
MAX_QUEUED_COMMANDS = 100
#: Events read from the store per round trip while publishing.
PUBLISH_BATCH = 100


class FleetLinkError(FirmwareError):
    """The broker cannot be reached for a reason of our own (e.g. the TLS CA file);
    `reason` says which."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


_LINK_ERRORS = (aiomqtt.MqttError, OSError, FleetLinkError)


def _scrubbed(value: Any) -> Any:
    """`value` with every string in it scrubbed of anything card-like. Only strings: a
    float's digits (a latency of 2.1058360000000145 ms) are not a card number, and
    scrubbing the serialised text would cut them and break the JSON."""
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {scrub(str(k)): _scrubbed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrubbed(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and len(str(abs(value))) >= 12:
        return scrub(str(value))  # an integer as long as a card number: checked as text
    if value is None or isinstance(value, bool | int | float):
        return value
    return scrub(str(value))


def _json(doc: Any) -> bytes:
    """Compact JSON, scrubbed of anything card-like (defence in depth: it holds none)."""
    return json.dumps(_scrubbed(doc), separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class FleetAgent:
    name = "fleet"

    def __init__(self, state: BoxState, broker: Broker, commands: CommandSet, *,
                 topics: Topics | None = None, state_min_interval_s: float = 1.0,
                 state_every_s: float = 60.0, event_buffer: int = 200,
                 backoff: Backoff | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 store: FleetStore | None = None, boot: str | None = None,
                 site: dict[str, str] | None = None, config_version: str | None = None
                 ) -> None:
        self.state = state
        self.broker = broker
        self.commands = commands
        self.topics = topics or topics_for(state.device_id)
        self.state_min_interval_s = state_min_interval_s
        self.state_every_s = max(state_every_s, state_min_interval_s)
        self.event_buffer = event_buffer
        self.backoff = backoff or Backoff(initial_s=1.0, cap_s=120.0, healthy_after_s=60.0)
        self._sleep = sleep
        #: Events waiting to be published, with their seq and the connect counter.
        self.store = store or FleetStore(":memory:")
        self.boot = boot or boot_id()
        self.site = dict(site or {"isp": "", "region": ""})
        self.config_version = config_version
        #: Applies the fleet's desired config (None: not subscribed).
        self.desired: DesiredConfig | None = None
        #: This connection's session (`<boot id>-<counter>`) and when it began.
        self.session: str | None = None
        self.session_since = state.wall()
        self._last_seq = 0
        self._outage_sent = self.store.outage_sent
        state.on_change(self._outages_ended)
        self._outbox_changed = asyncio.Event()
        #: The MQTT client while connected (tests reach its socket through it).
        self.client: aiomqtt.Client | None = None
        self.connections = 0
        self.states_published = 0
        self.events_published = 0
        self._up = False
        self._up_at: float | None = None
        self._last_reason: str | None = None
        self._tls: ssl.SSLContext | None = None

    # ------------------------------------------------------------------ component

    async def run(self) -> None:
        if self.state.fleet.link not in ("connecting", "down"):
            self.state.update(self.state.fleet, link="connecting", broker=self.broker.url,
                              since=self.state.wall(), last_error=None)
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._collect_events(), name="fleet-events")
                tg.create_task(self._keep_connected(), name="fleet-link")
        finally:
            self._up = False
            self.client = None
            self.state.update(self.state.fleet, link="down", since=self.state.wall(),
                              last_error="stopped")

    # ------------------------------------------------------------------ events in

    @property
    def dropped_events(self) -> int:
        """Events dropped (oldest first) because too many waited for the broker."""
        return self.store.dropped_total

    def _add(self, doc: dict[str, Any]) -> None:
        # scrubbed before it reaches the disk too (defence in depth: events hold no card)
        _, dropped = self.store.add(_scrubbed(doc), delayed=not self._up)
        if dropped and self.store.dropped_unreported == dropped:
            log.warning("fleet: more than %d events wait for the broker; dropping the "
                        "oldest", self.store.cap)
        self._outbox_changed.set()

    def _enqueue(self, event: Event) -> None:
        if event.seq <= self._last_seq:
            return
        self._last_seq = event.seq
        if event.kind not in EVENT_KINDS and event.kind not in EVENT_KINDS_REV2:
            return
        doc = event.to_json()
        del doc["seq"]  # the fleet's seq is the store's, kept across restarts
        self._add(doc)

    def _outages_ended(self) -> None:
        """An `outage` event for every ledger row that ended since the last one sent (the
        ledger puts them in the state: `firmware.ledger.outages`)."""
        for row in self.state.outages.ended:
            ident = int(row.get("id", 0))
            if ident <= self._outage_sent:
                continue
            self._outage_sent = ident
            self._add({"kind": "outage", "severity": "info",
                       "message": f"{row.get('uplink')} outage of {row.get('duration_s')} s "
                                  f"ended", "at": row.get("ended_at"), **row})
            self.store.set_outage_sent(ident)

    async def _collect_events(self) -> None:
        """Every fleet event from now on (and those emitted before the agent ran)."""
        self._outages_ended()
        events = self.state.events.subscribe(maxsize=max(256, self.event_buffer))
        for event in self.state.events.recent():  # no await before the subscription starts
            self._enqueue(event)
        async for event in events:
            self._enqueue(event)

    # ------------------------------------------------------------------ the link

    async def _keep_connected(self) -> None:
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            self._up_at = None
            try:
                await self._session()
                reason = "the broker closed the connection"
            except _LINK_ERRORS as exc:
                if stopping():  # aiomqtt's exit failed while we were being cancelled
                    raise asyncio.CancelledError from exc
                reason = _describe(exc)
            if self._up_at is not None and \
                    loop.time() - self._up_at >= self.backoff.healthy_after_s:
                attempt = 0
            attempt += 1
            delay = self.backoff.delay(attempt)
            self._went_down(reason, delay)
            await self._sleep(delay)

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.broker.tls and self._tls is None:
            try:
                self._tls = self.broker.tls_context()
            except (OSError, ssl.SSLError) as exc:
                where = repr(self.broker.ca_file) if self.broker.ca_file else "the system store"
                raise FleetLinkError(f"cannot load the CA certificates of {where}: "
                                     f"{exc}") from exc
        return self._tls

    def _status(self, status: str, since: Any = None) -> bytes:
        assert self.session is not None
        return status_payload(status, self.session, since or self.session_since)

    def _client(self) -> aiomqtt.Client:
        b = self.broker
        # a new session for every connection: its birth and its Will carry it
        self.session = f"{self.boot}-{self.store.next_connection()}"
        self.session_since = self.state.wall()
        client = MqttClient(
            b.host, b.port, username=b.username, password=b.password, identifier=b.client_id,
            will=aiomqtt.Will(self.topics.status, self._status("offline"), qos=1,
                              retain=True),
            clean_session=True, keepalive=b.keepalive_s, timeout=REQUEST_TIMEOUT_S,
            tls_context=self._tls_context(),
            max_queued_incoming_messages=MAX_QUEUED_COMMANDS, logger=_paho_log)
        client._client.connect_timeout = CONNECT_TIMEOUT_S
        return client

    async def _reach(self) -> None:
        """Is the broker's port reachable? Asked on the loop, so that a blackholed broker
        costs no thread and a stop never waits for one (the usual case on a box offline)."""
        try:
            async with asyncio.timeout(REACH_TIMEOUT_S):
                _, writer = await asyncio.open_connection(self.broker.host, self.broker.port)
        except TimeoutError:
            raise FleetLinkError(f"no answer within {REACH_TIMEOUT_S:g}s") from None
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()

    async def _session(self) -> None:
        """One connection, from connect to its end (raises the reason it ended)."""
        await self._reach()
        client = self._client()
        try:
            await client.__aenter__()
        except BaseException:  # no CONNACK in time, refused, or stopping: no socket left
            _drop(client)
            raise
        self.client = client
        stopping = False
        try:
            await self._serve(client)
        except asyncio.CancelledError:
            stopping = True
            raise
        finally:
            self.client = None
            if stopping:  # `offline` said: a clean DISCONNECT
                await _close(client)
            else:  # a broken link: no DISCONNECT, so the broker says the Will if it can
                _drop(client)

    async def _serve(self, client: aiomqtt.Client) -> None:
        tasks: list[asyncio.Task[None]] = []
        try:
            await client.publish(self.topics.status, self._status("online"), qos=1,
                                 retain=True)
            await client.subscribe(self.topics.commands, qos=1)
            if self.desired is not None:
                await client.subscribe(DESIRED_CONFIG, qos=1)
            self._went_up()
            tasks = [asyncio.create_task(self._publish_state(client), name="fleet-state"),
                     asyncio.create_task(self._publish_events(client), name="fleet-events-out"),
                     asyncio.create_task(self._serve_commands(client), name="fleet-commands")]
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            await _cancel(tasks)
            await self._goodbye(client)
            raise
        await _cancel(tasks)
        for task in done:
            exc = task.exception()
            if exc is not None:
                raise exc

    async def _goodbye(self, client: aiomqtt.Client) -> None:
        """A clean stop: say `offline` ourselves (a clean disconnect cancels the Will)."""
        try:
            async with asyncio.timeout(GOODBYE_TIMEOUT_S):
                await client.publish(self.topics.status,
                                     self._status("offline", self.state.wall()), qos=1,
                                     retain=True)
            log.info("fleet: said offline to %s", self.broker.url)
        except (*_LINK_ERRORS, TimeoutError) as exc:
            log.warning("fleet: could not say offline (%s); the broker's Last Will will",
                        _describe(exc))

    def _went_up(self) -> None:
        self._up = True
        self._up_at = asyncio.get_running_loop().time()
        self._last_reason = None
        self.connections += 1
        self.state.update(self.state.fleet, link="up", broker=self.broker.url,
                          since=self.state.wall(), last_error=None)
        log.info("fleet: connected to %s as %s, session %s (%d events waiting)",
                 self.broker.url, self.broker.client_id, self.session, self.store.count())

    def _went_down(self, reason: str, retry_in_s: float) -> None:
        was_up, self._up = self._up, False
        self.store.mark_delayed()
        fleet = self.state.fleet
        since = self.state.wall() if fleet.link != "down" else fleet.since
        self.state.update(fleet, link="down", since=since, last_error=reason)
        if was_up:
            log.warning("fleet: lost the link to %s (%s); reconnecting in %.1fs",
                        self.broker.url, reason, retry_in_s)
        elif reason != self._last_reason:
            log.warning("fleet: cannot reach %s (%s); retrying in %.1fs, backing off",
                        self.broker.url, reason, retry_in_s)
        else:
            log.debug("fleet: still cannot reach %s (%s); retrying in %.1fs",
                      self.broker.url, reason, retry_in_s)
        self._last_reason = reason

    # ------------------------------------------------------------------ out and in

    def state_payload(self) -> bytes:
        doc = status_document(self.state)
        doc["config_version"] = self.config_version
        doc["site"] = dict(self.site)
        return _json(doc)

    async def _publish_state(self, client: aiomqtt.Client) -> None:
        """Now, then on every change (coalesced) and at least every `state_every_s`."""
        loop = asyncio.get_running_loop()
        while True:
            seen = self.state.revision
            await client.publish(self.topics.state, self.state_payload(), qos=1, retain=True)
            self.states_published += 1
            sent_at = loop.time()
            try:
                async with asyncio.timeout(self.state_every_s):
                    await self.state.wait_changed(seen)
            except TimeoutError:
                continue
            rest = sent_at + self.state_min_interval_s - loop.time()
            if rest > 0:
                await asyncio.sleep(rest)

    def _event_payload(self, pending: Pending, dropped: int) -> bytes:
        doc = dict(pending.doc)
        doc["session"] = self.session
        if pending.delayed:
            doc["delayed"] = True
        if dropped:
            doc["dropped_before"] = dropped
        return _json(doc)

    async def _publish_events(self, client: aiomqtt.Client) -> None:
        """The store's events in seq order; each leaves the store once acknowledged."""
        while True:
            self._outbox_changed.clear()
            batch = self.store.waiting(PUBLISH_BATCH)
            if not batch:
                await self._outbox_changed.wait()
                continue
            for pending in batch:
                dropped = self.store.dropped_unreported
                await client.publish(self.topics.events,
                                     self._event_payload(pending, dropped), qos=1)
                self.store.sent(pending.seq)
                if dropped:
                    self.store.reported_dropped(dropped)
                self.events_published += 1

    async def _serve_commands(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            raw = message.payload
            payload = bytes(raw) if isinstance(raw, bytes | bytearray) else \
                str(raw if raw is not None else "").encode()
            if self.desired is not None and str(message.topic) == DESIRED_CONFIG:
                answer = self.desired.handle(payload)
                if answer is not None:
                    await client.publish(self.topics.command_result, _json(answer), qos=1)
                continue
            name = self.topics.command_name(str(message.topic))
            if name is None:
                continue
            await client.publish(self.topics.command_result,
                                 await self._answer(name, payload, message.retain), qos=1)

    async def _answer(self, name: str, payload: bytes, retained: bool) -> bytes:
        """The `cmd_result` payload for one command message. Whatever the message holds,
        an answer: an error here must not end the session (it would be read again after
        the reconnect, and again: a crash loop)."""
        try:
            return _json(await self.commands.handle(name, payload, retained=retained))
        except Exception as exc:  # handle() answers every refusal itself: a bug of ours
            log.exception("fleet: no answer for a command on cmd/%s", brief(name))
            return _json({"id": None, "name": brief(name, 64), "ok": False,
                          "error": {"code": "internal",
                                    "message": f"the box could not answer ({type(exc).__name__})"}})


# ---------------------------------------------------------------------- helpers


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError) and exc.errno:
        return os.strerror(exc.errno)  # "Connection refused", not "Connect call failed"
    text = str(exc) or type(exc).__name__
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, aiomqtt.MqttError) and cause is not None and str(cause) not in text:
        text += f": {cause}"
    return text


def _drop(client: aiomqtt.Client) -> None:
    """Close the socket without a DISCONNECT: the broker will say our Last Will."""
    with contextlib.suppress(Exception):
        client._client._sock_close()


async def _close(client: aiomqtt.Client) -> None:
    try:
        async with asyncio.timeout(GOODBYE_TIMEOUT_S):
            await client.__aexit__(None, None, None)
    except (*_LINK_ERRORS, TimeoutError):
        _drop(client)


async def _cancel(tasks: list[asyncio.Task[None]]) -> None:
    await cancel_all(tasks)  # none of them cleans up: a second cancel never hurries one


__all__ = ["FleetAgent", "FleetLinkError"]
