"""Signed fleet commands: key files, the signed message, the validity window, replays;
and the `[fleet]` configuration keys."""

from __future__ import annotations

import base64
import dataclasses
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from firmware.config import load_config, load_config_text
from firmware.errors import ConfigError
from firmware.fleet.auth import (
    Authorizer,
    CommandRefused,
    KeyFileError,
    SignedFields,
    UsedIds,
    load_public_key,
)
from firmware.fleet.broker import broker_from
from firmware.fleet.commands import parse_request
from firmware.fleet.topics import canonical_message, topics_for
from tests.support.clock import ManualClock
from tests.support.mosquitto import sign_command

T0 = datetime(2021, 10, 25, 11, 20, tzinfo=UTC)
EXAMPLE = Path(__file__).parents[2] / "firmware" / "data" / "example.toml"


def test_the_signed_message_is_canonical_json() -> None:
    message = canonical_message("store-0001", "queue_drain", "c-1", {"b": 1, "a": "é"},
                                "2021-10-25T11:25:00+00:00")
    assert message == ('{"args":{"a":"é","b":1},"device_id":"store-0001",'
                       '"expires_at":"2021-10-25T11:25:00+00:00","id":"c-1",'
                       '"name":"queue_drain"}').encode()


@pytest.mark.parametrize("form", ["pem", "openssh", "raw"])
def test_public_key_file_formats(tmp_path: Path, form: str) -> None:
    key = Ed25519PrivateKey.generate()
    public = key.public_key()
    path = tmp_path / "operator.pub"
    if form == "pem":
        path.write_bytes(public.public_bytes(serialization.Encoding.PEM,
                                             serialization.PublicFormat.SubjectPublicKeyInfo))
    elif form == "openssh":
        path.write_bytes(public.public_bytes(serialization.Encoding.OpenSSH,
                                             serialization.PublicFormat.OpenSSH) + b" ops\n")
    else:
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        path.write_text(base64.b64encode(raw).decode() + "\n")
    loaded = load_public_key(str(path))
    as_raw = (serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert loaded.public_bytes(*as_raw) == public.public_bytes(*as_raw)
    loaded.verify(key.sign(b"hello"), b"hello")  # raises InvalidSignature on mismatch
    with pytest.raises(InvalidSignature):
        loaded.verify(key.sign(b"hello"), b"hellO")


def test_bad_key_files_are_explained(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read"):
        load_public_key(str(tmp_path / "missing"))
    garbage = tmp_path / "garbage"
    garbage.write_text("not a key\n")
    with pytest.raises(KeyFileError, match="no Ed25519 public key"):
        load_public_key(str(garbage))
    ecdsa = tmp_path / "ecdsa.pem"
    ecdsa.write_bytes(ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    with pytest.raises(KeyFileError, match="not an Ed25519"):
        load_public_key(str(ecdsa))


def _signed(key: Ed25519PrivateKey, expires: str, command_id: str = "c-1",
            name: str = "queue_drain") -> SignedFields:
    sig = key.sign(canonical_message("store-0001", name, command_id, {}, expires))
    return SignedFields(sig=base64.b64encode(sig).decode(), expires_at=expires)


def test_validity_window() -> None:
    key = Ed25519PrivateKey.generate()
    auth = Authorizer("store-0001", key.public_key(), wall=ManualClock(wall=T0.timestamp()).now)

    def check(expires: datetime | str, command_id: str) -> None:
        text = expires if isinstance(expires, str) else expires.isoformat()
        auth.authorize("queue_drain", command_id, {}, _signed(key, text, command_id))

    check(T0 + timedelta(hours=1), "edge-ahead")
    with pytest.raises(CommandRefused, match="ahead"):
        check(T0 + timedelta(hours=1, seconds=1), "too-far")
    with pytest.raises(CommandRefused) as info:
        check(T0, "edge-now")
    assert info.value.code == "expired"
    with pytest.raises(CommandRefused, match="UTC offset"):
        check("2021-10-25T11:25:00", "naive")
    with pytest.raises(CommandRefused, match="not ISO 8601"):
        check("tomorrow", "words")
    check("2021-10-25T11:25:00Z", "zulu")


def test_replays_are_refused_until_the_id_expires(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    clock = ManualClock(wall=T0.timestamp())
    used = UsedIds(tmp_path / "used.json")
    auth = Authorizer("store-0001", key.public_key(), wall=clock.now, used=used)
    fields = _signed(key, (T0 + timedelta(minutes=5)).isoformat())
    auth.authorize("queue_drain", "c-1", {}, fields)
    with pytest.raises(CommandRefused) as info:
        auth.authorize("queue_drain", "c-1", {}, fields)
    assert info.value.code == "replayed"
    reloaded = Authorizer("store-0001", key.public_key(), wall=clock.now,
                          used=UsedIds(tmp_path / "used.json"))
    with pytest.raises(CommandRefused, match="already used"):
        reloaded.authorize("queue_drain", "c-1", {}, fields)
    # later, the id's own expiry refuses it; and remembered ids are forgotten
    clock.advance(10 * 60)
    with pytest.raises(CommandRefused, match="expired"):
        auth.authorize("queue_drain", "c-1", {}, fields)
    auth.authorize("queue_drain", "c-2", {}, _signed(key, (clock.now() + timedelta(minutes=1))
                                                     .isoformat(), "c-2"))
    assert "c-1" not in used and "c-2" in used
    assert json.loads((tmp_path / "used.json").read_text()).keys() == {"c-2"}


# ---------------------------------------------------------------------- who may run a command

OPERATOR = Ed25519PrivateKey.generate()
INTRUDER = Ed25519PrivateKey.generate()
IN_5_MIN = (T0 + timedelta(minutes=5)).isoformat()


@dataclass(frozen=True)
class Presented:
    """A changing command as the box receives it: what `Authorizer.authorize` is given."""

    name: str = "queue_drain"
    command_id: str = "c-1"
    args: dict[str, Any] = field(default_factory=dict)
    sig: Any = None
    expires_at: Any = IN_5_MIN

    @property
    def signed(self) -> SignedFields:
        return SignedFields(sig=self.sig, expires_at=self.expires_at)

    def but(self, **changes: Any) -> Presented:
        """The same command with `changes` made after it was signed."""
        return dataclasses.replace(self, **changes)


def operator_signed(key: Ed25519PrivateKey = OPERATOR, *, name: str = "queue_drain",
                    device_id: str = "store-0001", args: dict[str, Any] | None = None,
                    expires_at: datetime | str = IN_5_MIN) -> Presented:
    """A command signed on the operator's side (`sign_command`, not the box's own code)."""
    when = expires_at if isinstance(expires_at, str) else expires_at.isoformat()
    sig = sign_command(key, device_id, name, "c-1", args or {}, when)
    return Presented(name=name, args=args or {}, sig=sig, expires_at=when)

#: Every way a changing command is refused: (case, presented, code, field, in message).
REFUSALS: list[tuple[str, Presented, str, str | None, str]] = [
    ("unsigned", Presented(), "unauthorized", "sig", "'sig'"),
    ("forged", operator_signed(INTRUDER), "bad_signature", "sig", "does not match"),
    ("signed for another box", operator_signed(device_id="store-other"),
     "bad_signature", "sig", "does not match"),
    ("args changed after signing", operator_signed().but(args={"force": True}),
     "bad_signature", "sig", "does not match"),
    ("signed for another command", operator_signed(name="config_reload").but(
        name="queue_drain"), "bad_signature", "sig", "does not match"),
    ("expired", operator_signed(expires_at=T0 - timedelta(seconds=1)),
     "expired", "expires_at", "expired"),
    ("valid too far ahead", operator_signed(expires_at=T0 + timedelta(hours=2)),
     "bad_request", "expires_at", "ahead"),
    ("signature not base64", operator_signed().but(sig="not base64!"),
     "bad_request", "sig", "not base64"),
    ("signature not a string", operator_signed().but(sig=12),
     "bad_request", "sig", "base64 string"),
    ("signature of the wrong length", operator_signed().but(
        sig=base64.b64encode(b"x" * 10).decode()), "bad_request", "sig", "64 bytes"),
    ("no expiry", operator_signed().but(expires_at=None),
     "bad_request", "expires_at", "missing"),
    ("expiry without a UTC offset", operator_signed(expires_at="2021-10-25T11:25:00"),
     "bad_request", "expires_at", "UTC offset"),
]


@pytest.mark.parametrize(("presented", "code", "field_name", "says"),
                         [case[1:] for case in REFUSALS], ids=[case[0] for case in REFUSALS])
def test_a_changing_command_is_refused(tmp_path: Path, presented: Presented, code: str,
                                       field_name: str | None, says: str) -> None:
    used = UsedIds(tmp_path / "used.json")
    auth = Authorizer("store-0001", OPERATOR.public_key(), wall=lambda: T0, used=used)
    with pytest.raises(CommandRefused) as refused:
        auth.authorize(presented.name, presented.command_id, presented.args, presented.signed)
    assert (refused.value.code, refused.value.field) == (code, field_name)
    assert says in refused.value.message
    assert presented.command_id not in used  # a refused command does not use up its id


def test_the_operators_command_is_accepted_once() -> None:
    auth = Authorizer("store-0001", OPERATOR.public_key(), wall=lambda: T0)
    good = operator_signed()
    auth.authorize(good.name, good.command_id, good.args, good.signed)
    assert good.command_id in auth.used
    with pytest.raises(CommandRefused) as refused:
        auth.authorize(good.name, good.command_id, good.args, good.signed)
    assert (refused.value.code, refused.value.field) == ("replayed", "id")


def test_without_a_key_every_changing_command_is_refused() -> None:
    auth = Authorizer("store-0001", None, wall=lambda: T0)
    good = operator_signed()
    with pytest.raises(CommandRefused) as refused:
        auth.authorize(good.name, good.command_id, good.args, good.signed)
    assert (refused.value.code, refused.value.field) == ("unauthorized", None)
    assert "command_key_file is empty" in refused.value.message


def test_parse_request_names_the_field() -> None:
    request, answer_id, refusal = parse_request(b'{"id": "x", "args": {}, "sig": "s"}')
    assert refusal is None and request is not None and answer_id == "x"
    assert request.signed.sig == "s"
    _, answer_id, refusal = parse_request(b'{"id": ""}')
    assert refusal is not None and refusal.field == "id" and "''" in refusal.message
    _, _, refusal = parse_request(b"\xff\xfe")
    assert refusal is not None and refusal.code == "bad_json"
    _, _, refusal = parse_request(b"{" + b" " * 20000 + b"}")
    assert refusal is not None and refusal.code == "too_large"


def test_topics() -> None:
    topics = topics_for("store-0001")
    assert topics.status == "storebox/store-0001/status"
    assert topics.state == "storebox/store-0001/state"
    assert topics.events == "storebox/store-0001/events"
    assert topics.commands == "storebox/store-0001/cmd/+"
    assert topics.command_result == "storebox/store-0001/cmd_result"
    assert topics.command_name("storebox/store-0001/cmd/ping") == "ping"
    assert topics.command_name("storebox/store-0002/cmd/ping") is None
    assert topics.command_name("storebox/store-0001/cmd/") is None


# ---------------------------------------------------------------------- configuration

BASE = """\
[device]
id = "store-0001"
[payments]
gateway_url = "https://gateway.example"
[fleet]
"""


def fleet_problems(keys: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config_text(BASE + keys, "box.toml")
    return [f"{p.key}: {p.message}" for p in info.value.problems]


def test_example_documents_every_fleet_key() -> None:
    config = load_config(EXAMPLE)
    fleet = config.fleet
    assert (fleet.mqtt_url, fleet.command_key_file, fleet.state_min_interval_s,
            fleet.state_every_s, fleet.event_buffer) == ("", "", 1.0, 60.0, 200)
    text = EXAMPLE.read_text()
    import dataclasses

    for f in dataclasses.fields(fleet):
        assert f"\n{f.name} = " in text, f"fleet.{f.name} is not in the example"
        assert f.metadata["doc"]


def test_broker_from_the_url() -> None:
    config = load_config_text(BASE + 'mqtt_url = "mqtts://fleet.example"\n')
    broker = broker_from(config)
    assert (broker.host, broker.port, broker.tls, broker.client_id) == (
        "fleet.example", 8883, True, "storebox-store-0001")
    config = load_config_text(BASE + 'mqtt_url = "mqtt://[::1]:1884"\n')
    broker = broker_from(config)
    assert (broker.url, broker.host, broker.port, broker.tls) == (
        "mqtt://[::1]:1884", "::1", 1884, False)


def test_fleet_keys_are_checked() -> None:
    assert fleet_problems('mqtt_url = "mqtts://user:pw@fleet.example"\n') == [
        "fleet.mqtt_url: must not hold credentials: put them in fleet.username and "
        "fleet.password_file"]
    assert "bad port" in fleet_problems('mqtt_url = "mqtt://fleet.example:99999"\n')[0]
    assert fleet_problems('mqtt_url = "mqtt://b"\nstate_min_interval_s = 5.0\n'
                          'state_every_s = 2.0\n') == [
        "fleet.state_min_interval_s: must be at most fleet.state_every_s (2.0), got 5.0"]
    assert fleet_problems('mqtt_url = "mqtt://b"\npassword_file = "/etc/pw"\n')[0].startswith(
        "fleet.password_file: needs fleet.username")
    assert fleet_problems('mqtt_url = "mqtt://b"\nca_file = "/etc/ca.pem"\n')[0].startswith(
        "fleet.ca_file: needs an mqtts://")
    assert fleet_problems("keepalive_s = 2\n") == [
        "fleet.keepalive_s: must be from 5 to 65535 seconds, got 2"]
    assert fleet_problems("event_buffer = 0\n") == [
        "fleet.event_buffer: must be greater than 0, got 0"]


def test_credentials_over_plain_mqtt_need_allow_insecure() -> None:
    creds = 'username = "store-0001"\npassword_file = "/etc/pw"\n'
    assert fleet_problems('mqtt_url = "mqtt://fleet.example"\n' + creds) == [
        "fleet.mqtt_url: sends fleet.username and the password in clear text: use mqtts://, "
        "or set fleet.allow_insecure = true (tests and labs only), got 'mqtt://fleet.example'"]
    assert fleet_problems('mqtt_url = "mqtt://b"\nusername = "u"\n')[0].startswith(
        "fleet.mqtt_url: sends fleet.username")
    for fine in ('mqtt_url = "mqtts://fleet.example"\n' + creds,
                 'mqtt_url = "mqtt://fleet.example"\n' + creds + "allow_insecure = true\n",
                 'mqtt_url = "mqtt://fleet.example"\n'):  # no credentials: nothing to leak
        assert load_config_text(BASE + fine).fleet.mqtt_url.startswith("mqtt")
