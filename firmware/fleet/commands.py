"""Fleet commands: parse `cmd/<name>` payloads, authorize, run, and build the answer.

A command is `{"id": "...", "args": {...}}` (plus `sig` and `expires_at` for commands
that change behaviour, `firmware.fleet.auth`). Every message gets an answer on
`cmd_result`: `{"id", "name", "ok": true, "result": ...}` or `{"id", "name", "ok": false,
"error": {"code", "message", "field"?}}`; `id` is null only when none could be read.
Nothing a message holds can stop the agent: a bad one is answered and logged. The
payload is parsed strictly and within bounds (`load_json`): at most MAX_PAYLOAD_BYTES,
MAX_DEPTH levels of nesting (10,000 `[` once raised RecursionError out of the agent and
crash-looped it), no duplicate keys, NaN, huge numbers or lone surrogates: each is a
`bad_json` answer. An answer echoes at most MAX_NAME_CHARS of the command name.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from firmware.errors import FirmwareError
from firmware.fleet.auth import Authorizer, CommandRefused, SignedFields, brief

log = logging.getLogger("storebox.fleet")

MAX_PAYLOAD_BYTES = 16 * 1024
MAX_ID_CHARS = 128
#: Deepest nesting of arrays/objects a command may have (`{"args": {"a": [...]}}` is 3).
MAX_DEPTH = 16
#: Longest number literal (digits, sign, point, exponent) a command may hold.
MAX_NUMBER_CHARS = 40
#: Longest command name echoed in an answer (the topic level can be 64 KiB long).
MAX_NAME_CHARS = 64
_FIELDS = ("id", "args", "sig", "expires_at")


class _Malformed(FirmwareError, ValueError):
    """A payload that is JSON only in a dangerous sense (too deep, NaN, duplicate key...)."""


def _nesting_depth(text: str) -> int:
    """The deepest nesting of `[`/`{` in JSON `text`, brackets in strings not counted;
    stops counting once past MAX_DEPTH. Linear, no recursion: the parser's own recursion
    (RecursionError on 10,000 `[`) is never reached."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_DEPTH:
                    return deepest
        elif ch in "]}":
            depth -= 1
    return deepest


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for key, value in pairs:
        if key in doc:
            raise _Malformed(f"duplicate key {brief(key)}")
        doc[key] = value
    return doc


def _number(text: str, kind: type[int] | type[float]) -> int | float:
    if len(text) > MAX_NUMBER_CHARS:
        raise _Malformed(f"a number of {len(text)} characters (at most {MAX_NUMBER_CHARS})")
    value = kind(text)
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        raise _Malformed(f"number {brief(text)} is out of range")
    return value


def _no_constant(name: str) -> Any:
    raise _Malformed(f"{name} is not JSON")


def _check_text(value: Any) -> None:
    """Every string (and key) must be encodable UTF-8: a lone surrogate ("\\ud800")
    would be echoed in the answer and break its encoding."""
    if isinstance(value, str):
        value.encode("utf-8")
    elif isinstance(value, dict):
        for key, item in value.items():
            key.encode("utf-8")
            _check_text(item)
    elif isinstance(value, list):
        for item in value:
            _check_text(item)


def load_json(payload: bytes) -> Any:
    """Strict, bounded JSON: UTF-8, at most MAX_DEPTH deep, no duplicate keys, no
    NaN/Infinity, no number longer than MAX_NUMBER_CHARS, no lone surrogates. Raises
    CommandRefused("bad_json") for anything else; never RecursionError or MemoryError
    on a payload within MAX_PAYLOAD_BYTES."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CommandRefused("bad_json", f"payload is not UTF-8: {exc}") from None
    depth = _nesting_depth(text)
    if depth > MAX_DEPTH:
        raise CommandRefused("bad_json", f"payload nests deeper than {MAX_DEPTH} levels")
    try:
        doc = json.loads(text, object_pairs_hook=_unique_keys,
                         parse_int=lambda t: _number(t, int),
                         parse_float=lambda t: _number(t, float),
                         parse_constant=_no_constant)
        _check_text(doc)
    except json.JSONDecodeError as exc:
        raise CommandRefused("bad_json", f"payload is not JSON: {exc}") from None
    except _Malformed as exc:
        raise CommandRefused("bad_json", f"payload is not acceptable JSON: {exc}") from None
    except UnicodeEncodeError:
        raise CommandRefused("bad_json", "payload holds a lone UTF-16 surrogate "
                                         "(\\ud800-\\udfff escape)") from None
    except (ValueError, RecursionError) as exc:  # belt and braces: never out of here
        raise CommandRefused("bad_json", f"payload is not acceptable JSON: "
                                         f"{type(exc).__name__}") from None
    return doc


def answer_name(name: str) -> str:
    """The command name as the answer echoes it: at most MAX_NAME_CHARS characters."""
    return name if len(name) <= MAX_NAME_CHARS else name[:MAX_NAME_CHARS] + "…"

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
        doc = load_json(payload)
    except CommandRefused as refused:
        return None, None, refused
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
        answer_id: str | int | None = None
        shown = answer_name(name)
        try:
            request, answer_id, refusal = parse_request(payload)
            if refusal is not None:
                raise refusal
            assert request is not None
            result = await self._run(name, request, retained)
        except CommandRefused as refused:
            log.warning("fleet: command %s (id %s) refused: %s: %s", brief(name),
                        brief(answer_id), refused.code, refused.message)
            return {"id": answer_id, "name": shown, "ok": False, "error": refused.to_json()}
        except Exception as exc:  # a command's failure must never stop the agent
            log.exception("fleet: command %s (id %s) failed", brief(name), brief(answer_id))
            return {"id": answer_id, "name": shown, "ok": False,
                    "error": {"code": "failed",
                              "message": brief(f"{type(exc).__name__}: {exc}", 200)}}
        log.info("fleet: command %s (id %s) done", brief(name), brief(answer_id))
        return {"id": answer_id, "name": shown, "ok": True, "result": result}

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
