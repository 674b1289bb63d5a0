"""docs/ is the product's own description of its interfaces: it must stay true.

The answers themselves are checked wherever the tests see them (tests/support/openapi.py,
tests/support/schemas.py); here: the documents are well formed, agree with each other and
with the code's tables, and docs/config.md is what the schema generates.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer
from jsonschema import Draft202012Validator

from firmware.api import OPEN, ROUTE_SCOPES, build_app
from firmware.config import reference
from firmware.config.schema import Config
from firmware.fleet.topics import EVENT_KINDS, EVENT_KINDS_REV2
from firmware.metrics import registry_for
from firmware.state import BoxState
from firmware.status import status_document
from firmware.tokens import TokenStore
from tests.support import openapi
from tests.support.schemas import DOCS, SCHEMAS, ContractViolation, check_status, load

CONTRACTS_SECTIONS = ("1", "2", "3", "3a", "4", "5", "5a", "6", "6a", "7", "8", "9")


def test_docs_config_md_is_generated_from_the_schema() -> None:
    """Regenerate with `python -m firmware.config.reference > docs/config.md`."""
    assert (DOCS / "config.md").read_text(encoding="utf-8") == reference.render(), \
        "docs/config.md is stale: python -m firmware.config.reference > docs/config.md"


def test_every_config_key_is_in_the_reference() -> None:
    text = (DOCS / "config.md").read_text(encoding="utf-8")
    for name, table in reference.tables():
        assert f"## [{name}]" in text
        for key in table.__dataclass_fields__:
            assert f"| `{key}`" in text, f"{name}.{key}"
    assert {name for name, _ in reference.tables()} == \
        {f for f in Config.__dataclass_fields__ if f != "source"}


@pytest.mark.parametrize("path", sorted(SCHEMAS.glob("*.json")), ids=lambda p: p.name)
def test_each_json_schema_is_valid_draft_2020_12(path: Path) -> None:
    schema = json.loads(path.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    assert schema["$id"].endswith("/" + path.name)


def test_openapi_is_3_1_and_its_schemas_are_valid() -> None:
    spec = openapi.spec()
    assert spec["openapi"].startswith("3.1")
    for name, schema in spec["components"]["schemas"].items():
        Draft202012Validator.check_schema(schema), name
    # the status document is the same schema in both places
    assert spec["components"]["schemas"]["Status"] == load("schemas/status.json")


def test_openapi_operations_match_route_scopes() -> None:
    """The code's route table and the document list the same routes with the same scope."""
    documented = {}
    for path, item in openapi.spec()["paths"].items():
        for method, op in item.items():
            security = op.get("security", openapi.spec()["security"])
            scopes = {s for requirement in security for s in requirement.get("bearerToken", [])}
            documented[(method.upper(), path)] = OPEN if security == [] else scopes.pop()
            assert not scopes, (method, path, "one scope per operation")
    assert documented == ROUTE_SCOPES


def test_event_kinds_published_are_documented() -> None:
    kinds = set(load("schemas/fleet-event.json")["properties"]["kind"]["enum"])
    assert kinds == EVENT_KINDS | EVENT_KINDS_REV2


def test_docs_readme_maps_every_contracts_section() -> None:
    text = (DOCS / "README.md").read_text(encoding="utf-8")
    for section in CONTRACTS_SECTIONS:
        assert f"| §{section} |" in text, section
    for name in ("openapi.json", "gateway-protocol.md", "mqtt.md", "cli.md", "config.md",
                 *(f"schemas/{p.name}" for p in SCHEMAS.glob("*.json"))):
        assert (DOCS / name).exists(), name
        assert name in text, name


async def test_the_box_serves_its_openapi_document(tmp_path: Path) -> None:
    """Open, no token: byte for byte docs/openapi.json."""
    state = BoxState("store-test", "test")
    app = build_app(state, TokenStore(str(tmp_path / "no-tokens")), registry_for(state))
    async with TestClient(TestServer(app), trace_configs=openapi.trace_configs()) as client:
        response = await client.get("/v1/openapi.json")
        assert response.status == 200
        assert response.content_type == "application/json"
        assert await response.read() == (DOCS / "openapi.json").read_bytes()


def test_the_status_document_of_a_new_box_matches_its_schema() -> None:
    check_status(status_document(BoxState("store-0001", "1.2.3")))


def test_the_checker_refuses_what_is_not_documented() -> None:
    with pytest.raises(ContractViolation, match="no such path"):
        openapi.check_response("GET", "/v1/nothing", 404, "application/json", b"{}")
    with pytest.raises(ContractViolation, match="status 418 is not documented"):
        openapi.check_response("GET", "/v1/status", 418, "application/json", b"{}")
    with pytest.raises(ContractViolation, match="does not match"):
        openapi.check_response("GET", "/healthz", 200, "application/json", b'{"ok": 1}')
    with pytest.raises(ContractViolation, match="content type"):
        openapi.check_response("GET", "/healthz", 200, "text/html", b"<p>")
    doc = status_document(BoxState("store-0001", "1.2.3"))
    del doc["uplink"]["active"]
    with pytest.raises(ContractViolation, match="'active' is a required property"):
        check_status(doc)
    from tests.support.schemas import take_violations

    assert len(take_violations()) == 5  # recorded too, and cleared here: not a failure
