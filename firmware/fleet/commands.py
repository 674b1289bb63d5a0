"""Fleet commands: parse `cmd/<name>` payloads, authorize, run, and build the answer.

A command is `{"id": "...", "args": {...}}` (plus `sig` and `expires_at` for commands
that change behaviour, `firmware.fleet.auth`). Every message gets an answer on
`cmd_result`: `{"id", "name", "ok": true, "result": ...}` or `{"id", "name", "ok": false,
"error": {"code", "message", "field"?}}`; `id` is null only when none could be read.
Nothing a message holds can stop the agent: a bad one is answered and logged.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from firmware.fleet.auth import Authorizer, CommandRefused, SignedFields, brief

log = logging.getLogger("storebox.fleet")

MAX_PAYLOAD_BYTES = 16 * 1024
MAX_ID_CHARS = 128
_FIELDS = ("id", "args", "sig", "expires_at")

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


@dataclass(frozen=True)
class Command:
    name: str
    run: Handler
    #: Changes the box's behaviour: refused unless signed by the fleet operator.
    changes: bool = False
    #: Argument names it accepts; any other is refused.
    args: frozenset[str] = field(default_factory=frozenset)


@dataclass
class Request:
    id: str
    args: dict[str, Any]
    signed: SignedFields


def _readable_id(doc: dict[str, Any]) -> str | int | None:
    value = doc.get("id")
    if isinstance(value, str) and len(value) <= MAX_ID_CHARS:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def parse_request(payload: bytes) -> tuple[Request | None, str | int | None, CommandRefused | None]:
    """The request, the id to answer with (when readable), or why it is refused."""
    if len(payload) > MAX_PAYLOAD_BYTES:
        return None, None, CommandRefused(
            "too_large", f"payload is {len(payload)} bytes, at most {MAX_PAYLOAD_BYTES}")
    try:
        doc = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return None, None, CommandRefused("bad_json", f"payload is not UTF-8: {exc}")
    except json.JSONDecodeError as exc:
        return None, None, CommandRefused("bad_json", f"payload is not JSON: {exc}")
    if not isinstance(doc, dict):
        return None, None, CommandRefused(
            "bad_request", f"payload must be a JSON object "
            f'{{"id": "...", "args": {{...}}}}, got {brief(doc)}')
    answer_id = _readable_id(doc)
    if "id" not in doc:
        return None, None, CommandRefused("bad_request", "field 'id' is missing", "id")
    raw_id = doc["id"]
    if not isinstance(raw_id, str) or not raw_id.strip() or len(raw_id) > MAX_ID_CHARS:
        return None, answer_id, CommandRefused(
            "bad_request", f"field 'id' must be a non-empty string of at most {MAX_ID_CHARS} "
            f"characters, got {brief(raw_id)}", "id")
    for name in doc:
        if name not in _FIELDS:
            return None, raw_id, CommandRefused(
                "bad_request", f"unknown field {name!r} (fields: {', '.join(_FIELDS)})", name)
    args = doc.get("args", {})
    if not isinstance(args, dict):
        return None, raw_id, CommandRefused(
            "bad_request", f"field 'args' must be a JSON object, got {brief(args)}", "args")
    signed = SignedFields(sig=doc.get("sig"), expires_at=doc.get("expires_at"))
    return Request(raw_id, args, signed), raw_id, None


class CommandSet:
    """The commands a box answers, and who may run the ones that change it."""

    def __init__(self, commands: Iterable[Command], authorizer: Authorizer) -> None:
        self.commands = {c.name: c for c in commands}
        self.authorizer = authorizer

    async def handle(self, name: str, payload: bytes, retained: bool = False) -> dict[str, Any]:
        """Run one command message; always return the answer for `cmd_result`."""
        request, answer_id, refusal = parse_request(payload)
        try:
            if refusal is not None:
                raise refusal
            assert request is not None
            result = await self._run(name, request, retained)
        except CommandRefused as refused:
            log.warning("fleet: command %s (id %s) refused: %s: %s", brief(name),
                        brief(answer_id), refused.code, refused.message)
            return {"id": answer_id, "name": name, "ok": False, "error": refused.to_json()}
        except Exception as exc:  # a command's failure must never stop the agent
            log.exception("fleet: command %s (id %s) failed", brief(name), brief(answer_id))
            return {"id": answer_id, "name": name, "ok": False,
                    "error": {"code": "failed", "message": f"{type(exc).__name__}: {exc}"}}
        log.info("fleet: command %s (id %s) done", name, brief(answer_id))
        return {"id": answer_id, "name": name, "ok": True, "result": result}

    async def _run(self, name: str, request: Request, retained: bool) -> Any:
        command = self.commands.get(name)
        if command is None:
            raise CommandRefused("unknown_command", f"no command {brief(name)}; commands: "
                                 f"{', '.join(sorted(self.commands))}")
        if retained:
            raise CommandRefused("retained", "commands must not be published retained (one "
                                 "would run again at every reconnect); clear the retained "
                                 f"message on cmd/{name}")
        for arg in request.args:
            if arg not in command.args:
                accepted = ", ".join(sorted(command.args)) or "none"
                raise CommandRefused("bad_request", f"{name!r} takes no argument {arg!r} "
                                     f"(arguments: {accepted})", f"args.{arg}")
        if command.changes:
            self.authorizer.authorize(name, request.id, request.args, request.signed)
        return await command.run(request.args)
