"""The one box state model.

Every component writes into `BoxState`; the status API, `/metrics`, the LEDs,
the systemd STATUS line and the fleet agent are *views* computed from it on
demand, never copies. Writers call `update()` so that watchers (LEDs, fleet)
wake on change.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Literal

from firmware.events import EventBus

UplinkName = Literal["wired", "lte", "none"]
LinkState = Literal["up", "degraded", "down", "standby", "unknown"]
LedState = Literal["off", "on", "blink", "blink_fast"]


@dataclass
class LinkHealth:
    state: LinkState = "unknown"
    interface: str = ""
    carrier: bool | None = None
    latency_ms: float | None = None
    loss_pct: float | None = None
    since: datetime | None = None
    reason: str | None = None


@dataclass
class SteerView:
    """The gateway's traffic steered to LTE around a wired brownout (failover/steer.py)."""

    steered: bool = False
    since: datetime | None = None
    reason: str | None = None
    destinations: list[str] = field(default_factory=list)
    steers_total: int = 0
    lte_bytes: int = 0  # steered bytes over LTE so far, as of the last steer or unsteer


@dataclass
class UplinkState:
    active: UplinkName = "none"
    since: datetime | None = None
    wired: LinkHealth = field(default_factory=LinkHealth)
    lte: LinkHealth = field(default_factory=LinkHealth)
    steer: SteerView = field(default_factory=SteerView)
    failovers_total: int = 0
    failbacks_total: int = 0


@dataclass
class ModemView:
    """The status document's `modem` section: a view of the modem, not a second state.

    The modem's one state is hw's (`hw.modem.state.ModemState`, folded by the reducer);
    `hw.modem.status.ModemStatus` is its view, and this is that view again as the status
    contract spells it: the published names (`sim`, `model`, `same_carrier_as_wired`),
    enums as lower-case strings, only what the status API, `/metrics`, the LEDs and the
    fleet show. It is written in one place only, the modem component's `apply_snapshot`
    (from each `ModemStatus`); nothing reads the modem from here to decide anything
    about the modem. It stays a separate, mutable dataclass of plain values because
    `BoxState.update` wakes watchers by comparing fields, and `asdict()` of it is the
    JSON the contract fixes.
    """

    present: bool | None = None
    registered: bool | None = None
    registration: str | None = None
    operator: str | None = None
    mcc_mnc: str | None = None
    rat: str | None = None
    signal_dbm: int | None = None
    rsrp_dbm: float | None = None
    rsrq_db: float | None = None
    sinr_db: float | None = None
    data_up: bool | None = None
    ip: str | None = None
    #: The resolvers the network gave the LTE data call (AT+CGCONTRDP); [] while it is
    #: down or the modem does not say. The LAN's DNS forwards to them on LTE when
    #: `lte.dns` is not configured (`firmware.lan.resolvers`).
    dns: list[str] = field(default_factory=list)
    sim: str | None = None
    sim_fault: str | None = None
    sim_slot: int | None = None
    sim_mcc_mnc: str | None = None
    model: str | None = None
    same_carrier_as_wired: bool | None = None
    recovery_step: str | None = None
    resets_total: int = 0
    #: Why the last recovery rung was taken (no_answer, port_closed, unexpected_reboot,
    #: error_storm, registration_lost); quirks never are a reason.
    last_reset_reason: str | None = None
    #: Answers that did not parse: the last good readings were kept, nothing was reset.
    parse_errors: int = 0
    #: Why LTE is not connected, in plain language ("no SIM", "radio off", "SIM rejected
    #: by the network: plan expired...?"); None while the data call is up.
    not_connected_reason: str | None = None
    #: The network's EMM reject cause (3GPP TS 24.301) when it denied registration.
    reject_cause: int | None = None
    #: The SIM's IMSI masked to MCC+MNC and its last 4 digits (personal data).
    imsi: str | None = None


@dataclass
class PaymentsState:
    queued: int = 0
    queued_amount: int = 0
    oldest_queued_at: datetime | None = None
    forwarded_total: int = 0
    declined_after_offline_total: int = 0
    dead: int = 0
    quarantined: int = 0
    mode: Literal["online", "offline", "unknown"] = "unknown"
    #: How kept cards are protected: sealed to the gateway, encrypted here, or not at all
    #: (then offline payments are declined `cannot_protect_card`).
    protection: Literal["sealed", "local", "none", "unknown"] = "unknown"
    seal_kid: str | None = None
    key_provider: str | None = None
    #: Problems a person must fix (codes, e.g. "no_merchant_key"); each also an event.
    faults: list[str] = field(default_factory=list)


