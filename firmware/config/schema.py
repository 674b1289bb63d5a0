"""The configuration schema: one frozen dataclass per TOML table.

Every field carries its documentation in ``metadata["doc"]``; a field without a
default is required. Extra checks live in ``metadata["check"]``: a function that
returns an error message for a bad value, or ``None``.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

Check = Callable[[Any], str | None]


def doc(text: str, default: Any = ..., check: Check | None = None) -> Any:
    """A dataclass field with documentation, an optional default and an optional check."""
    meta: dict[str, Any] = {"doc": text}
    if check is not None:
        meta["check"] = check
    if default is ...:
        return field(metadata=meta)
    if isinstance(default, list):
        frozen = list(default)
        return field(default_factory=lambda: list(frozen), metadata=meta)
    if isinstance(default, dict):
        table = dict(default)
        return field(default_factory=lambda: dict(table), metadata=meta)
    return field(default=default, metadata=meta)


def each(check: Callable[[str], str | None]) -> Callable[[list[str]], str | None]:
    """The check of a list from its entries' own: the first entry's problem, or None."""
    def check_all(value: list[str]) -> str | None:
        return next((problem for problem in map(check, value) if problem), None)
    return check_all


def positive(value: Any) -> str | None:
    return None if value > 0 else f"must be greater than 0, got {value!r}"


def non_negative(value: Any) -> str | None:
    return None if value >= 0 else f"must be 0 or more, got {value!r}"


_DEVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def device_id(value: str) -> str | None:
    if _DEVICE_ID.match(value):
        return None
    return (f"must be 1-64 letters, digits, '.', '_' or '-' (it is an MQTT topic level), "
            f"got {value!r}")


def listen_address(value: str) -> str | None:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        return f"must be HOST:PORT with a port from 1 to 65535, got {value!r}"
    return None


def http_url(value: str) -> str | None:
    if re.match(r"^https?://[^/\s]+", value):
        return None
    return f"must be an http:// or https:// URL, got {value!r}"


def mqtt_url(value: str) -> str | None:
    if value == "":
        return None
    if not re.match(r"^mqtts?://[^/\s]+", value):
        return (f"must be an mqtt:// or mqtts:// URL, or \"\" to disable the fleet agent, "
                f"got {value!r}")
    parts = urlsplit(value)
    if parts.username is not None or parts.password is not None:
        return "must not hold credentials: put them in fleet.username and fleet.password_file"
    try:
        _ = parts.port  # raises on a bad port
    except ValueError:
        return f"has a bad port: {value!r}"
    if not parts.hostname:
        return f"has no host: {value!r}"
    return None


def mqtt_keepalive(value: int) -> str | None:
    return None if 5 <= value <= 65535 else f"must be from 5 to 65535 seconds, got {value!r}"


def interface_name(value: str) -> str | None:
    if re.match(r"^[A-Za-z0-9_.:@-]{1,15}$", value):
        return None
    return f"must be a network interface name of 1-15 characters, got {value!r}"


_PROBE_TARGET = re.compile(
    r"^(tcp:[^:\s]+:\d{1,5}|dns:[^:\s]+:[^:\s]+|icmp:[^:\s]+|https?://\S+)$"
)


@each
def probe_target(target: str) -> str | None:
    if _PROBE_TARGET.match(target):
        return None
    return (f"target {target!r} is not one of tcp:HOST:PORT, dns:SERVER:NAME, "
            f"icmp:HOST or an http(s):// URL")


interface_names = each(interface_name)


@each
def cidrs(item: str) -> str | None:
    try:
        ipaddress.ip_network(item, strict=True)
    except ValueError as exc:
        return f"entry {item!r} is not an IP address or CIDR: {exc}"
    return None


@each
def ip_addresses(item: str) -> str | None:
    try:
        ipaddress.ip_address(item)
    except ValueError:
        return f"entry {item!r} is not an IP address"
    return None


@each
def dhcp_ranges(item: str) -> str | None:
    first, sep, last = item.partition("-")
    try:
        low, high = ipaddress.IPv4Address(first.strip()), ipaddress.IPv4Address(last.strip())
    except ValueError:
        return f"entry {item!r} must be FIRST-LAST, two IPv4 addresses"
    if not sep or low > high:
        return f"entry {item!r} must be FIRST-LAST with FIRST <= LAST"
    return None


def lease_time(value: int) -> str | None:
    return None if value >= 120 else f"must be 120 seconds or more (dnsmasq's least), got {value!r}"


#: The LEDs of the panel (what each shows: `firmware.components.leds`).
LED_NAMES: tuple[str, ...] = ("wired", "lte", "offline", "alert")


def led_pin_table(value: dict[str, str]) -> str | None:
    seen: dict[str, str] = {}
    for name, pin in value.items():
        if name not in LED_NAMES:
            hint = difflib.get_close_matches(name, LED_NAMES, n=1)
            return (f"unknown LED {name!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                    + f"; the LEDs are {', '.join(map(repr, LED_NAMES))}")
        if not pin.strip():
            return f"LED {name!r} has an empty pin name {pin!r}"
        if pin in seen:
            return f"LEDs {seen[pin]!r} and {name!r} are both on pin {pin!r}"
        seen[pin] = name
    return None


def currency_code(value: str) -> str | None:
    from payments_cache.currency import MINOR_UNITS

    if value in MINOR_UNITS:
        return None
    return f"must be an active ISO 4217 currency code such as \"KRW\", got {value!r}"


#: The caps a `payments.currency_limits.<CODE>` table may set (minor units of CODE).
CURRENCY_LIMIT_KEYS: tuple[str, ...] = ("offline_max_amount", "offline_max_total",
                                        "velocity_max_amount")
#: Those a `payments.currency_limits.<CODE>` table must set.
CURRENCY_LIMIT_REQUIRED: tuple[str, ...] = ("offline_max_amount", "offline_max_total")


def currency_limit_tables(value: dict[str, dict[str, int]]) -> str | None:
    for code, table in value.items():
        problem = currency_code(code)
        if problem:
            return f"[payments.currency_limits.{code}]: the table name {problem}"
        for key, amount in table.items():
            if key not in CURRENCY_LIMIT_KEYS:
                return (f"[payments.currency_limits.{code}]: unknown key {key!r}; the keys "
                        f"are {', '.join(CURRENCY_LIMIT_KEYS)}")
            if amount < 0:
                return f"[payments.currency_limits.{code}]: {key} must be 0 or more, got {amount}"
        missing = [k for k in CURRENCY_LIMIT_REQUIRED if k not in table]
        if missing:
            return f"[payments.currency_limits.{code}]: {' and '.join(missing)} must be set"
    return None


@each
def bins(item: str) -> str | None:
    lo, _, hi = item.partition("-")
    if not lo.isdigit() or (hi and not hi.isdigit()) or not 1 <= len(lo) <= 8:
        return f"entry {item!r} must be a BIN prefix of 1-8 digits or a range LOW-HIGH"
    return None


@dataclass(frozen=True)
class DeviceConfig:
    """Who this box is and where it keeps its state."""

    id: str = doc("Fleet identity; also the MQTT topic level storebox/<id>/.", check=device_id)
    state_dir: str = doc("SQLite database and key material live here.", "/var/lib/storebox")
    log_level: Literal["debug", "info", "warning", "error"] = doc(
        "Lowest log priority written to stderr (reloadable with SIGHUP).", "info")
    environment: Literal["development", "production"] = doc(
        "\"production\" refuses what is for development only (the `file` key provider).",
        "development")
    region: str = doc("Where the shop is (free text, e.g. \"Seoul\"); sent to the fleet in "
                      "the state's `site` so that outages are grouped by ISP and region.", "")


@dataclass(frozen=True)
class WiredConfig:
    """The shop's ISP line."""

    interface: str = doc("Network interface of the wired uplink.", "eth0", interface_name)
    carrier: str = doc(
        "Name of the wired ISP's carrier (e.g. \"KT\"); storebox warns when the LTE SIM "
        "belongs to the same carrier.", "")
    isp: str = doc("The wired line's ISP as the fleet groups shops (free text, e.g. \"KT\"); "
                   "sent in the state's `site` and the outage ledger; \"\" falls back to "
                   "wired.carrier.", "")
    dns: list[str] = doc(
        "The wired ISP's resolvers (IP addresses): the wired probes resolve target names "
        "through them (over wired), and the shop LAN's DNS forwards to them while wired is "
        "active (lan.enabled); [] learns them from NetworkManager (routing.backend = "
        "\"networkmanager\") and otherwise leaves the probes the system resolver and the "
        "LAN only lan.fallback_dns.",
        [], ip_addresses)


