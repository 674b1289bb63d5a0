"""The documented interfaces (docs/) as validators, for tests to hold real output against.

`docs/schemas/*.json` (JSON Schema draft 2020-12: the status document, the fleet's MQTT
payloads) and `docs/openapi.json` (OpenAPI 3.1, whose schemas are the same dialect) are
loaded into one `referencing` registry, so a `$ref` between them resolves offline.

A mismatch raises `ContractViolation` where the test can see it, and is also recorded in
`VIOLATIONS`: a check that runs in a callback (an aiohttp trace, an MQTT reader task) may
be swallowed by the code around it, so the autouse fixture in tests/conftest.py fails the
test at teardown when anything was recorded.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

DOCS = Path(__file__).resolve().parents[2] / "docs"
SCHEMAS = DOCS / "schemas"
#: The base the schemas' `$id`s share, and the URI the OpenAPI document is registered at.
BASE = "https://storebox.example/schemas/"
OPENAPI_URI = "https://storebox.example/openapi.json"

#: Every violation seen since the last `take_violations()` (tests/conftest.py drains it).
VIOLATIONS: list[str] = []


class ContractViolation(AssertionError):
    """Output of the box that its documentation in docs/ does not allow."""


def violation(message: str) -> ContractViolation:
    VIOLATIONS.append(message)
    return ContractViolation(message)


def take_violations() -> list[str]:
    taken = list(VIOLATIONS)
    VIOLATIONS.clear()
    return taken


def load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((DOCS / name).read_text(encoding="utf-8"))
    return doc


def _openapi_for_lookup() -> dict[str, Any]:
    """docs/openapi.json with each embedded schema that has an `$id` (the status
    document) replaced by a reference to that `$id`. The embedded copy is correct JSON
    Schema (its `$id` makes its own `#/$defs/...` resolve inside it), but `referencing`
    reaches it by a JSON pointer through `components`, which it does not know as a place
    where schemas start, so it would resolve those references against the whole
    document; the copy registered under its `$id` is the same schema (test_docs.py)."""
    doc = load("openapi.json")
    schemas = doc["components"]["schemas"]
    for name, schema in schemas.items():
        if "$id" in schema:
            schemas[name] = {"$ref": schema["$id"]}
    return doc


@functools.cache
def registry() -> Registry[Any]:
    resources = [(OPENAPI_URI, Resource(contents=_openapi_for_lookup(),
                                         specification=DRAFT202012))]
    for path in sorted(SCHEMAS.glob("*.json")):
        schema = load(f"schemas/{path.name}")
        resources.append((schema["$id"], Resource.from_contents(schema)))
    return Registry().with_resources(resources).crawl()


@functools.cache
def validator(uri: str) -> Draft202012Validator:
    """A validator of the schema at `uri` (a schema's `$id`, or `OPENAPI_URI#/pointer`)."""
    return Draft202012Validator({"$ref": uri}, registry=registry(),
                                format_checker=FormatChecker())


def problems(uri: str, doc: Any) -> list[str]:
    """Every way `doc` breaks the schema at `uri`, each with the path to the bad value."""
    return [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
            for e in sorted(validator(uri).iter_errors(doc), key=lambda e: list(e.path))]


def check(uri: str, doc: Any, what: str) -> None:
    """Raise (and record) a `ContractViolation` when `doc` does not match `uri`."""
    found = problems(uri, doc)
    if found:
        raise violation(f"{what} does not match {uri}:\n  " + "\n  ".join(found[:20]))


def check_status(doc: Any, what: str = "the status document") -> None:
    check(BASE + "status.json", doc, what)


#: The box's MQTT topics under storebox/<device.id>/ and the schema of each payload;
#: `cmd/<name>` is what the operator sends (tests send broken ones on purpose).
FLEET_TOPICS = {
    "status": "fleet-status.json",
    "state": "fleet-state.json",
    "events": "fleet-event.json",
    "cmd_result": "fleet-command-result.json",
}


def check_fleet(topic: str, payload: bytes) -> None:
    """A payload the box published on `storebox/<id>/<topic>`; topics it does not own and
    empty payloads (a retained message being cleared) are left alone."""
    schema = FLEET_TOPICS.get(topic)
    if schema is None or not payload:
        return
    try:
        doc = json.loads(payload)
    except ValueError as exc:
        raise violation(f"fleet {topic} payload is not JSON ({exc}): {payload[:200]!r}") from None
    check(BASE + schema, doc, f"fleet {topic} payload")
