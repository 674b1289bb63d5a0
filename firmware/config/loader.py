"""Load and validate a TOML configuration, reporting every problem at once."""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from failover.sequential import sequential_monitor
from firmware.config.listeners import api_problems
from firmware.config.locate import key_lines
from firmware.config.overlay import lay_over, with_overlay
from firmware.config.schema import Config
from firmware.errors import ConfigError, Problem

DEFAULT_PATH = "/etc/storebox/storebox.toml"

_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def load_config(path: str | Path) -> Config:
    """Read and validate the file at `path`; raise `ConfigError` listing every problem."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError([Problem(name, 0, "<file>", f"cannot read: {reason}")]) from exc
    return load_config_text(text, name)


def load_config_text(text: str, name: str = "<string>") -> Config:
    """Validate TOML `text` as a configuration; `name` is used in problem reports."""
    data = with_overlay(_parse(text, name))  # the fleet's desired config, when accepted
    return _validated(data, text, name)


def load_config_with(path: str | Path, settings: dict[str, Any]) -> Config:
    """The file at `path` as it would load with the fleet's desired `settings` instead of
    the stored ones: how the agent checks a desired config before it accepts it."""
    name = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(name, 0, "<file>", f"cannot read: {exc}")]) from exc
    return _validated(lay_over(_parse(text, name), settings), text, name)


def _parse(text: str, name: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = _decode_error_line(str(exc))
        raise ConfigError([Problem(name, line, "<toml>", f"not valid TOML: {exc}")]) from exc


def _validated(data: dict[str, Any], text: str, name: str) -> Config:
    validator = _Validator(name, key_lines(text))
    config = validator.build(Config, data, "")
    if isinstance(config, Config):
        for key, message in cross_checks(config):
            validator.report(key, message)
    if validator.problems:
        raise ConfigError(sorted(validator.problems, key=lambda p: (p.line, p.key)))
    assert isinstance(config, Config)
    return dataclasses.replace(config, source=name)


def cross_checks(config: Config) -> list[tuple[str, str]]:
    """Rules that involve more than one key."""
    return [*_uplink_checks(config), *_steer_checks(config), *_fleet_checks(config),
            *_payments_checks(config), *api_problems(config.api)]


Problems = list[tuple[str, str]]


def _uplink_checks(config: Config) -> Problems:
    problems = []
    targets = len(config.probes.targets)
    if config.probes.quorum > targets:
        problems.append(("probes.quorum", f"must be at most the number of probes.targets "
                                          f"({targets}), got {config.probes.quorum!r}"))
    uplinks = {config.wired.interface, config.lte.interface}
    for lan in config.routing.lan_interfaces:
        if lan in uplinks:
            problems.append(("routing.lan_interfaces",
                             f"{lan!r} is an uplink interface, not a LAN"))
    if config.lan.enabled and not config.routing.lan_interfaces:
        problems.append(("lan.enabled", "needs routing.lan_interfaces: the interfaces the "
                                        "LAN's DHCP and DNS are served on"))
    if config.wired.interface == config.lte.interface:
        problems.append(("lte.interface", f"must differ from wired.interface, both are "
                                          f"{config.lte.interface!r}"))
    return problems


def _at_most(key: str, value: float, bound_key: str, bound: float) -> Problems:
    """The problem of `key` when its `value` exceeds the key `bound_key` it must not pass
    (a hysteresis pair, an interval inside another), or none."""
    if value > bound:
        return [(key, f"must be at most {bound_key} ({bound!r}), got {value!r}")]
    return []


def _steer_checks(config: Config) -> Problems:
    steer = config.steer
    return [*_at_most("steer.unsteer_loss_pct", steer.unsteer_loss_pct,
                      "steer.steer_loss_pct", steer.steer_loss_pct),
            *_at_most("steer.unsteer_latency_ms", steer.unsteer_latency_ms,
                      "steer.steer_latency_ms", steer.steer_latency_ms),
            *_latency_steer_reachable(config)]


def _latency_steer_reachable(config: Config) -> Problems:
    """A probe answered after its deadline counts as lost, so the wired probes never see
    a latency at or past it: a threshold there could never steer (failover/steer.py,
    "Latency")."""
    probes = config.probes
    deadline_s = sequential_monitor().probe_timeout_s if probes.detector == "sequential" \
        else probes.timeout_s
    if config.steer.steer_latency_ms < deadline_s * 1000:
        return []
    return [("steer.steer_latency_ms",
             f"must be below the wired probe deadline ({deadline_s * 1000:g} ms with "
             f"probes.detector {probes.detector!r}): later answers count as lost, the "
             f"latency could never steer; got {config.steer.steer_latency_ms!r}")]


def _fleet_checks(config: Config) -> Problems:
    fleet = config.fleet
    problems = _at_most("fleet.state_min_interval_s", fleet.state_min_interval_s,
                        "fleet.state_every_s", fleet.state_every_s)
    if fleet.password_file and not fleet.username:
        problems.append(("fleet.password_file", "needs fleet.username (MQTT sends a password "
                                                "only with a user name)"))
    if fleet.ca_file and not fleet.mqtt_url.startswith("mqtts://"):
        problems.append(("fleet.ca_file", f"needs an mqtts:// fleet.mqtt_url, got "
                                          f"{fleet.mqtt_url!r}"))
    # credentials are sent only with a user name (a password alone is refused above)
    if fleet.mqtt_url.startswith("mqtt://") and fleet.username and not fleet.allow_insecure:
        problems.append(("fleet.mqtt_url",
                         "sends fleet.username and the password in clear text: use mqtts://, "
                         "or set fleet.allow_insecure = true (tests and labs only), got "
                         f"{fleet.mqtt_url!r}"))
    return problems


def _payments_checks(config: Config) -> Problems:
    problems = []
    payments = config.payments
    if payments.gateway_url.startswith("http://") and not payments.allow_insecure_gateway:
        problems.append(("payments.gateway_url",
                         "must be https:// (card numbers cross it); a plain http:// gateway "
                         "only with payments.allow_insecure_gateway = true (drills and tests), "
                         f"got {payments.gateway_url!r}"))
    if payments.currency in payments.currency_limits:
        problems.append(("payments.currency_limits",
                         f"{payments.currency} is the box's currency (payments.currency): "
                         "its caps are offline_max_amount, offline_max_total and "
                         "velocity_max_amount"))
    if payments.key_provider == "file" and config.device.environment == "production":
        problems.append(("payments.key_provider",
                         "\"file\" keeps the key-encryption key on the box's own disk: "
                         "development only; use \"pkcs11\" or \"systemd-creds\" when "
                         "device.environment is \"production\""))
    return problems


def _decode_error_line(message: str) -> int:
    marker = "at line "
    if marker in message:
        digits = message.split(marker, 1)[1].split(",", 1)[0].split(")", 1)[0]
        if digits.strip().isdigit():
            return int(digits)
    return 1


class _Validator:
    def __init__(self, name: str, lines: dict[str, int]) -> None:
        self.name = name
        self.lines = lines
        self.problems: list[Problem] = []

    def line_of(self, key: str) -> int:
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key.rpartition(".")[0]
        return 1

    def report(self, key: str, message: str) -> None:
        self.problems.append(Problem(self.name, self.line_of(key), key, message))

    def build(self, cls: type[Any], data: dict[str, Any], prefix: str) -> Any:
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
        values: dict[str, Any] = {}
        for key in data:
            if key not in fields:
                self.unknown(f"{prefix}{key}", key, list(fields))
        for fname, f in fields.items():
            key = f"{prefix}{fname}"
            hint = hints[fname]
            if isinstance(hint, type) and dataclasses.is_dataclass(hint):
                section = data.get(fname, {})
                if not isinstance(section, dict):
                    self.report(key, f"must be a table [{key}], got {section!r}")
                    section = {}
                if fname not in data and _has_required(hint):
                    self.report(key, f"required table [{key}] is missing")
                values[fname] = self.build(hint, section, f"{key}.")
            elif fname in data:
                values[fname] = self.check_value(key, data[fname], hint, f)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                if prefix.rstrip(".") in self.lines or not prefix:
                    self.report(key, "required key is missing")
                values[fname] = None
        if any(v is None and fields[k].default is dataclasses.MISSING
               and fields[k].default_factory is dataclasses.MISSING
               for k, v in values.items()):
            return None
        try:
            return cls(**{k: v for k, v in values.items() if v is not _BAD})
        except TypeError:
            return None

    def unknown(self, key: str, name: str, known: list[str]) -> None:
        hint = difflib.get_close_matches(name, known, n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else f"; known keys: {', '.join(known)}"
        self.report(key, f"unknown key {name!r}{suggestion}")

    def check_value(self, key: str, value: Any, hint: Any, f: dataclasses.Field[Any]) -> Any:
        error = _type_error(value, hint)
        if error:
            self.report(key, error)
            return _BAD
        check = f.metadata.get("check")
        if check is not None:
            message = check(value)
            if message:
                self.report(key, message)
                return _BAD
        if hint is float and isinstance(value, int):
            return float(value)
        return value


_BAD: Any = object()


def _has_required(cls: type[Any]) -> bool:
    return any(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
               for f in dataclasses.fields(cls))


def _type_error(value: Any, hint: Any) -> str | None:
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        choices = typing.get_args(hint)
        if value in choices:
            return None
        return f"must be one of {', '.join(repr(c) for c in choices)}, got {value!r}"
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            return f"must be a list of {_TYPE_NAMES[item]}s, got {value!r}"
        for element in value:
            if _type_error(element, item):
                return f"must be a list of {_TYPE_NAMES[item]}s, got element {element!r}"
        return None
    if origin is dict:
        _, item = typing.get_args(hint)
        what = _TYPE_NAMES.get(item, "a table")  # a table of tables: its own check says
        if not isinstance(value, dict):
            return f"must be a table whose values are each {what}, got {value!r}"
        for name, element in value.items():
            problem = _type_error(element, item)
            if problem:
                return (f"must be a table whose values are each {what}, got {name} = "
                        f"{element!r}" + (f" ({problem})" if item not in _TYPE_NAMES else ""))
        return None
    if origin in (typing.Union, types.UnionType):
        return None if any(_type_error(value, a) is None for a in typing.get_args(hint)) else (
            f"has the wrong type, got {value!r}")
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    else:
        ok = isinstance(value, hint)
    return None if ok else f"must be {_TYPE_NAMES.get(hint, hint.__name__)}, got {value!r}"