@dataclass(frozen=True)
class LteConfig:
    """The LTE modem: its AT control port and its data interface."""

    interface: str = doc("The modem's data interface (ECM/QMI/PPP).", "wwan0", interface_name)
    port: str = doc("AT control port: a device path, any pyserial URL, or \"auto\" (found "
                    "by USB ids: Quectel EC2x/EG2x/RM5xx, SIMCom SIM7600; found again after "
                    "the modem re-enumerates).", "/dev/ttyUSB2")
    apn: str = doc("Access point name for the data call.", "internet")
    pin: str = doc("SIM PIN, if the SIM has one; never retried blindly.", "")
    baudrate: int = doc("Serial speed of the AT port.", 115200, positive)
    power_pin: str = doc("GPIO (gpiozero name, e.g. \"GPIO17\") wired to the modem's "
                         "power key; \"\" when not wired.", "")
    power_mode: Literal["pwrkey", "reset"] = doc(
        "What power_pin drives: the EC25 PWRKEY (pulse off, then on) or a RESET line.",
        "pwrkey")
    poll_interval_s: float = doc("Seconds between the modem's light health polls.", 10.0,
                                 positive)
    dual_sim: bool = doc(
        "The modem has a second SIM (Quectel AT+QDSIM): when LTE fails while it carries "
        "traffic, switch SIM before going offline. Best on another carrier.", False)
    dns: list[str] = doc(
        "The LTE carrier's resolvers (IP addresses; those of the PDP context): the LTE "
        "probes resolve target names through them (over LTE), and the shop LAN's DNS "
        "forwards to them while LTE is active (lan.enabled); [] learns them from "
        "NetworkManager (routing.backend = \"networkmanager\") or else takes those the "
        "modem reports for its data call (AT+CGCONTRDP), and without either leaves the "
        "probes the system resolver and the LAN only lan.fallback_dns.", [], ip_addresses)
    simulator: Literal["", "KT", "SKT", "LGU"] = doc(
        "Run the built-in EC25 simulator (hw.modem.simulator) with a SIM of this carrier "
        "instead of a real modem; \"\" for real hardware.", "")


