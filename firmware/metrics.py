"""Prometheus view of `BoxState`: a collector that reads the state at scrape time."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from firmware.state import BoxState

_LINK_STATES = ("up", "degraded", "down", "standby", "unknown")
_UPLINKS = ("wired", "lte", "none")
_LED_PATTERNS = ("off", "on", "blink")
_FLEET_LINKS = ("disabled", "connecting", "up", "down")

Metric = GaugeMetricFamily | CounterMetricFamily | InfoMetricFamily


class BoxStateCollector(Collector):
    """Every metric is derived from the state when Prometheus asks, never stored twice."""

    def __init__(self, state: BoxState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        s = self.state
        now = s.wall()
        yield from _box(s, now)
        yield from _uplinks(s)
        yield from _counters(s)
        yield from _queue(s, now)
        yield from _leds(s)
        yield from _fleet(s)
        yield from _modem(s)
        yield from _components(s)


def _box(s: BoxState, now: datetime) -> Iterator[Metric]:
    info = InfoMetricFamily("storebox_build", "storebox version and device id")
    info.add_metric([], {"version": s.version, "device_id": s.device_id})
    yield info

    uptime = GaugeMetricFamily("storebox_uptime_seconds", "Seconds since the daemon started")
    uptime.add_metric([], (now - s.started_at).total_seconds())
    yield uptime


def _uplinks(s: BoxState) -> Iterator[Metric]:
    yield _state_set("storebox_uplink_active", "1 for the uplink currently carrying traffic",
                     ["uplink"], _UPLINKS, [((), s.uplink.active)])
    yield _state_set("storebox_uplink_state", "1 for each uplink's current health state",
                     ["uplink", "state"], _LINK_STATES,
                     [(("wired",), s.uplink.wired.state), (("lte",), s.uplink.lte.state)])


def _counters(s: BoxState) -> Iterator[Metric]:
    for metric, help_text, value in (
        ("storebox_failovers", "Failovers from wired to another uplink",
         s.uplink.failovers_total),
        ("storebox_failbacks", "Failbacks to the wired uplink", s.uplink.failbacks_total),
        ("storebox_modem_resets", "Modem recovery actions taken", s.modem.resets_total),
        ("storebox_modem_parse_errors",
         "Modem answers that did not parse (last good values kept, no reset)",
         s.modem.parse_errors),
        ("storebox_payments_forwarded", "Offline payments forwarded to the gateway",
         s.payments.forwarded_total),
        ("storebox_payments_declined_after_offline",
         "Offline-approved payments the gateway declined",
         s.payments.declined_after_offline_total),
    ):
        counter = CounterMetricFamily(metric, help_text)
        counter.add_metric([], float(value))
        yield counter


def _queue(s: BoxState, now: datetime) -> Iterator[Metric]:
    queued = GaugeMetricFamily("storebox_payments_queued", "Payments waiting to be forwarded")
    queued.add_metric([], float(s.payments.queued))
    yield queued
    amount = GaugeMetricFamily("storebox_payments_queued_amount",
                               "Sum of queued payments, minor units")
    amount.add_metric([], float(s.payments.queued_amount))
    yield amount
    age = GaugeMetricFamily("storebox_payments_oldest_queued_age_seconds",
                            "Age of the oldest queued payment (0 when none)")
    oldest = s.payments.oldest_queued_at
    age.add_metric([], (now - oldest).total_seconds() if oldest else 0.0)
    yield age


def _leds(s: BoxState) -> Iterator[Metric]:
    yield _state_set("storebox_led", "1 for the pattern each LED shows", ["led", "pattern"],
                     _LED_PATTERNS, [((name,), shown) for name, shown in sorted(s.leds.items())])


def _fleet(s: BoxState) -> Iterator[Metric]:
    yield _state_set("storebox_fleet_link", "1 for the state of the link to the fleet broker",
                     ["state"], _FLEET_LINKS, [((), s.fleet.link)])


def _modem(s: BoxState) -> Iterator[Metric]:
    if s.modem.signal_dbm is not None:
        signal = GaugeMetricFamily("storebox_modem_signal_dbm", "LTE signal strength, dBm")
        signal.add_metric([], float(s.modem.signal_dbm))
        yield signal


def _components(s: BoxState) -> Iterator[Metric]:
    restarts = CounterMetricFamily("storebox_component_restarts",
                                   "Times a component crashed and was restarted",
                                   labels=["component"])
    running = GaugeMetricFamily("storebox_component_up", "1 while a component is running",
                                labels=["component"])
    for name, comp in sorted(s.components.items()):
        restarts.add_metric([name], float(comp.restarts))
        running.add_metric([name], 1.0 if comp.state == "running" else 0.0)
    yield restarts
    yield running


def _state_set(metric: str, help_text: str, labels: list[str], choices: Iterable[str],
               current: Iterable[tuple[tuple[str, ...], str]]) -> GaugeMetricFamily:
    """For each (leading label values, state) in `current`, one sample per choice: 1 for
    the state, 0 for every other (every state is always exported, so a dashboard sees a
    change as 1 → 0, not a gap)."""
    family = GaugeMetricFamily(metric, help_text, labels=labels)
    for leading, state in current:
        for choice in choices:
            family.add_metric([*leading, choice], 1.0 if state == choice else 0.0)
    return family


def registry_for(state: BoxState) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BoxStateCollector(state))
    return registry
