"""`HttpGateway`: the `Gateway` protocol (docs/gateway-protocol.md) over HTTP with aiohttp.

Outcome mapping of `authorize`:

- the connection could not be made (refused, DNS, TLS, connect timeout: nothing of
  the request was sent) → `GatewayUnavailable`;
- the connection was made and then the call timed out or the connection broke
  before a status line arrived → `UnknownOutcome` (it may have been processed);
- 200 with a well-formed body → `GatewayResult`; a 2xx whose body is malformed or
  cannot be read in time → `UnknownOutcome`;
- 409, 429 and 5xx → `GatewayUnavailable` with `status` and `retry_after_s` from
  ``Retry-After`` (delay-seconds or an HTTP-date); 3xx (redirects are never followed)
  → `GatewayUnavailable` too: the request was not processed;
- any other 4xx → `GatewayRejected`.

`lookup`: 200 → the result, 404 → None, anything else (including connection errors,
timeouts and a malformed 200) → `GatewayUnavailable`.

"Was anything sent?" is told by an aiohttp `TraceConfig` that marks the attempt once a
connection is established or reused. Sessions this class creates carry it; an injected
session should be created with ``trace_configs=[HttpGateway.trace_config()]``, or else
every failure after the connect step is conservatively reported as `UnknownOutcome`.
Exception messages and log lines carry the payment id, never the PAN or the key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import SimpleNamespace, TracebackType
from typing import Any, Self
from urllib.parse import quote

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from payments_cache.errors import GatewayRejected, GatewayUnavailable, UnknownOutcome
from payments_cache.gateway import AuthorizationPayload
from payments_cache.models import GatewayResult

__all__ = ["HttpGateway", "parse_retry_after"]

_log = logging.getLogger(__name__)

_MAX_REASON = 200
_DIGIT_RUN = re.compile(r"\d(?:[ -]?\d){11,18}")


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value (delay-seconds or HTTP-date), never
    negative; None when absent or unparseable."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        if seconds != seconds or seconds in (float("inf"), float("-inf")):  # NaN, inf
            return None
        return max(seconds, 0.0)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


def _scrub(text: str) -> str:
    """Shorten and remove anything that looks like a card number."""
    text = _DIGIT_RUN.sub("[redacted]", text)
    return text if len(text) <= _MAX_REASON else text[:_MAX_REASON] + "…"


def _describe(exc: BaseException) -> str:
    detail = str(exc)
    return _scrub(f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__)


@dataclass
class _Attempt:
    """What is known about one HTTP exchange, for classifying its failure."""

    tracked: bool
    connected: bool = False
    status: int | None = None
    headers: CIMultiDictProxy[str] | None = None

    @property
    def maybe_sent(self) -> bool:
        return self.connected or not self.tracked


async def _on_connected(session: aiohttp.ClientSession, ctx: SimpleNamespace,
                        params: aiohttp.TraceConnectionCreateEndParams
                        | aiohttp.TraceConnectionReuseconnParams) -> None:
    attempt = ctx.trace_request_ctx
    if isinstance(attempt, _Attempt):
        attempt.connected = True


_TRACE = aiohttp.TraceConfig()
_TRACE.on_connection_create_end.append(_on_connected)
_TRACE.on_connection_reuseconn.append(_on_connected)
_TRACE.freeze()


@dataclass(frozen=True)
class _Reply:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes | None  # None: a non-2xx body that could not be read


def _parse_result(body: bytes | None, payment_id: str) -> GatewayResult:
    """The 200 body as a `GatewayResult`; ValueError when it is not one."""
    if body is None:
        raise ValueError("no body")
    data = json.loads(body)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    status = data.get("status")
    if status not in ("approved", "declined"):
        raise ValueError("status is neither approved nor declined")
    auth_code = data.get("auth_code")
    decline_code = data.get("decline_code")
    if not isinstance(auth_code, str | None) or not isinstance(decline_code, str | None):
        raise ValueError("auth_code/decline_code must be strings or null")
    echoed = data.get("payment_id")
    if echoed is not None and echoed != payment_id:
        raise ValueError("the answer is for another payment_id")
    if status == "approved":
        return GatewayResult(status="approved", auth_code=auth_code, decline_code=decline_code)
    return GatewayResult(status="declined", auth_code=auth_code, decline_code=decline_code)


def _is_json_object(body: bytes | None) -> bool:
    try:
        return isinstance(json.loads(body or b""), dict)
    except (ValueError, UnicodeDecodeError):
        return False


def _error_reason(reply: _Reply) -> str:
    """``HTTP 422 idempotency_conflict: …`` from the gateway's error body, scrubbed."""
    reason = f"HTTP {reply.status}"
    if reply.body:
        try:
            data: Any = json.loads(reply.body)
        except ValueError:
            data = None
        err = data.get("error") if isinstance(data, dict) else None
        if isinstance(err, dict):
            code, message = err.get("code"), err.get("message")
            if isinstance(code, str):
                reason += f" {code}"
            if isinstance(message, str):
                reason += f": {message}"
    return _scrub(reason)


