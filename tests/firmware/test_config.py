from __future__ import annotations

import os
from pathlib import Path

import pytest

from firmware.cli.main import main
from firmware.config import load_config, load_config_text
from firmware.config.schema import Config
from firmware.errors import ConfigError

EXAMPLE = Path(__file__).parents[2] / "firmware" / "data" / "example.toml"

MINIMAL = """\
[device]
id = "store-0001"

[payments]
gateway_url = "https://gateway.example"
"""

CONTRACT_KEYS = """\
[device]
id = "store-0001"
state_dir = "/var/lib/storebox"
[wired]
interface = "eth0"
[lte]
interface = "wwan0"
port = "/dev/ttyUSB2"
apn = "internet"
[routing]
backend = "netlink"
[probes]
targets = ["tcp:203.0.113.10:443", "dns:203.0.113.53:gateway.example", "https://gateway.example/health"]
[payments]
gateway_url = "https://gateway.example"
offline_max_amount = 50000
offline_max_total = 2000000
offline_max_count = 500
[api]
listen = "0.0.0.0:8470"
tokens_file = "/etc/storebox/pos-tokens"
[fleet]
mqtt_url = "mqtts://fleet.example:8883"
[hw]
pin_factory = "mock"
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, "box.toml")
    return [str(p) for p in info.value.problems]


def test_example_config_loads() -> None:
    config = load_config(EXAMPLE)
    assert config.device.id == "store-0001"
    assert config.wired.carrier == "KT"
    assert config.source == str(EXAMPLE)


def test_contract_keys_alone_are_a_complete_config() -> None:
    config = load_config_text(CONTRACT_KEYS)
    assert config.fleet.mqtt_url == "mqtts://fleet.example:8883"
    assert config.probes.targets[1] == "dns:203.0.113.53:gateway.example"


def test_defaults_are_applied() -> None:
    config = load_config_text(MINIMAL)
    assert isinstance(config, Config)
    assert config.device.state_dir == "/var/lib/storebox"
    assert config.api.listen == "0.0.0.0:8470"
    assert config.payments.offline_max_amount == 50000
    assert config.payments.online_deadline_s == 3.0
    assert config.routing.backend == "netlink"
    assert config.lte.port == "/dev/ttyUSB2"
    assert config.fleet.mqtt_url == ""
    assert config.hw.pin_factory == "mock"


def test_integer_accepted_where_a_number_is_expected() -> None:
    config = load_config_text(MINIMAL + "online_deadline_s = 2\n")
    assert config.payments.online_deadline_s == 2.0
    assert isinstance(config.payments.online_deadline_s, float)


def test_wrong_types_are_reported_with_their_line() -> None:
    text = MINIMAL + 'offline_max_amount = "lots"\n[lte]\nbaudrate = 1.5\n'
    assert problems(text) == [
        "box.toml:6: payments.offline_max_amount: must be an integer, got 'lots'",
        "box.toml:8: lte.baudrate: must be an integer, got 1.5",
    ]


def test_booleans_are_not_integers() -> None:
    assert problems(MINIMAL + "offline_max_count = true\n") == [
        "box.toml:6: payments.offline_max_count: must be an integer, got True",
    ]


def test_missing_required_keys() -> None:
    text = '[device]\nstate_dir = "/tmp/x"\n\n[payments]\noffline_max_count = 3\n'
    assert problems(text) == [
        "box.toml:1: device.id: required key is missing",
        "box.toml:4: payments.gateway_url: required key is missing",
    ]


def test_missing_required_table() -> None:
    assert problems('[device]\nid = "a"\n') == [
        "box.toml:1: payments: required table [payments] is missing",
    ]


def test_unknown_keys_get_a_did_you_mean_hint() -> None:
    text = MINIMAL + "[lte]\napm = \"internet\"\n[wried]\ninterface = \"eth0\"\n"
    assert problems(text) == [
        "box.toml:7: lte.apm: unknown key 'apm'; did you mean 'apn'?",
        "box.toml:8: wried: unknown key 'wried'; did you mean 'wired'?",
    ]


def test_unknown_key_without_a_close_match_lists_known_keys() -> None:
    (problem,) = problems(MINIMAL + "[hw]\nzzz = 1\n")
    assert problem.startswith("box.toml:7: hw.zzz: unknown key 'zzz'; known keys: pin_factory")


def test_choices_and_checks() -> None:
    text = (MINIMAL + "[routing]\nbackend = \"iptables\"\n[api]\nlisten = \"8470\"\n"
            "[device]\n")
    # a duplicate [device] table is broken TOML, reported alone with its line
    (problem,) = problems(text)
    assert problem.startswith(
        "box.toml:10: <toml>: not valid TOML: Cannot declare ('device',) twice (at line 10")
    text = MINIMAL + "[routing]\nbackend = \"iptables\"\n[api]\nlisten = \"8470\"\n"
    assert problems(text) == [
        "box.toml:7: routing.backend: must be one of 'netlink', 'networkmanager', 'none', "
        "got 'iptables'",
        "box.toml:9: api.listen: must be HOST:PORT with a port from 1 to 65535, got '8470'",
    ]


def test_every_problem_is_reported_at_once() -> None:
    text = (
        "[device]\n"              # 1
        "id = \"bad id!\"\n"      # 2
        "[probes]\n"              # 3
        "targets = [\n"           # 4
        "  \"tcp:1.2.3.4:443\",\n"
        "  \"smoke-signals\",\n"
        "]\n"
        "interval_s = 0\n"        # 8
        "[payments]\n"            # 9
        "gateway_url = \"ftp://gw\"\n"  # 10
        "[fleet]\n"               # 11
        "mqtt_url = \"http://broker\"\n"  # 12
    )
    assert problems(text) == [
        "box.toml:2: device.id: must be 1-64 letters, digits, '.', '_' or '-' (it is an MQTT "
        "topic level), got 'bad id!'",
        "box.toml:4: probes.targets: target 'smoke-signals' is not one of tcp:HOST:PORT, "
        "dns:SERVER:NAME, icmp:HOST or an http(s):// URL",
        "box.toml:8: probes.interval_s: must be greater than 0, got 0",
        "box.toml:10: payments.gateway_url: must be an http:// or https:// URL, got 'ftp://gw'",
        "box.toml:12: fleet.mqtt_url: must be an mqtt:// or mqtts:// URL, or \"\" to disable "
        "the fleet agent, got 'http://broker'",
    ]


def test_keys_after_a_multiline_array_keep_their_lines() -> None:
    text = MINIMAL + 'blocked_bins = [\n  "411111",\n  "5200",\n]\nbogus = 1\n'
    (problem,) = problems(text)
    assert problem.startswith("box.toml:10: payments.bogus: unknown key 'bogus'; known keys: ")


def test_dotted_keys_are_located() -> None:
    text = 'lte.apm = "x"\n' + MINIMAL + 'lte.apn = "y"\n'
    assert problems(text) == [
        "box.toml:1: lte.apm: unknown key 'apm'; did you mean 'apn'?",
        "box.toml:7: payments.lte: unknown key 'lte'; known keys: gateway_url, "
        "allow_insecure_gateway, merchant_id, "
        "merchant_key_file, seal_key_file, key_provider, kek_file, pkcs11_module, "
        "pkcs11_token_label, pkcs11_pin_file, pkcs11_key_label, systemd_credential, "
        "key_cryptoperiod_days, retention_days, currency, currency_limits, offline_max_amount, "
        "offline_max_total, "
        "offline_max_count, online_deadline_s, online_replays, lost_attempt_lifetime_s, "
        "offline_max_age_s, "
        "velocity_window_s, velocity_max_count, velocity_max_amount, blocked_bins, "
        "forward_concurrency",
    ]


def test_broken_toml_reports_its_line() -> None:
    assert problems(MINIMAL + "[api\nlisten = 1\n") == [
        "box.toml:6: <toml>: not valid TOML: Expected ']' at the end of a table declaration "
        "(at line 6, column 5)",
    ]


def test_unreadable_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(missing)
    assert [str(p) for p in info.value.problems] == [
        f"{missing}:0: <file>: cannot read: No such file or directory"]


def test_unreadable_permissions(tmp_path: Path) -> None:
    path = tmp_path / "box.toml"
    path.write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "cannot read" in str(info.value.problems[0])
    assert str(info.value.problems[0]).startswith(f"{path}:0: <file>:")


def test_config_check_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "good.toml"
    for name in ("merchant-key", "pos-tokens"):  # config check reads the files it names
        (tmp_path / name).write_text("secret-value\n")
        (tmp_path / name).chmod(0o600)
    good.write_text(MINIMAL + f'merchant_key_file = "{tmp_path / "merchant-key"}"\n'
                    f'[api]\ntokens_file = "{tmp_path / "pos-tokens"}"\n')
    assert main(["config", "check", "--config", str(good)]) == 0
    assert capsys.readouterr().out == f"{good}: ok\n"
    bad = tmp_path / "bad.toml"
    bad.write_text(MINIMAL + "[lte]\napm = 1\n")
    assert main(["config", "check", "--config", str(bad)]) == 2
    assert capsys.readouterr().err == (
        f"{bad}:7: lte.apm: unknown key 'apm'; did you mean 'apn'?\n")


def test_config_check_as_a_process(tmp_path: Path) -> None:
    import subprocess
    import sys

    bad = tmp_path / "bad.toml"
    bad.write_text("[device]\nid = 5\n")
    proc = subprocess.run([sys.executable, "-m", "firmware", "config", "check", "--config",
                           str(bad)], capture_output=True, text=True, env=dict(os.environ))
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"{bad}:1: payments: required table [payments] is missing",
        f"{bad}:2: device.id: must be a string, got 5",
    ]


def test_rules_across_keys() -> None:
    assert load_config_text(MINIMAL + '[probes]\ntargets = ["icmp:1.2.3.4"]\n'
                            ).probes.effective_quorum == 1
    assert load_config_text(MINIMAL).probes.effective_quorum == 2
    text = MINIMAL + ('[probes]\ntargets = ["tcp:1.2.3.4:443"]\nquorum = 2\n'
                      '[routing]\nlan_interfaces = ["eth0"]\nlte_allowlist = ["10.0.0.1/8"]\n')
    assert problems(text) == [
        "box.toml:8: probes.quorum: must be at most the number of "
        "probes.targets (1), got 2",
        "box.toml:10: routing.lan_interfaces: 'eth0' is an uplink interface, not a LAN",
        "box.toml:11: routing.lte_allowlist: entry '10.0.0.1/8' is not an IP address or "
        "CIDR: 10.0.0.1/8 has host bits set",
    ]