@dataclass
class FleetState:
    """The fleet agent's link to the MQTT broker (`firmware.fleet`)."""

    link: Literal["disabled", "connecting", "up", "down"] = "disabled"
    broker: str | None = None
    since: datetime | None = None
    last_error: str | None = None


@dataclass
class OutagesState:
    """The outage ledger (`firmware.ledger.outages`, docs/cli.md)."""

    #: Uplinks whose outage is open now ("wired", "lte").
    open: list[str] = field(default_factory=list)
    #: Outages recorded, ended or not, since the ledger began.
    total: int = 0
    #: The last outages that ended (oldest first), each its ledger row with its "id".
    ended: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class LanState:
    """The shop LAN's DHCP and DNS (`firmware.components.lan_services`)."""

    enabled: bool = False
    interfaces: list[str] = field(default_factory=list)
    dhcp: bool = False
    #: Leases dnsmasq holds that have not expired.
    leases: int = 0
    #: The uplink whose resolvers the LAN's DNS forwards to, and those servers in order
    #: (the uplink's own, then lan.fallback_dns), each asked through `upstream_interface`.
    upstream_uplink: Literal["wired", "lte"] | None = None
    upstream_interface: str | None = None
    upstream_servers: list[str] = field(default_factory=list)
    since: datetime | None = None


@dataclass
class ConnectionCounters:
    """The POS API's TCP connections (`firmware.http_limits`). Written on every connection
    without waking watchers: read when a status is asked for."""

    open: int = 0
    peak: int = 0
    limit: int = 0
    per_address_limit: int = 0
    refused_total: int = 0
    evicted_total: int = 0
    timed_out_total: int = 0
    handshake_failed_total: int = 0
    accept_errors_total: int = 0


@dataclass
class ApiState:
    """How the POS API is served (docs/openapi.json): TLS, the certificate to pin, listeners."""

    tls: bool = False
    #: hex SHA-256 of the DER certificate (what a POS pins); None without TLS
    cert_sha256: str | None = None
    #: base64 SHA-256 of the certificate's public key (curl --pinnedpubkey sha256//…)
    spki_sha256_b64: str | None = None
    cert_source: Literal["box", "operator"] | None = None
    cert_subject: str | None = None
    cert_not_after: datetime | None = None
    client_certificates: bool = False
    listen: list[str] = field(default_factory=list)
    #: Problems a person must fix (e.g. "plain_http_on_lan"); each also an event.
    faults: list[str] = field(default_factory=list)
    connections: ConnectionCounters = field(default_factory=ConnectionCounters)


@dataclass
class ComponentState:
    state: Literal["starting", "running", "restarting", "stopped", "failed"] = "starting"
    restarts: int = 0
    last_error: str | None = None
    last_error_at: datetime | None = None


class BoxState:
    """The single source of truth about the box, shared by every component."""

    def __init__(self, device_id: str, version: str,
                 wall: Callable[[], datetime] | None = None) -> None:
        self.device_id = device_id
        self.version = version
        self.wall = wall or (lambda: datetime.now(UTC))
        self.started_at = self.wall()
        self.phase: Literal["starting", "running", "stopping"] = "starting"
        self.uplink = UplinkState()
        self.modem = ModemView()
        self.payments = PaymentsState()
        self.leds: dict[str, LedState] = {}
        self.fleet = FleetState()
        self.api = ApiState()
        self.outages = OutagesState()
        self.lan = LanState()
        self.components: dict[str, ComponentState] = {}
        self.events = EventBus(wall=self.wall)
        self.revision = 0
        self._waiters: set[asyncio.Future[None]] = set()
        self._listeners: list[Callable[[], None]] = []

    def update(self, section: Any, **values: Any) -> bool:
        """Set fields on one of the state's sections; wake watchers if anything changed."""
        names = {f.name for f in fields(section)}
        changed = False
        for name, value in values.items():
            if name not in names:
                raise AttributeError(f"{type(section).__name__} has no field {name!r}")
            if getattr(section, name) != value:
                setattr(section, name, value)
                changed = True
        if changed:
            self.touch()
        return changed

    def touch(self) -> None:
        """Record that something changed and wake everyone waiting for a change."""
        self.revision += 1
        for listener in self._listeners:
            listener()
        waiters, self._waiters = self._waiters, set()
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def on_change(self, listener: Callable[[], None]) -> None:
        """Call `listener` synchronously after every change (used by cheap views)."""
        self._listeners.append(listener)

    async def wait_changed(self, seen: int) -> int:
        """Wait until the revision moves past `seen`; return the new revision."""
        while self.revision == seen:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.add(waiter)
            try:
                await waiter
            finally:
                self._waiters.discard(waiter)
        return self.revision

    def component(self, name: str) -> ComponentState:
        return self.components.setdefault(name, ComponentState())
