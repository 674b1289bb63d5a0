"""Route control through NetworkManager over D-Bus (dbus-fast, asyncio).

When NetworkManager owns the uplinks (`routing.backend = "networkmanager"`), storebox
must not fight it over routes: NetworkManager would re-create its own on the next
change. Instead storebox changes the *route metric of the applied connection*:

    device  = NetworkManager.GetDeviceByIpIface(interface)
    applied, version = Device.GetAppliedConnection(0)
    applied["ipv4"]["route-metric"] = metric   (and "ipv6")
    Device.Reapply(applied, version, 0)

`Reapply` changes the running configuration in place: NetworkManager moves the kernel
routes to the new metric without taking the link down (carrier, ifindex and addresses
are untouched; verified with NetworkManager 1.42). The saved profile is not modified
(no flash writes, the operator's configuration stays theirs), so when NetworkManager
re-activates a connection (cable replugged, modem reconnected) it comes back with the
profile's metric; `ensure_present` notices and reapplies. A concurrent change of the
applied connection (version id mismatch) is retried with the fresh version.

The metric scheme and the order of changes are the same as for netlink
(`failover.routes.plan_metric_changes`); each change waits until the kernel shows the
new metric before the next one is made, so the other uplink's route is always in
place while one uplink's route moves. Kernel routes are read with pyroute2 (netlink),
never changed through it.

Why dbus-fast rather than python-networkmanager: python-networkmanager's last release
is from 2021, it needs the compiled dbus-python bindings (libdbus, a C build on the
box) and a GLib main loop, and it is blocking. dbus-fast is maintained, asyncio-native
(it runs on the daemon's own loop), pure Python with optional Cython speed-ups, and we
only need four documented calls of NetworkManager's D-Bus API.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterable, Mapping
from typing import Any

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

from failover import netlink_reads
from failover.errors import (
    NetworkManagerError,
    RouteError,
    UplinkUnavailableError,
)
from failover.routes import (
    MetricScheme,
    Uplink,
    UplinkName,
    plan_metric_changes,
    uplink_map,
)
from failover.routes_netlink import KernelState, MetricRouteControl, Netlink

NM_BUS = "org.freedesktop.NetworkManager"
NM_PATH = "/org/freedesktop/NetworkManager"
NM_IFACE = "org.freedesktop.NetworkManager"
DEVICE_IFACE = "org.freedesktop.NetworkManager.Device"
ACTIVE_IFACE = "org.freedesktop.NetworkManager.Connection.Active"
PROPS_IFACE = "org.freedesktop.DBus.Properties"
_UNAVAILABLE = ("org.freedesktop.NetworkManager.UnknownDevice",
                "org.freedesktop.NetworkManager.Device.NotActive")
_VERSION_MISMATCH = "org.freedesktop.NetworkManager.Device.VersionIdMismatch"
_FAMILIES = (socket.AF_INET, socket.AF_INET6)

Settings = dict[str, dict[str, Variant]]


def with_route_metric(settings: Settings, metric: int) -> Settings:
    """A copy of an applied connection with `metric` as its IPv4/IPv6 route metric.

    The deprecated `addresses`/`routes` forms are dropped when the `*-data` forms are
    present: NetworkManager ignores `address-data` when `addresses` is sent too."""
    new = {name: dict(section) for name, section in settings.items()}
    for family in ("ipv4", "ipv6"):
        section = new.get(family)
        if section is None:
            continue
        for old, modern in (("addresses", "address-data"), ("routes", "route-data")):
            if old in section and modern in section:
                del section[old]
        section["route-metric"] = Variant("x", metric)
    return new


def applied_metric(settings: Settings, family: str = "ipv4") -> int | None:
    value = settings.get(family, {}).get("route-metric")
    return int(value.value) if value is not None else None


class NetworkManagerRoutes(MetricRouteControl):
    """`RouteController` via NetworkManager's D-Bus API. See the module docstring."""

    backend = "networkmanager"

    def __init__(self, uplinks: Iterable[Uplink], metrics: MetricScheme | None = None, *,
                 bus_address: str | None = None, netns: str | None = None,
                 call_timeout: float = 10.0, settle_timeout: float = 5.0) -> None:
        self.uplinks: Mapping[UplinkName, Uplink] = uplink_map(uplinks)
        self.metrics = metrics or MetricScheme()
        self.bus_address = bus_address  # None: DBUS_SYSTEM_BUS_ADDRESS or the default
        self.call_timeout = call_timeout
        self.settle_timeout = settle_timeout
        self.netlink = Netlink(netns, share=False)  # it polls for NetworkManager's work
        self._bus: MessageBus | None = None
        self._bus_lock = asyncio.Lock()
        self._lock = asyncio.Lock()
        self._active: UplinkName | None = None
        self._decided = False

    # -- RouteController --------------------------------------------------------------

    async def describe(self) -> dict[str, Any]:
        state = await self.netlink.state(_FAMILIES)
        names = state.names
        uplinks: dict[str, Any] = {}
        for name, uplink in self.uplinks.items():
            link = state.links.get(uplink.interface)
            metric = state.best_metric(socket.AF_INET, link.index) if link else None
            entry: dict[str, Any] = {
                "interface": uplink.interface, "exists": link is not None,
                "carrier": link.carrier if link else False,
                "addresses": link.global_addresses() if link else [],
                "role": self.metrics.role(name, metric), "metric": metric,
                "routes": ([r.as_dict(names, -1) for family in _FAMILIES
                            for r in state.defaults_on(family, link.index)] if link else [])}
            try:
                entry["networkmanager"] = await self._nm_info(name)
            except RouteError as exc:
                entry["networkmanager"] = {"error": exc.reason}
            uplinks[name] = entry
        active = self._active
        if not self._decided:
            active = next((n for n in self.uplinks if uplinks[n]["role"] == "active"), None)
        return {"backend": self.backend, "active": active, "metrics": self.metrics.as_dict(),
                "uplinks": uplinks}

    async def close(self) -> None:
        async with self._bus_lock:
            if self._bus is not None:
                self._bus.disconnect()
                self._bus = None
        await self.netlink.close()

    # -- internals --------------------------------------------------------------------

    async def _activate_locked(self, name: UplinkName) -> None:
        uplink = self.uplinks[name]
        await self._applied(name)  # raises UplinkUnavailableError: no device / not active
        state = await self.netlink.state((socket.AF_INET,))
        current = self._current(state)
        if current[name] is None:
            raise UplinkUnavailableError(
                "activate", name, uplink.interface,
                "NetworkManager has no IPv4 default route on it (no gateway, never-default, "
                "or still activating)")
        steps = plan_metric_changes(current, name, self.metrics)
        for step in steps:
            await self._set_metric("activate", step.uplink, step.metric)
        if not steps:
            await self._set_metric("activate", name, self.metrics.active)

    async def _set_metric(self, operation: str, name: UplinkName, metric: int) -> None:
        """Reapply `name`'s connection with `metric`, then wait for the kernel to agree
        (a route write: dumps shared before it are read again, `failover.netlink_reads`)."""
        netlink_reads.bump_writes()
        try:
            await self._reapply_metric(operation, name, metric)
        finally:
            netlink_reads.bump_writes()

    async def _reapply_metric(self, operation: str, name: UplinkName, metric: int) -> None:
        uplink = self.uplinks[name]
        before = await self.netlink.state(_FAMILIES)
        link = before.links.get(uplink.interface)
        had: set[int] = {int(f) for f in _FAMILIES
                         if link is not None and before.defaults_on(f, link.index)}
        for attempt in range(3):
            device, settings, version = await self._applied(name)
            metrics = {applied_metric(settings, f) for f in ("ipv4", "ipv6") if f in settings}
            if metrics == {metric} and self._kernel_agrees(before, uplink, had, metric):
                return
            try:
                await self._call(operation, name, device, DEVICE_IFACE, "Reapply", "a{sa{sv}}tu",
                                 [with_route_metric(settings, metric), version, 0])
                break
            except NetworkManagerError as exc:
                if exc.dbus_error == _VERSION_MISMATCH and attempt < 2:
                    continue
                raise
        await self._settle(operation, uplink, had, metric)

    def _kernel_agrees(self, state: KernelState, uplink: Uplink, families: set[int],
                       metric: int) -> bool:
        link = state.links.get(uplink.interface)
        if link is None:
            return False
        return all({r.metric for r in state.defaults_on(f, link.index)} == {metric}
                   for f in families)

    async def _settle(self, operation: str, uplink: Uplink, families: set[int],
                      metric: int) -> None:
        """Wait until the kernel's default routes on `uplink` all carry `metric`."""
        if not families:
            return
        deadline = time.monotonic() + self.settle_timeout
        delay = 0.005
        while True:
            state = await self.netlink.state(tuple(families))
            if self._kernel_agrees(state, uplink, families, metric):
                return
            if time.monotonic() > deadline:
                link = state.links.get(uplink.interface)
                seen = sorted({r.metric for f in families
                               for r in (state.defaults_on(f, link.index) if link else [])})
                raise RouteError(operation, uplink.name, uplink.interface,
                                 f"NetworkManager accepted metric {metric} but the kernel "
                                 f"still shows {seen} after {self.settle_timeout} s")
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)

    async def _applied(self, name: UplinkName) -> tuple[str, Settings, int]:
        uplink = self.uplinks[name]
        body = await self._call("find device", name, NM_PATH, NM_IFACE, "GetDeviceByIpIface",
                                "s", [uplink.interface])
        device = str(body[0])
        body = await self._call("get applied connection", name, device, DEVICE_IFACE,
                                "GetAppliedConnection", "u", [0])
        return device, body[0], int(body[1])

    async def _nm_info(self, name: UplinkName) -> dict[str, Any]:
        device, settings, _ = await self._applied(name)
        info: dict[str, Any] = {"device": device,
                                "applied_metric": applied_metric(settings),
                                "connection": None}
        connection = settings.get("connection", {})
        if "id" in connection:
            info["connection"] = str(connection["id"].value)
        return info

    async def _connect(self) -> MessageBus:
        async with self._bus_lock:
            if self._bus is None or not self._bus.connected:
                bus = MessageBus(bus_address=self.bus_address, bus_type=BusType.SYSTEM)
                try:
                    async with asyncio.timeout(self.call_timeout):
                        await bus.connect()
                except (OSError, TimeoutError) as exc:
                    raise NetworkManagerError("connect", None, None, "connect",
                                              f"system bus unreachable: {exc!r}") from exc
                self._bus = bus
            return self._bus

    async def _call(self, operation: str, name: UplinkName, path: str, interface: str,
                    member: str, signature: str, body: list[Any]) -> list[Any]:
        bus = await self._connect()
        message = Message(destination=NM_BUS, path=path, interface=interface, member=member,
                          signature=signature, body=body)
        try:
            async with asyncio.timeout(self.call_timeout):
                reply = await bus.call(message)
        except TimeoutError as exc:
            raise NetworkManagerError(operation, name, self.uplinks[name].interface, "timeout",
                                      f"{member} got no answer in {self.call_timeout} s"
                                      ) from exc
        except (OSError, EOFError) as exc:
            self._bus = None
            raise NetworkManagerError(operation, name, self.uplinks[name].interface,
                                      "disconnected", repr(exc)) from exc
        if reply.message_type == MessageType.ERROR:
            error = reply.error_name or "unknown"
            text = str(reply.body[0]) if reply.body else ""
            if error in _UNAVAILABLE:
                raise UplinkUnavailableError(operation, name, self.uplinks[name].interface,
                                             f"{error}: {text}")
            raise NetworkManagerError(operation, name, self.uplinks[name].interface, error, text)
        return list(reply.body)