@dataclass(frozen=True)
class RoutingConfig:
    """How storebox moves traffic between uplinks."""

    backend: Literal["netlink", "networkmanager", "none"] = doc(
        "\"netlink\" (kernel routes via netlink), \"networkmanager\" (D-Bus), or \"none\" "
        "(observe only; used when not root).", "netlink")
    wired_metric: int = doc("Default-route metric of the wired uplink while it is standby "
                            "(the active uplink's route gets metric 50).", 100, non_negative)
    lte_metric: int = doc("Default-route metric of the LTE uplink while it is standby.",
                          600, non_negative)
    failover: bool = doc(
        "Watch the uplinks and fail over. false: no probes and no route control; every "
        "payment tries online first (for tests and bench setups without uplinks).", True)
    failback_after_s: float = doc("Wired must be stable this long before traffic fails back.",
                                  30.0, positive)
    lan_interfaces: list[str] = doc(
        "Shop LAN interfaces forwarded and masqueraded through the active uplink "
        "(nftables table inet storebox); [] leaves forwarding alone.", [], interface_names)
    lte_allowlist: list[str] = doc(
        "While on LTE, only these destination IPs/CIDRs are forwarded from the LAN (payment "
        "gateway, fleet broker) to protect the data budget; [] forwards everything.", [],
        cidrs)
    # Where LTE modems that route (ECM/RNDIS, "HiLink") answer on their own web and
    # management pages: Qualcomm-based modules (Quectel, SIMCom, Telit) 192.168.225.0/24,
    # Huawei HiLink 192.168.8.0/24, ZTE 192.168.0.1, Alcatel/TCL 192.168.1.1.
    modem_management: list[str] = doc(
        "The LTE modem's own management addresses/CIDRs (its web page in ECM/RNDIS mode): "
        "the LAN never reaches them through the LTE interface, the box does. The LTE "
        "interface's gateway is added when it is a private address.",
        ["192.168.225.0/24", "192.168.8.0/24", "192.168.0.1", "192.168.1.1"], cidrs)


