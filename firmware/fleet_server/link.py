"""The fleet server's MQTT connections: how one is made from `[fleet_server]`, and the
operations link, a connection of its own (client id `<client_id>-ops`) that publishes
command jobs and the desired config and reads every box's `cmd_result`.

The operations link is separate from the ingest so that, in a scale-out, the worker that
runs a job sees every answer to it: its subscription to `storebox/+/cmd_result` is not
shared, whatever the ingest shares.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt

from firmware.fleet.mqtt_client import MqttClient, stopping
from firmware.fleet.topics import split_topic
from firmware.fleet_server.config import FleetServerConfig, broker_of

log = logging.getLogger("storebox.fleet_server")

CMD_RESULTS = "storebox/+/cmd_result"
#: A publish waits this long for the link to be (back) up.
PUBLISH_WAIT_S = 10.0

ResultHandler = Callable[[str, dict[str, Any]], None]


def mqtt_client(config: FleetServerConfig, identifier: str, *, clean_session: bool = True,
                **options: Any) -> aiomqtt.Client:
    """A client for the broker of `config`, with its credentials and TLS; with
    `clean_session` False the broker keeps its subscriptions and QoS 1 messages while
    it is away (a broker with persistence: across the broker's restart too). Its waits
    always end when the task is cancelled (`firmware.fleet.mqtt_client`)."""
    host, port, tls = broker_of(config)
    password = None
    if config.password_file:
        text = Path(config.password_file).read_text(encoding="utf-8")
        password = text.splitlines()[0] if text else ""
    context = ssl.create_default_context(cafile=config.ca_file or None) if tls else None
    return MqttClient(host, port, identifier=identifier,
                      username=config.username or None, password=password,
                      tls_context=context, clean_session=clean_session, **options)


class OperationsLink:
    """Publishes for the operations and hands each `cmd_result` to `on_result(device,
    answer)`; reconnects with backoff while the server runs."""

    def __init__(self, config: FleetServerConfig, on_result: ResultHandler) -> None:
        self.config = config
        self.on_result = on_result
        self.client: aiomqtt.Client | None = None
        self._up = asyncio.Event()

    async def run(self) -> None:
        delay = 0.5
        while True:
            try:
                async with mqtt_client(self.config, f"{self.config.client_id}-ops",
                                       max_queued_incoming_messages=0) as client:
                    await client.subscribe(CMD_RESULTS, qos=1)
                    self.client, delay = client, 0.5
                    self._up.set()
                    async for message in client.messages:
                        self._result(str(message.topic), message.payload)
            except aiomqtt.MqttError as exc:
                if stopping():  # the exit failed while we were being cancelled
                    raise asyncio.CancelledError from exc
                log.warning("fleet server: operations link: %s; again in %.1fs", exc, delay)
            finally:
                self._up.clear()
                self.client = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    def _result(self, topic: str, payload: Any) -> None:
        parts = split_topic(topic)
        if parts is None:
            return
        try:
            doc = json.loads(payload if isinstance(payload, bytes | bytearray | str) else b"")
        except ValueError:
            return
        if isinstance(doc, dict):
            self.on_result(parts[0], doc)

    async def publish(self, topic: str, payload: bytes, retain: bool = False) -> None:
        """Publish at QoS 1 (waiting for the link at most PUBLISH_WAIT_S; raises
        aiomqtt.MqttError when it is not up by then)."""
        try:
            async with asyncio.timeout(PUBLISH_WAIT_S):
                await self._up.wait()
        except TimeoutError:
            raise aiomqtt.MqttError("the operations link to the broker is down") from None
        client = self.client
        assert client is not None
        await client.publish(topic, payload, qos=1, retain=retain)

    @property
    def up(self) -> bool:
        return self._up.is_set()
