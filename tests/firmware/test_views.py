"""The status document, /metrics and the CLI layout are views of one BoxState."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prometheus_client import generate_latest

from firmware.cli.status_view import render_status
from firmware.logs import scrub
from firmware.metrics import registry_for
from firmware.state import BoxState
from firmware.status import status_document
from tests.support.clock import ManualClock
from tests.support.schemas import check_status

T0 = datetime(2021, 10, 25, 11, 20, tzinfo=UTC)


def make_state() -> tuple[BoxState, ManualClock]:
    clock = ManualClock(wall=T0.timestamp())
    return BoxState("store-0001", "1.2.3", wall=clock.now), clock


def test_status_has_every_contract_field_with_honest_unknowns() -> None:
    state, _ = make_state()
    doc = status_document(state)
    assert doc["device_id"] == "store-0001"
    assert doc["version"] == "1.2.3"
    assert doc["uplink"]["active"] == "none"
    assert doc["uplink"]["since"] is None
    assert doc["uplink"]["wired"]["state"] == "unknown"
    assert doc["uplink"]["lte"]["state"] == "unknown"
    assert {"registered", "operator", "rat", "signal_dbm"} <= doc["modem"].keys()
    assert doc["modem"]["registered"] is None
    assert doc["payments"] == {
        "queued": 0, "queued_amount": 0, "oldest_queued_age_s": None, "forwarded_total": 0,
        "declined_after_offline_total": 0, "dead": 0, "quarantined": 0, "mode": "unknown",
        "protection": "unknown", "seal_kid": None, "key_provider": None, "faults": []}
    assert doc["leds"] == {}
    check_status(doc)  # docs/schemas/status.json


def test_views_follow_the_state_without_copies() -> None:
    state, clock = make_state()
    registry = registry_for(state)
    state.update(state.uplink, active="lte", since=T0)
    state.update(state.uplink.wired, state="down", reason="blackhole")
    state.update(state.payments, queued=3, queued_amount=37500,
                 oldest_queued_at=T0 - timedelta(seconds=90))
    state.update(state.modem, signal_dbm=-71, registered=True)
    clock.advance(30)

    doc = status_document(state)
    assert doc["uplink"]["active"] == "lte"
    assert doc["uplink"]["since"] == "2021-10-25T11:20:00+00:00"
    assert doc["uplink"]["wired"]["reason"] == "blackhole"
    assert doc["payments"]["oldest_queued_age_s"] == 120.0
    check_status(doc)

    text = generate_latest(registry).decode()
    assert 'storebox_uplink_active{uplink="lte"} 1.0' in text
    assert 'storebox_uplink_active{uplink="wired"} 0.0' in text
    assert 'storebox_uplink_state{state="down",uplink="wired"} 1.0' in text
    assert "storebox_payments_queued 3.0" in text
    assert "storebox_payments_oldest_queued_age_seconds 120.0" in text
    assert "storebox_modem_signal_dbm -71.0" in text

    state.update(state.payments, queued=0, oldest_queued_at=None)
    text = generate_latest(registry).decode()
    assert "storebox_payments_queued 0.0" in text


def test_leds_and_the_fleet_link_are_in_metrics() -> None:
    state, _ = make_state()
    registry = registry_for(state)
    text = generate_latest(registry).decode()
    assert 'storebox_fleet_link{state="disabled"} 1.0' in text
    assert "storebox_led{" not in text  # no LED component has reported yet
    state.leds = {"wired": "on", "offline": "blink"}
    state.touch()
    state.update(state.fleet, link="up", broker="mqtts://fleet.example:8883")
    text = generate_latest(registry).decode()
    assert 'storebox_led{led="wired",pattern="on"} 1.0' in text
    assert 'storebox_led{led="wired",pattern="off"} 0.0' in text
    assert 'storebox_led{led="offline",pattern="blink"} 1.0' in text
    assert 'storebox_fleet_link{state="up"} 1.0' in text
    assert 'storebox_fleet_link{state="disabled"} 0.0' in text


def test_update_rejects_unknown_fields_and_counts_revisions() -> None:
    state, _ = make_state()
    before = state.revision
    assert state.update(state.uplink, active="wired") is True
    assert state.update(state.uplink, active="wired") is False
    assert state.revision == before + 1
    try:
        state.update(state.uplink, activ="wired")
    except AttributeError as exc:
        assert "'activ'" in str(exc)
    else:
        raise AssertionError("unknown field accepted")


def test_render_status_sections() -> None:
    state, _ = make_state()
    state.update(state.uplink, active="wired")
    state.update(state.uplink.wired, state="up", interface="eth0", latency_ms=12.0,
                 loss_pct=0.0)
    state.update(state.modem, registered=True, registration="home", operator="SKTelecom",
                 mcc_mnc="450-05", rat="lte", signal_dbm=-71, same_carrier_as_wired=True)
    state.leds["uplink"] = "on"
    text = render_status(status_document(state))
    lines = text.splitlines()
    assert any(line.startswith("  Uplink     |") and "active: wired" in line for line in lines)
    assert "wired: up  eth0  12 ms  0% loss" in text
    assert "operator: SKTelecom (450-05)" in text
    assert "signal: -71 dBm" in text
    assert "the SIM is on the wired line's carrier" in text
    assert "\033[" not in text
    assert "\033[32mup\033[0m" in render_status(status_document(state), colour=True)


def test_scrub_masks_card_numbers_and_tokens() -> None:
    line = "pan 4111 1111 1111 1111 and 5500005555555559, order 123456789012, Bearer s3cret"
    out = scrub(line)
    assert "4111 1111 1111 1111" not in out and "5500005555555559" not in out
    assert "411111…1111" in out and "550000…5559" in out
    assert "123456789012" in out  # not Luhn-valid: not a card number, kept
    assert "s3cret" not in out


def test_server_errors_are_one_line_a_minute_without_the_request_bytes() -> None:
    import logging

    from firmware.logs import ServerErrorFilter

    clock = ManualClock(monotonic=0.0)
    limiter = ServerErrorFilter(window_s=60, monotonic=clock.monotonic)

    def record() -> logging.LogRecord:
        try:
            raise ValueError('bad request b\'{"cvc": "739"}\'')
        except ValueError as exc:
            return logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1,
                                     "Error handling request %s", ("x",),
                                     (type(exc), exc, exc.__traceback__))

    first = record()
    assert limiter.filter(first)
    assert first.exc_info is None and "739" not in first.getMessage()
    assert first.getMessage().startswith("a client request failed (ValueError)")
    assert not limiter.filter(record()) and not limiter.filter(record())
    clock.advance(61)
    later = record()
    assert limiter.filter(later)
    assert "2 more since the last report" in later.getMessage()