@dataclass(frozen=True)
class LanConfig:
    """The shop LAN's own services: DHCP and a caching DNS forwarder that follows the uplink."""

    enabled: bool = doc(
        "Serve routing.lan_interfaces a caching DNS forwarder (dnsmasq, supervised by "
        "storebox) whose upstreams are the active uplink's resolvers, and DHCP on "
        "dhcp_ranges. Off by default, even with lan_interfaces set: a box added to a LAN "
        "whose router already hands out addresses must not become a second DHCP server.",
        False)
    dhcp_ranges: list[str] = doc(
        "Addresses handed out, \"FIRST-LAST\" each (IPv4, inside the subnet of one of "
        "routing.lan_interfaces; the lease gives the box as router and DNS server); [] "
        "serves DNS only (terminals with static addresses pointing at the box).", [],
        dhcp_ranges)
    lease_time_s: int = doc("How long a DHCP lease lasts (clients renew at half of it).",
                            43200, lease_time)
    domain: str = doc("The LAN's own domain (e.g. \"shop.lan\"): leases' host names "
                      "resolve under it and its names are never forwarded; \"\" for none.",
                      "")
    fallback_dns: list[str] = doc(
        "Public resolvers (IP addresses) forwarded to as well, over the active uplink: "
        "the LAN keeps resolving when the active ISP's own resolvers fail or are unknown "
        "(the standby uplink's resolvers answer only over that uplink, and the LAN's "
        "queries are not sent there). [] for the ISPs' resolvers only.",
        ["1.1.1.1", "8.8.8.8"], ip_addresses)
    cache_size: int = doc("Names dnsmasq keeps cached (cleared when the uplink changes).",
                          1000, non_negative)


