"""Render the status document for a technician, in the manner of `mmcli -m 0`."""

from __future__ import annotations

from typing import Any

_GREEN, _YELLOW, _RED, _DIM, _RESET = "\033[32m", "\033[33m", "\033[31m", "\033[2m", "\033[0m"
_COLOURS = {
    "up": _GREEN, "running": _GREEN, "online": _GREEN, "on": _GREEN, "yes": _GREEN,
    "wired": _GREEN, "degraded": _YELLOW, "standby": _YELLOW, "restarting": _YELLOW,
    "blink": _YELLOW, "lte": _YELLOW, "offline": _YELLOW, "starting": _YELLOW,
    "down": _RED, "failed": _RED, "none": _RED, "no": _RED, "stopping": _YELLOW,
    "unknown": _DIM, "off": _DIM, "disabled": _DIM, "connecting": _YELLOW,
}
_RULE = "  " + "-" * 46


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    return f"{s // 3600}h {s % 3600 // 60:02d}m"


def _yes_no(value: bool | None) -> str:
    return "unknown" if value is None else ("yes" if value else "no")


def _or_unknown(value: Any, suffix: str = "") -> str:
    return "unknown" if value is None else f"{value}{suffix}"


class _Layout:
    def __init__(self, colour: bool) -> None:
        self.colour = colour
        self.lines: list[str] = []

    def paint(self, word: str) -> str:
        code = _COLOURS.get(word)
        return f"{code}{word}{_RESET}" if self.colour and code else word

    def section(self, title: str, rows: list[tuple[str, str]]) -> None:
        self.lines.append(_RULE)
        for i, (label, value) in enumerate(rows):
            head = title if i == 0 else ""
            self.lines.append(f"  {head:<10} | {label:>18}: {value}")


def _link_row(layout: _Layout, link: dict[str, Any]) -> str:
    parts = [layout.paint(str(link.get("state", "unknown")))]
    if link.get("interface"):
        parts.append(str(link["interface"]))
    if link.get("latency_ms") is not None:
        parts.append(f"{link['latency_ms']:.0f} ms")
    if link.get("loss_pct") is not None:
        parts.append(f"{link['loss_pct']:.0f}% loss")
    if link.get("reason"):
        parts.append(f"({link['reason']})")
    return "  ".join(parts)


def render_status(doc: dict[str, Any], colour: bool = False) -> str:
    """The status document as a sectioned, aligned text block."""
    layout = _Layout(colour)
    layout.section("Box", _box_rows(layout, doc))
    if doc.get("api"):
        layout.section("API", _api_rows(layout, doc["api"]))
    layout.section("Uplink", _uplink_rows(layout, doc["uplink"]))
    layout.section("Modem", _modem_rows(layout, doc["modem"]))
    layout.section("Payments", _payments_rows(layout, doc["payments"]))
    leds = doc.get("leds") or {}
    layout.section("LEDs", [(name, layout.paint(state)) for name, state in sorted(leds.items())]
                   or [("panel", "unknown")])
    fleet = doc.get("fleet") or {}
    if fleet:
        layout.section("Fleet", _fleet_rows(layout, fleet))
    layout.section("Components", _component_rows(layout, doc.get("components") or {}))
    layout.lines.append(_RULE)
    return "\n".join(layout.lines)


def _box_rows(layout: _Layout, doc: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        ("device id", doc["device_id"]),
        ("version", doc["version"]),
        ("phase", layout.paint(doc.get("phase", "unknown"))),
        ("uptime", _duration(doc.get("uptime_s"))),
    ]


def _uplink_rows(layout: _Layout, up: dict[str, Any]) -> list[tuple[str, str]]:
    since = f" since {up['since']}" if up.get("since") else ""
    return [
        ("active", layout.paint(up["active"]) + since),
        ("wired", _link_row(layout, up["wired"])),
        ("lte", _link_row(layout, up["lte"])),
        ("failovers", f"{up.get('failovers_total', 0)}  failbacks: "
                      f"{up.get('failbacks_total', 0)}"),
    ]


def _modem_rows(layout: _Layout, m: dict[str, Any]) -> list[tuple[str, str]]:
    """What the modem is doing now, then only the troubles it has (`_modem_troubles`)."""
    operator = _or_unknown(m.get("operator"))
    if m.get("mcc_mnc"):
        operator += f" ({m['mcc_mnc']})"
    return [
        ("registered", layout.paint(_yes_no(m.get("registered")))
         + (f" ({m['registration']})" if m.get("registration") else "")),
        ("operator", operator),
        ("access tech", _or_unknown(m.get("rat"))),
        ("signal", _or_unknown(m.get("signal_dbm"), " dBm")
         + (f"  rsrp {m['rsrp_dbm']:.0f} dBm" if m.get("rsrp_dbm") is not None else "")
         + (f"  sinr {m['sinr_db']:.0f} dB" if m.get("sinr_db") is not None else "")),
        ("sim", _or_unknown(m.get("sim"))
         + (f" ({m['sim_fault']})" if m.get("sim_fault") else "")),
        ("data", layout.paint(_yes_no(m.get("data_up")))
         + (f" {m['ip']}" if m.get("ip") else "")),
        *_modem_troubles(layout, m),
    ]


