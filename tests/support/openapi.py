"""Every answer the API tests get, held against docs/openapi.json.

The document is the POS API's contract for integrators; these checks keep it true. For a
response to `METHOD /path` (query string ignored, HEAD as GET without a body):

- the path must match one of the document's paths and the method one of its operations;
- the status must be one the operation lists;
- the content type must be one that response lists, and a JSON body must validate
  against its schema (JSON Schema 2020-12, `tests.support.schemas`).

Anything else is a `ContractViolation`. Hooks, so that tests need no change of their own:

- `trace_configs()`: for an aiohttp session talking to the box (`pinned_session`, the
  in-process `TestClient`s of the API tests);
- `checked_get_json`: `firmware.cli.client.get_json` with the answer checked (tests/
  conftest.py puts it in place of the CLI's and the daemon fixture's);
- `check_response` / `check_answer` for anything else.

A test that sends requests to paths the box does not have on purpose (a 404 test) uses a
client without the trace.
"""

from __future__ import annotations

import functools
import re
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from firmware.cli.client import get_json
from tests.support.schemas import OPENAPI_URI, check, load, violation


@functools.cache
def spec() -> dict[str, Any]:
    return load("openapi.json")


@functools.cache
def _templates() -> list[tuple[re.Pattern[str], str]]:
    """Each documented path as a regex; literal paths first (/v1/queue/drain before
    /v1/queue/{payment_id}/... never clash, but /v1/openapi.json must not be a template)."""
    out = []
    for template in spec()["paths"]:
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        out.append((re.compile(f"^{pattern}$"), template))
    return sorted(out, key=lambda t: "{" in t[1])


def _escape(segment: str) -> str:
    return segment.replace("~", "~0").replace("/", "~1")


def operation(method: str, path: str) -> tuple[str, dict[str, Any]]:
    """(the JSON pointer of the operation, the operation) for a request; a violation when
    the document has no such route."""
    path = urlsplit(path).path
    method = "get" if method.upper() == "HEAD" else method.lower()
    for pattern, template in _templates():
        if pattern.match(path):
            item = spec()["paths"][template]
            if method not in item:
                raise violation(f"{method.upper()} {path}: docs/openapi.json documents "
                                f"{template} only for {sorted(item)}")
            return f"/paths/{_escape(template)}/{method}", item[method]
    raise violation(f"{method.upper()} {path}: no such path in docs/openapi.json")


def _response(op_pointer: str, op: dict[str, Any], status: int,
              what: str) -> tuple[str, dict[str, Any]]:
    responses = op["responses"]
    key = str(status) if str(status) in responses else "default"
    if key not in responses:
        raise violation(f"{what}: status {status} is not documented (documented: "
                        f"{', '.join(sorted(responses))})")
    pointer = f"{op_pointer}/responses/{key}"
    response = responses[key]
    while "$ref" in response:  # an OpenAPI reference to components/responses
        pointer = response["$ref"].removeprefix("#")
        response = spec()
        for part in pointer.strip("/").split("/"):
            response = response[part.replace("~1", "/").replace("~0", "~")]
    return pointer, response


def check_response(method: str, path: str, status: int, content_type: str | None,
                   body: bytes) -> None:
    """Check one response (raise and record a `ContractViolation` when it is off)."""
    what = f"{method.upper()} {urlsplit(path).path} -> {status}"
    op_pointer, op = operation(method, path)
    pointer, response = _response(op_pointer, op, status, what)
    content = response.get("content", {})
    if method.upper() == "HEAD" or not content:
        return
    media = (content_type or "").split(";")[0].strip().lower()
    if media not in content:
        raise violation(f"{what}: content type {content_type!r}, documented "
                        f"{sorted(content)}")
    if media != "application/json":
        return
    import json

    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise violation(f"{what}: the body is not JSON ({exc}): {body[:200]!r}") from None
    check(f"{OPENAPI_URI}#{pointer}/content/application~1json/schema", doc, what)


def check_answer(method: str, path: str, doc: Any) -> None:
    """A parsed 2xx JSON answer whose exact status the caller no longer knows (the CLI
    client accepts 200 and 202): it must match one of the operation's 2xx responses."""
    what = f"{method.upper()} {urlsplit(path).path} -> 2xx"
    op_pointer, op = operation(method, path)
    successes = sorted(s for s in op["responses"] if s.startswith("2"))
    if not successes:
        raise violation(f"{what}: the operation documents no 2xx answer")
    errors: list[AssertionError] = []
    for status in successes:
        pointer, _ = _response(op_pointer, op, int(status), what)
        try:
            check(f"{OPENAPI_URI}#{pointer}/content/application~1json/schema", doc, what)
            return
        except AssertionError as exc:
            errors.append(exc)
    raise errors[0]


async def _on_request_end(session: aiohttp.ClientSession, context: SimpleNamespace,
                          params: aiohttp.TraceRequestEndParams) -> None:
    response = params.response
    body = b"" if params.method == "HEAD" else await response.read()  # cached for the test
    check_response(params.method, str(params.url.raw_path_qs), response.status,
                   response.headers.get("Content-Type"), body)


def trace_configs() -> list[aiohttp.TraceConfig]:
    """For `aiohttp.ClientSession(trace_configs=...)`: every response is checked."""
    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(_on_request_end)
    return [trace]


def checked_get_json(address: str, path: str, token: str, timeout: float = 5.0,
                     method: str = "GET") -> dict[str, Any]:
    """`firmware.cli.client.get_json`, its answer checked against the document."""
    doc = get_json(address, path, token, timeout=timeout, method=method)
    check_answer(method, path, doc)
    return doc