@dataclass(frozen=True)
class ProbesConfig:
    """End-to-end probes bound to each uplink."""

    targets: list[str] = doc(
        "Probe targets: tcp:HOST:PORT, dns:SERVER:NAME, icmp:HOST or http(s):// URLs.",
        ["tcp:203.0.113.10:443", "dns:203.0.113.53:gateway.example",
         "https://gateway.example/health"], probe_target)
    interval_s: float = doc("Seconds between probe rounds of the rounds test: LTE's (while it "
                            "is active or wired is in doubt), and wired's with detector = "
                            "\"rounds\".", 0.5, positive)
    timeout_s: float = doc("Deadline of one probe of the rounds test.", 1.0, positive)
    quorum: int = doc("Targets that must answer for a round to pass; 0 means a majority "
                      "(2 of 3).", 0, non_negative)
    down_after_rounds: int = doc("Consecutive failed rounds before an uplink judged by the "
                                 "rounds test is down (4 rounds at 0.5 s: a blackhole is seen "
                                 "in 2.5-3 s).", 4, positive)
    lte_budget_mb_per_month: float = doc("Data budget of LTE standby probing.", 5.0, positive)
    detector: Literal["rounds", "sequential"] = doc(
        "How the wired uplink is declared down: \"sequential\" (a CUSUM on probe failures, "
        "rounds every 0.2 s (quiet_interval_s while the line is quiet) with 4 tries per "
        "probe and a 0.6 s deadline; 1.2-1.6 s, at most "
        "1e-6 false failovers an hour at 20 % loss; interval_s, timeout_s and "
        "down_after_rounds then apply to LTE only) or \"rounds\" (down_after_rounds failed "
        "rounds of interval_s; 2.5-3 s, with 6 probes a second against 15).", "sequential")
    quiet_interval_s: float = doc(
        "Sequential detector: rounds start this far apart while the wired line is quiet "
        "(every probe answered within 0.1 s for 5 rounds, no evidence of an outage), "
        "instead of every 0.2 s; the first late or failed round brings the 0.2 s rounds "
        "back. Halves the idle probing (and its CPU) for at most this - 0.2 s more "
        "detection time (1.2-1.6 s at 0.4); 0 turns it off (1.2-1.4 s).", 0.4, non_negative)
    min_outage_s: float = doc("Sequential detector: the evidence must span this long before "
                              "wired is down (a total blackout shorter than about this + "
                              "0.45 s is ridden out; each 0.2 s more delays detection).", 0.5,
                              non_negative)


    @property
    def effective_quorum(self) -> int:
        return self.quorum or len(self.targets) // 2 + 1


def percent(value: Any) -> str | None:
    return None if 0 < value <= 100 else f"must be a percentage above 0, up to 100, got {value!r}"


@dataclass(frozen=True)
class SteerConfig:
    """Payments steered around a brownout: the box's own traffic to the payment gateway
    goes by LTE while wired loses or delays too much, the rest of the shop stays on wired
    (failover/steer.py has the arithmetic)."""

    enabled: bool = doc(
        "Steer the gateway's traffic (the box's own connections to the addresses of "
        "payments.gateway_url, and `destinations`) to LTE by policy routing while wired is "
        "in a brownout and LTE is healthy. Needs routing.backend netlink or networkmanager.",
        True)
    steer_loss_pct: float = doc(
        "Steer when the share of the wired probes' round trips lost over the last "
        "window_s + steer_after_s reaches this: each attempt of a TCP, DNS or ICMP probe "
        "before the one that answered, all of them when none did (a probe retries: at 60 % "
        "packet loss a probe with 4 tries still succeeds 87 % of the time, while 60 % of its "
        "round trips are lost). 50 % is 30 % each way; 20 % each way (36 %) rides on wired.",
        50.0, percent)
    steer_latency_ms: float = doc(
        "...or when the wired probes' median latency over the window reaches this; below "
        "the wired probe deadline (0.6 s sequential, probes.timeout_s rounds): a probe "
        "answered later counts as lost, and seconds of latency fail over.", 450.0,
        positive)
    unsteer_loss_pct: float = doc(
        "Come back only when the round-trip loss is below this (and the latency below "
        "unsteer_latency_ms) for unsteer_after_s.", 10.0, percent)
    unsteer_latency_ms: float = doc("The latency below which wired counts as recovered.",
                                    300.0, positive)
    steer_after_s: float = doc(
        "A steer judges the rounds of window_s + this, taken together: wired must be past a "
        "steer threshold over that span.", 5.0, non_negative)
    unsteer_after_s: float = doc("Wired must be below both unsteer thresholds this long "
                                 "before the gateway's traffic comes back.", 30.0, non_negative)
    steer_min_interval_s: float = doc(
        "At most one steer this often, whatever the line does (no flapping).", 300.0,
        non_negative)
    window_s: float = doc("The window the round-trip loss and latency are shown and judged "
                          "over (a steer's span adds steer_after_s).", 5.0,
                          positive)
    destinations: list[str] = doc(
        "More IPs/CIDRs steered with the gateway (e.g. the POS vendor's API the box calls); "
        "the gateway's own addresses are resolved from payments.gateway_url at each steer.",
        [], cidrs)
    include_fleet: bool = doc(
        "Steer the fleet broker's addresses (fleet.mqtt_url) too: the fleet session would "
        "time out on the lossy line and the operator see the shop drop off (it reconnects "
        "once, over LTE, at the steer).", True)