def _is_transient(status: int) -> bool:
    return status in (409, 429) or status >= 500 or 300 <= status < 400


class HttpGateway:
    """The gateway over HTTP. The `aiohttp.ClientSession` is created on first use and
    closed by `close` (or leaving ``async with``); an injected `session` or `connector`
    belongs to the caller and is left open."""

    def __init__(self, base_url: str, merchant_key: str, *,
                 session: aiohttp.ClientSession | None = None,
                 connector: aiohttp.BaseConnector | None = None) -> None:
        url = URL(base_url.rstrip("/"))
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError("base_url must be an http:// or https:// URL")
        if not merchant_key:
            raise ValueError("merchant_key must not be empty")
        if session is not None and connector is not None:
            raise ValueError("pass either a session or a connector, not both")
        self._base_url = str(url)
        self._merchant_key = merchant_key
        self._injected_session = session
        self._connector = connector
        self._own_session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"<HttpGateway {self._base_url}>"

    @staticmethod
    def trace_config() -> aiohttp.TraceConfig:
        """The trace an injected session needs for exact "was it sent?" answers."""
        return _TRACE

    @property
    def base_url(self) -> str:
        return self._base_url

    def _session(self) -> aiohttp.ClientSession:
        if self._injected_session is not None:
            return self._injected_session
        if self._own_session is None or self._own_session.closed:
            self._own_session = aiohttp.ClientSession(
                connector=self._connector, connector_owner=self._connector is None,
                timeout=aiohttp.ClientTimeout(total=None), trace_configs=[_TRACE])
        return self._own_session

    async def close(self) -> None:
        """Close the session this object created (not an injected one)."""
        session, self._own_session = self._own_session, None
        if session is not None:
            await session.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.close()

    async def _exchange(self, method: str, url: URL, attempt: _Attempt, timeout_s: float,
                        headers: dict[str, str], data: bytes | None = None) -> _Reply:
        headers = {"Authorization": f"Bearer {self._merchant_key}",
                   "Accept": "application/json", **headers}
        async with asyncio.timeout(timeout_s):
            async with self._session().request(
                    method, url, data=data, headers=headers, allow_redirects=False,
                    trace_request_ctx=attempt) as resp:
                attempt.status, attempt.headers = resp.status, resp.headers
                if 200 <= resp.status < 300:
                    return _Reply(resp.status, resp.headers, await resp.read())
                try:
                    body: bytes | None = await resp.read()
                except aiohttp.ClientError:
                    body = None  # the status says it all
                return _Reply(resp.status, resp.headers, body)

    def _new_attempt(self) -> _Attempt:
        session = self._session()
        return _Attempt(tracked=_TRACE in session.trace_configs)

    async def authorize(self, payload: AuthorizationPayload, timeout_s: float) -> GatewayResult:
        """POST the authorization under ``Idempotency-Key: payload.payment_id``."""
        pid = payload.payment_id
        body = json.dumps(payload.to_json(), sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False).encode()
        url = URL(f"{self._base_url}/v1/authorizations")
        headers = {"Idempotency-Key": pid, "Content-Type": "application/json"}
        attempt = self._new_attempt()
        try:
            reply = await self._exchange("POST", url, attempt, timeout_s, headers, body)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise self._log_unavailable(pid, f"cannot connect: {_describe(exc)}") from exc
        except TimeoutError as exc:
            status, got = attempt.status, attempt.headers
            if status is not None and got is not None and not 200 <= status < 300:
                # The status line arrived; only reading the error body timed out.
                raise self._status_error(pid, _Reply(status, got, None)) from exc
            if not attempt.maybe_sent:
                raise self._log_unavailable(
                    pid, f"timed out after {timeout_s}s before the request was sent") from exc
            raise self._log_unknown(
                pid, f"timed out after {timeout_s}s waiting for the answer",
                timed_out=True) from exc
        except (aiohttp.ClientError, OSError) as exc:
            if not attempt.maybe_sent:
                raise self._log_unavailable(pid, f"request failed before it was sent: "
                                            f"{_describe(exc)}") from exc
            raise self._log_unknown(pid, f"connection lost after sending: "
                                    f"{_describe(exc)}") from exc
        if 200 <= reply.status < 300:
            try:
                result = _parse_result(reply.body, pid)
            except (ValueError, UnicodeDecodeError) as exc:
                raise self._log_unknown(pid, f"malformed HTTP {reply.status} answer: "
                                        f"{_scrub(str(exc))}", malformed=True) from exc
            _log.debug("authorize %s: %s", pid, result.status)
            return result
        raise self._status_error(pid, reply)

    async def lookup(self, payment_id: str, timeout_s: float) -> GatewayResult | None:
        """GET the stored result; None when the gateway never received the payment."""
        url = URL(f"{self._base_url}/v1/authorizations/{quote(payment_id, safe='')}",
                  encoded=True)
        attempt = self._new_attempt()
        try:
            reply = await self._exchange("GET", url, attempt, timeout_s, {})
        except TimeoutError as exc:
            raise self._log_unavailable(payment_id, f"lookup timed out after {timeout_s}s",
                                        status=attempt.status) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise self._log_unavailable(payment_id, f"lookup failed: {_describe(exc)}",
                                        status=attempt.status) from exc
        if reply.status == 200:
            try:
                result = _parse_result(reply.body, payment_id)
            except (ValueError, UnicodeDecodeError) as exc:
                raise self._log_unavailable(payment_id, f"malformed lookup answer: "
                                            f"{_scrub(str(exc))}", status=200) from exc
            _log.debug("lookup %s: %s", payment_id, result.status)
            return result
        if reply.status == 404 and _is_json_object(reply.body):
            _log.debug("lookup %s: not found", payment_id)
            return None
        if reply.status == 404:  # a proxy's or web server's page, not the gateway's answer
            raise self._log_unavailable(payment_id, "lookup answered 404 without the "
                                        "gateway's JSON error body: not trusted as 'never "
                                        "received'", status=404)
        raise self._log_unavailable(
            payment_id, f"lookup answered {_error_reason(reply)}", status=reply.status,
            retry_after_s=parse_retry_after(reply.headers.get("Retry-After")))

    def _status_error(self, payment_id: str, reply: _Reply) -> Exception:
        reason = _error_reason(reply)
        if _is_transient(reply.status):
            return self._log_unavailable(
                payment_id, reason, status=reply.status,
                retry_after_s=parse_retry_after(reply.headers.get("Retry-After")))
        _log.warning("authorize %s rejected: %s", payment_id, reason)
        return GatewayRejected(payment_id, reply.status, reason)

    @staticmethod
    def _log_unavailable(payment_id: str, reason: str, *, status: int | None = None,
                         retry_after_s: float | None = None) -> GatewayUnavailable:
        _log.info("gateway unavailable for %s: %s", payment_id, reason)
        return GatewayUnavailable(payment_id, reason, retry_after_s=retry_after_s,
                                  status=status)

    @staticmethod
    def _log_unknown(payment_id: str, reason: str, timed_out: bool = False,
                     malformed: bool = False) -> UnknownOutcome:
        _log.warning("outcome unknown for %s: %s", payment_id, reason)
        return UnknownOutcome(payment_id, reason, timed_out, malformed)