def _modem_troubles(layout: _Layout, m: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    if m.get("not_connected_reason"):
        rows.append(("why not", str(m["not_connected_reason"])))
    if m.get("recovery_step"):
        rows.append(("recovery", f"{m['recovery_step']} (resets: {m.get('resets_total', 0)})"))
    if m.get("last_reset_reason"):
        rows.append(("last reset", str(m["last_reset_reason"]).replace("_", " ")))
    if m.get("parse_errors"):
        rows.append(("unparsed answers", f"{m['parse_errors']} (last good values kept)"))
    if m.get("same_carrier_as_wired"):
        rows.append(("carrier diversity", layout.paint("none")
                     + ": the SIM is on the wired line's carrier; one outage takes both"))
    return rows


def _payments_rows(layout: _Layout, p: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        ("mode", layout.paint(p.get("mode", "unknown"))),
        ("queued", f"{p['queued']} ({p['queued_amount']} minor units)"),
        ("oldest queued", _duration(p.get("oldest_queued_age_s"))),
        ("forwarded", str(p["forwarded_total"])),
        ("declined after", str(p["declined_after_offline_total"])),
        ("dead", str(p.get("dead", 0))),
        ("cards", _protection(p)),
        *[("fault", layout.paint("down") + f": {f}") for f in p.get("faults") or []],
    ]


def _fleet_rows(layout: _Layout, fleet: dict[str, Any]) -> list[tuple[str, str]]:
    link = layout.paint(str(fleet.get("link", "unknown")))
    if fleet.get("broker"):
        link += f"  {fleet['broker']}"
    if fleet.get("since"):
        link += f"  since {fleet['since']}"
    rows = [("link", link)]
    if fleet.get("last_error") and fleet.get("link") != "up":
        rows.append(("last error", str(fleet["last_error"])))
    return rows


def _component_rows(layout: _Layout, comps: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (name, layout.paint(c["state"]) + (f"  restarts: {c['restarts']}" if c["restarts"] else "")
         + (f"  last error: {c['last_error']}" if c.get("last_error") else ""))
        for name, c in comps.items()
    ] or [("components", "none")]


def _api_rows(layout: _Layout, api: dict[str, Any]) -> list[tuple[str, str]]:
    """The POS API: what a POS integrator pins (the certificate's SHA-256, the public key's
    for curl's --pinnedpubkey), the listeners, faults, connection counts."""
    rows = [("listen", "  ".join(api.get("listen") or []) or "unknown"),
            ("tls", layout.paint("on" if api.get("tls") else "off")
             + ("  client certificates required" if api.get("client_certificates") else ""))]
    if api.get("cert_sha256"):
        rows.append(("cert sha256", str(api["cert_sha256"])))
        rows.append(("pin (curl)", f"sha256//{api.get('spki_sha256_b64')}"))
        source = "the box's own" if api.get("cert_source") == "box" else "the operator's"
        rows.append(("certificate", f"{source}, {api.get('cert_subject')}, until "
                                    f"{str(api.get('cert_not_after'))[:10]}"))
    rows += [("fault", layout.paint("down") + f": {f}") for f in api.get("faults") or []]
    conns = api.get("connections") or {}
    if conns:
        rows.append(("connections", f"{conns.get('open', 0)} open (peak {conns.get('peak', 0)}, "
                                    f"limit {conns.get('limit', 0)}, "
                                    f"{conns.get('per_address_limit', 0)} per address)"))
        dropped = {k.removesuffix("_total").replace("_", " "): v for k, v in conns.items()
                   if k.endswith("_total") and v}
        if dropped:
            rows.append(("closed early", ", ".join(f"{v} {k}" for k, v in dropped.items())))
    return rows


def render_queue_stats(stats: dict[str, Any]) -> str:
    layout = _Layout(False)
    oldest = stats.get("oldest_created_at") or "-"
    rows = [("queued", str(stats["count"])), ("amount", f"{stats['amount']} minor units"),
            ("oldest", oldest)]
    rows += [(f"state {name}", str(count)) for name, count in sorted(stats["by_state"].items())]
    layout.section("Queue", rows)
    layout.lines.append(_RULE)
    return "\n".join(layout.lines)


def _protection(p: dict[str, Any]) -> str:
    """How kept cards are protected, in the installer's words."""
    provider = p.get("key_provider") or "?"
    return {
        "sealed": f"sealed to the gateway (key {p.get('seal_kid')}); keys: {provider}",
        "local": f"encrypted on the box; keys: {provider}",
        "none": "cannot be protected: offline payments are declined",
    }.get(str(p.get("protection")), "unknown")


def render_queue_list(payments: list[dict[str, Any]]) -> str:
    if not payments:
        return "no queued payments"
    header = f"{'id':<32} {'created':<25} {'amount':>10} {'cur':<4} {'card':<12} " \
             f"{'state':<10} {'tries':>5}  last error"
    lines = [header]
    for p in payments:
        lines.append(f"{p['id']:<32} {p['created_at']:<25} {p['amount']:>10} {p['currency']:<4} "
                     f"{p['card']:<12} {p['forward_state']:<10} {p['attempts']:>5}  "
                     f"{p.get('last_error') or ''}")
    return "\n".join(lines)