@dataclass(frozen=True)
class PaymentsConfig:
    """Online authorization and offline stand-in."""

    gateway_url: str = doc("Base URL of the payment gateway (docs/gateway-protocol.md); https:// "
                           "unless allow_insecure_gateway.", check=http_url)
    allow_insecure_gateway: bool = doc(
        "Allow a plain http:// gateway_url (card data in clear text): for drills and tests "
        "with the gateway simulator only.", False)
    merchant_id: str = doc("Merchant id sent with every authorization.", "merchant-0001")
    merchant_key_file: str = doc("File holding the gateway bearer key (0600).",
                                 "/etc/storebox/merchant-key")
    seal_key_file: str = doc(
        "The gateway's X25519 public key (PEM): every card kept for an offline payment is "
        "sealed to it (HPKE) and the box keeps no key that opens it "
        "(docs/gateway-protocol.md). \"\" "
        "keeps cards encrypted locally under the key provider's keys. Reloaded by SIGHUP.",
        "")
    key_provider: Literal["file", "pkcs11", "systemd-creds"] = doc(
        "Who holds the key-encryption key of the local encryption and the card "
        "fingerprints: \"pkcs11\" (a secure element or TPM through its PKCS#11 module), "
        "\"systemd-creds\" (LoadCredentialEncrypted=, TPM2-sealed), or \"file\" "
        "(development only: the key sits on the box's disk; a fault in the status, refused "
        "when device.environment = \"production\").", "file")
    kek_file: str = doc("The `file` provider's key-encryption key (0600, created on a new "
                        "box); \"\" means <state_dir>/kek.", "")
    pkcs11_module: str = doc("PKCS#11 module (pkcs11 provider).",
                             "/usr/lib/aarch64-linux-gnu/pkcs11/libtpm2_pkcs11.so")
    pkcs11_token_label: str = doc("Label of the token holding the KEK (pkcs11 provider).",
                                  "storebox")
    pkcs11_pin_file: str = doc("File holding the token's user PIN (0600; pkcs11 provider).",
                               "/etc/storebox/pkcs11-pin")
    pkcs11_key_label: str = doc("Label of the KEK object in the token (pkcs11 provider).",
                                "storebox-kek")
    systemd_credential: str = doc(
        "Name of the credential holding the KEK (systemd-creds provider; the unit needs "
        "LoadCredentialEncrypted=NAME:/etc/credstore.encrypted/NAME).", "storebox-kek")
    key_cryptoperiod_days: int = doc(
        "Data and HMAC keys are replaced (stored cards re-encrypted) once this old.", 90,
        positive)
    retention_days: int = doc(
        "Settled payments (online, declined, forwarded) are deleted this long after they "
        "were taken; their totals per day stay for reconciliation.", 90, positive)
    currency: str = doc(
        "The box's currency (ISO 4217): the offline amount caps (offline_max_amount, "
        "offline_max_total, velocity_max_amount) are minor units of it; a payment in "
        "another currency is declined offline (currency_not_allowed_offline) unless "
        "currency_limits gives that currency caps of its own. Online payments in any "
        "currency go to the gateway as before.", "KRW", currency_code)
    currency_limits: dict[str, dict[str, int]] = doc(
        "Offline caps of other currencies, one table each, in minor units of that "
        "currency: [payments.currency_limits.USD] offline_max_amount = 10000, "
        "offline_max_total = 300000 (both required), velocity_max_amount (default twice "
        "offline_max_amount). The counts, the age rule and blocked_bins stay box-wide.",
        {}, currency_limit_tables)
    offline_max_amount: int = doc("Largest offline payment, minor units of `currency`.",
                                  50000, positive)
    offline_max_total: int = doc("All queued payments in `currency` together, minor units.",
                                 2000000, positive)
    offline_max_count: int = doc("Most payments queued at once.", 500, positive)
    online_deadline_s: float = doc("Overall deadline of an online attempt.", 3.0, positive)
    online_replays: int = doc(
        "How many times an online answer lost with its connection (reset or closed, not a "
        "timeout) is asked for again under the same Idempotency-Key within the deadline: "
        "the gateway replays its stored result, so a charged sale is answered as charged. "
        "0: never.", 2, non_negative)
    lost_attempt_lifetime_s: float = doc(
        "How long after its deadline an online attempt whose answer was lost may still "
        "reach the gateway (its load balancer's request timeout): before then the "
        "gateway's \"not found\" proves nothing.", 60.0, positive)
    offline_max_age_s: int = doc(
        "No more offline approvals once the oldest queued payment is this old.", 86400, positive)
    velocity_window_s: int = doc("Window of the per-card velocity rule.", 3600, positive)
    velocity_max_count: int = doc("Offline payments per card within the window.", 3, positive)
    velocity_max_amount: int = doc("Offline amount per card within the window, minor units.",
                                   100000, positive)
    blocked_bins: list[str] = doc("BIN prefixes or ranges LOW-HIGH never approved offline.",
                                  [], bins)
    forward_concurrency: int = doc("Offline payments forwarded at once.", 8, positive)


