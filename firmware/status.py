"""The status document (docs/schemas/status.json): a view of `BoxState`, computed on demand."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from firmware.state import BoxState, LinkHealth, SteerView


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _link(health: LinkHealth) -> dict[str, Any]:
    doc = asdict(health)
    doc["since"] = _iso(health.since)
    return doc


def _steer(steer: SteerView) -> dict[str, Any]:
    doc = asdict(steer)
    doc["since"] = _iso(steer.since)
    return doc


def _api(state: BoxState) -> dict[str, Any]:
    api = state.api
    return {
        "tls": api.tls,
        "cert_sha256": api.cert_sha256,
        "spki_sha256_b64": api.spki_sha256_b64,
        "cert_source": api.cert_source,
        "cert_subject": api.cert_subject,
        "cert_not_after": _iso(api.cert_not_after),
        "client_certificates": api.client_certificates,
        "listen": list(api.listen),
        "faults": list(api.faults),
        "connections": asdict(api.connections),
    }


def _lan(state: BoxState) -> dict[str, Any]:
    lan = state.lan
    return {
        "enabled": lan.enabled,
        "interfaces": list(lan.interfaces),
        "dhcp": lan.dhcp,
        "leases": lan.leases,
        "upstream": {"uplink": lan.upstream_uplink, "interface": lan.upstream_interface,
                     "servers": list(lan.upstream_servers), "since": _iso(lan.since)},
    }


def status_document(state: BoxState) -> dict[str, Any]:
    """Every binding field of docs/schemas/status.json; values are null/"unknown" until known."""
    now = state.wall()
    pay = state.payments
    oldest_age = (round((now - pay.oldest_queued_at).total_seconds(), 1)
                  if pay.oldest_queued_at else None)
    components = {
        name: {"state": c.state, "restarts": c.restarts, "last_error": c.last_error,
               "last_error_at": _iso(c.last_error_at)}
        for name, c in sorted(state.components.items())
    }
    return {
        "device_id": state.device_id,
        "version": state.version,
        "phase": state.phase,
        "started_at": _iso(state.started_at),
        "uptime_s": round((now - state.started_at).total_seconds(), 1),
        "uplink": {
            "active": state.uplink.active,
            "since": _iso(state.uplink.since),
            "wired": _link(state.uplink.wired),
            "lte": _link(state.uplink.lte),
            "failovers_total": state.uplink.failovers_total,
            "failbacks_total": state.uplink.failbacks_total,
            "steer": _steer(state.uplink.steer),
        },
        "modem": asdict(state.modem),
        "payments": {
            "queued": pay.queued,
            "queued_amount": pay.queued_amount,
            "oldest_queued_age_s": oldest_age,
            "forwarded_total": pay.forwarded_total,
            "declined_after_offline_total": pay.declined_after_offline_total,
            "dead": pay.dead,
            "quarantined": pay.quarantined,
            "mode": pay.mode,
            "protection": pay.protection,
            "seal_kid": pay.seal_kid,
            "key_provider": pay.key_provider,
            "faults": list(pay.faults),
        },
        "leds": dict(state.leds),
        "api": _api(state),
        "fleet": {"link": state.fleet.link, "broker": state.fleet.broker,
                  "since": _iso(state.fleet.since), "last_error": state.fleet.last_error},
        "lan": _lan(state),
        "outages": {"open": list(state.outages.open), "total": state.outages.total,
                    "last": state.outages.ended[-1] if state.outages.ended else None},
        "components": components,
        "recent_events": [e.to_json() for e in state.events.recent()[-10:]],
    }


def status_line(state: BoxState) -> str:
    """The one-line summary for systemd's STATUS= (shown by `systemctl status`)."""
    pay = state.payments
    return (f"{state.phase}; uplink {state.uplink.active}; wired {state.uplink.wired.state}; "
            f"lte {state.uplink.lte.state}; queued {pay.queued}")
