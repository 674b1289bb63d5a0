"""The simulator's admin endpoints (``/_sim/*``): stats, faults, rules, the stored
authorizations, reset. Never faulted, no authentication: bind the simulator to loopback."""

from __future__ import annotations

import json
from typing import Any, Protocol

from aiohttp import web

from lab.gateway_sim.faults import Faults
from lab.gateway_sim.ledger import SimStats, StoredAuthorization
from lab.gateway_sim.rules import DeclineRules
from lab.gateway_sim.wire import error


class SimControl(Protocol):
    """What the admin endpoints drive: the `GatewaySimulator`."""

    @property
    def faults(self) -> Faults: ...

    @property
    def rules(self) -> DeclineRules: ...

    @property
    def has_admin_listener(self) -> bool: ...

    async def set_faults(self, faults: Faults | None = None, /, **changes: Any) -> Faults: ...

    def set_rules(self, rules: DeclineRules | None = None, /,
                  **changes: Any) -> DeclineRules: ...

    def stats(self) -> SimStats: ...

    def authorizations(self) -> list[StoredAuthorization]: ...

    def reset(self) -> None: ...


class AdminRoutes:
    def __init__(self, sim: SimControl) -> None:
        self._sim = sim

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/_sim/stats", self._handle_stats),
            web.get("/_sim/faults", self._handle_get_faults),
            web.post("/_sim/faults", self._handle_post_faults),
            web.delete("/_sim/faults", self._handle_delete_faults),
            web.get("/_sim/rules", self._handle_get_rules),
            web.post("/_sim/rules", self._handle_post_rules),
            web.get("/_sim/authorizations", self._handle_list),
            web.post("/_sim/reset", self._handle_reset),
        ]

    async def _handle_stats(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self._sim.stats().to_json())

    async def _handle_get_faults(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self._sim.faults.to_json())

    async def _handle_post_faults(self, request: web.Request) -> web.StreamResponse:
        try:
            changes = await _json_object(request, "fault fields")
            new = self._sim.faults.merged(changes)
        except (ValueError, TypeError, UnicodeDecodeError) as exc:
            return error(400, "invalid_faults", str(exc))
        if new.down and new.down_mode == "refuse" and not self._sim.has_admin_listener:
            return error(400, "invalid_faults", "down_mode=refuse would close the listener "
                         "serving this endpoint; start with a separate admin listener")
        return web.json_response((await self._sim.set_faults(new)).to_json())

    async def _handle_delete_faults(self, request: web.Request) -> web.StreamResponse:
        return web.json_response((await self._sim.set_faults(Faults())).to_json())

    async def _handle_get_rules(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self._sim.rules.to_json())

    async def _handle_post_rules(self, request: web.Request) -> web.StreamResponse:
        try:
            changes = await _json_object(request, "rule fields")
            rules = self._sim.set_rules(**changes)
        except (ValueError, TypeError, UnicodeDecodeError) as exc:
            return error(400, "invalid_rules", str(exc))
        return web.json_response(rules.to_json())

    async def _handle_list(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(
            {"authorizations": [a.to_json() for a in self._sim.authorizations()]})

    async def _handle_reset(self, request: web.Request) -> web.StreamResponse:
        self._sim.reset()
        return web.json_response({"reset": True})


async def _json_object(request: web.Request, what: str) -> dict[str, Any]:
    """The request's body, which must be a JSON object of `what`; ValueError (or
    UnicodeDecodeError) otherwise, answered 400 by the caller."""
    body = json.loads(await request.read())
    if not isinstance(body, dict):
        raise ValueError(f"the body must be a JSON object of {what}")
    return body