@dataclass(frozen=True)
class ApiConfig:
    """The local HTTP API for the POS, the technician and Prometheus."""

    listen: str = doc("HOST:PORT of the POS-facing HTTP API.", "0.0.0.0:8470", listen_address)
    tokens_file: str = doc("One bearer token per line (0600).", "/etc/storebox/pos-tokens")
    admin_socket: str = doc(
        "Unix socket serving the same API for `storebox status` on the box (also across "
        "network namespaces); \"\" disables it.", "/run/storebox/api.sock")
    tls: Literal["auto", "on", "off"] = doc(
        "HTTPS for the POS API. \"auto\": HTTPS on every listen address but loopback (plain "
        "HTTP on 127.0.0.1/::1 only); \"on\": HTTPS on loopback too; \"off\": plain HTTP, "
        "refused beyond loopback unless allow_plain_http = true. The certificate is "
        "tls_cert_file/tls_key_file, else the box's own (ECDSA P-256, subject device.id, made "
        "at first start in device.state_dir); `storebox status` shows its SHA-256 to pin.",
        "auto")
    tls_cert_file: str = doc(
        "The operator's server certificate (PEM, leaf first, chain after) instead of the box's "
        "own; needs tls_key_file. \"\" uses the box's own.", "")
    tls_key_file: str = doc("The private key of tls_cert_file (PEM, 0600).", "")
    client_ca_file: str = doc(
        "Mutual TLS: PEM CA certificate(s) that sign the terminals' client certificates; a "
        "connection without a certificate it signs is refused in the handshake. \"\": no "
        "client certificates (the bearer token alone).", "")
    allow_plain_http: bool = doc(
        "Let tls = \"off\" serve plain HTTP beyond loopback (card data and tokens in clear on "
        "the shop LAN). Shown as the api fault plain_http_on_lan.", False)
    request_timeout_s: float = doc(
        "A request must arrive whole (headers and body) within this many seconds of its first "
        "byte (of the connection, for a new one); a slower client is disconnected.", 20.0,
        positive)
    keepalive_timeout_s: float = doc(
        "An idle kept-alive connection is closed after this many seconds without a request.",
        30.0, positive)
    tls_handshake_timeout_s: float = doc(
        "A TLS handshake must finish within this many seconds.", 10.0, positive)
    max_connections: int = doc(
        "Connections open at once, all clients together; lowered at start to stay well below "
        "the process's open-file limit (RLIMIT_NOFILE). At the cap the oldest quiet connection "
        "of the busiest address is closed for a new one.", 256, positive)
    max_connections_per_address: int = doc(
        "Connections open at once from one client address (IPv6: one /64). A new one beyond "
        "it replaces that address's oldest quiet connection, or is refused.", 32, positive)


@dataclass(frozen=True)
class FleetConfig:
    """Remote fleet management over MQTT."""

    mqtt_url: str = doc(
        "Broker URL: mqtt://HOST[:PORT] (1883) or mqtts://HOST[:PORT] (8883, TLS verified "
        "against the system CA store or ca_file); \"\" disables the fleet agent.", "", mqtt_url)
    ca_file: str = doc("PEM CA bundle that signs the broker's certificate (mqtts:// only), "
                       "instead of the system CA store; \"\" uses the system store.", "")
    username: str = doc("MQTT user name; \"\" connects without credentials.", "")
    password_file: str = doc("File holding the MQTT password (0600; never logged); \"\" for "
                             "none.", "")
    allow_insecure: bool = doc(
        "Allow credentials (username/password_file) over a plain mqtt:// mqtt_url, where "
        "the password crosses the network in clear text: for tests and labs only.", False)
    command_key_file: str = doc(
        "The fleet operator's Ed25519 public key (PEM, OpenSSH, or base64 of the raw 32 "
        "bytes). Commands that change behaviour must be signed with its private key (README "
        "\"Fleet over MQTT\"); \"\" accepts none of them. Reloaded by SIGHUP.", "")
    state_min_interval_s: float = doc(
        "The state topic is published at most this often: a burst of changes is coalesced "
        "into one message (the LTE link is metered).", 1.0, positive)
    state_every_s: float = doc("The state topic is published at least this often, changed "
                               "or not.", 60.0, positive)
    keepalive_s: int = doc("MQTT keepalive: the broker publishes the Last Will (offline) "
                           "after 1.5 times this without a word from the box.", 60,
                           mqtt_keepalive)
    reconnect_max_s: float = doc("Longest wait between attempts to reach the broker "
                                 "(capped exponential backoff with jitter).", 120.0, positive)
    event_buffer: int = doc("Events kept while the broker is unreachable, published in "
                            "order after reconnect; beyond this the oldest are dropped.",
                            200, positive)


@dataclass(frozen=True)
class HwConfig:
    """Local hardware: the LED panel and GPIO."""

    pin_factory: Literal["mock", "lgpio", "rpigpio", "pigpio", "native"] = doc(
        "gpiozero pin factory: \"mock\" off-target, \"lgpio\" on a Pi.", "mock")
    led_pins: dict[str, str] = doc(
        "GPIO (gpiozero name) of each LED of the panel: wired, lte, offline, alert. An LED "
        "left out is not fitted (the status still shows its pattern).",
        {"wired": "GPIO5", "lte": "GPIO6", "offline": "GPIO13", "alert": "GPIO19"}, led_pin_table)
    led_blink_s: float = doc("A blinking LED is on this long, then off this long.", 0.5,
                             positive)


@dataclass(frozen=True)
class DebugConfig:
    """Development aids; leave empty on a shop's box."""

    extra_components: list[str] = doc(
        "Extra supervised components as \"module:factory\"; the factory is called with "
        "the box context.", [])


@dataclass(frozen=True)
class Config:
    """The whole configuration; `source` is the file it came from."""

    device: DeviceConfig
    payments: PaymentsConfig
    wired: WiredConfig = field(default_factory=WiredConfig)
    lte: LteConfig = field(default_factory=LteConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    probes: ProbesConfig = field(default_factory=ProbesConfig)
    lan: LanConfig = field(default_factory=LanConfig)
    steer: SteerConfig = field(default_factory=SteerConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)
    hw: HwConfig = field(default_factory=HwConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    source: str = "<defaults>"
