"""`storebox selftest [--json] [--record]`: may this firmware stay (A/B updates, docs/cli.md)?

Run by the update client after booting the new slot: Mender's ArtifactCommit state
script, RAUC's mark-good service, or the Pi's tryboot commit. Exit codes **(binding)**:

* 0 healthy: commit the update;
* 1 broken: roll back;
* 2 cannot tell yet: ask again later (the daemon is still starting, the modem is
  still enumerating...). A check that would be broken turns into 2 while the daemon has
  been up for less than ``--grace`` seconds (since boot when it does not answer).

An internet outage alone is never 1: uplink health is not judged, only that every
uplink the daemon calls up has its route. `--record` (before the update) writes what
must survive it: the schema's migrations, the ids of the queued payments, whether the
modem answered and its SIM was ready. The checks: config loads; database integrity
(``PRAGMA quick_check``, read-only), its migrations known to this firmware and none of
the recorded ones missing, every recorded queued payment still there; the daemon's
/healthz and status (its key provider opened the store, no component failing, LEDs
claimed); `nft` and `conntrack` work with the unit's capabilities; the nft table (with
LAN forwarding) and the routes; the modem answers and the SIM is ready if they were.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from firmware.config import DEFAULT_PATH, Config, load_config
from firmware.errors import ApiClientError, ConfigError

HEALTHY, BROKEN, UNSURE = 0, 1, 2
OK, FAIL, WAIT, SKIP = "ok", "broken", "unknown", "skipped"
RECORD_NAME = "selftest-record.json"
UNIT = "storebox.service"
#: The unit's capabilities (systemd/storebox.service), for running nft/conntrack as it does.
UNIT_CAPS = "net_admin,net_raw"
DB_NAME = "payments.sqlite3"  # payments_cache.store.DB_NAME, without importing the store


@dataclass
class Check:
    name: str
    result: str  # ok | broken | unknown | skipped
    detail: str = ""
    #: broken only once the daemon had its grace period; "unknown" before
    soft: bool = False


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    grace_s: float = 300.0
    up_s: float | None = None  # how long the daemon (else the system) has been up

    def add(self, name: str, result: str, detail: str = "", soft: bool = False) -> None:
        self.checks.append(Check(name, result, detail, soft))

    def effective(self, check: Check) -> str:
        if check.result == FAIL and check.soft and (self.up_s is None or self.up_s < self.grace_s):
            return WAIT
        return check.result

    @property
    def exit_code(self) -> int:
        results = [self.effective(c) for c in self.checks]
        if FAIL in results:
            return BROKEN
        return UNSURE if WAIT in results else HEALTHY

    def to_json(self) -> dict[str, Any]:
        verdict = {HEALTHY: "healthy", BROKEN: "broken", UNSURE: "unknown"}[self.exit_code]
        return {"verdict": verdict, "exit_code": self.exit_code, "grace_s": self.grace_s,
                "up_s": self.up_s,
                "checks": [dict(asdict(c), result=self.effective(c)) for c in self.checks]}


# --- the box, as the checks see it (tests replace these) ---------------------------------

@dataclass
class Box:
    """What the checks read from the machine; every field is replaceable in tests.
    `systemd_unit`: the unit's properties (plus "up_s", seconds since it began to
    start), None without a running systemd."""

    api: Callable[[Config, str], dict[str, Any]]
    run: Callable[[list[str], bool], tuple[int, str]]
    systemd_unit: Callable[[], dict[str, str] | None]
    boot_uptime: Callable[[], float | None]
    claim_gpio: Callable[[Config], str | None]


def _api(config: Config, path: str) -> dict[str, Any]:
    from firmware.cli.client import api_address, get_json, read_token

    return get_json(api_address(config, None), path, read_token(config), timeout=5.0)


def _run(cmd: list[str], as_unit: bool) -> tuple[int, str]:
    """Run `cmd`; with `as_unit` as the unit would (user storebox, only its capabilities)
    when this process is root and the user exists. (exit code, last line of output)."""
    if as_unit and os.geteuid() == 0 and shutil.which("setpriv"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam("storebox")
            caps = ",".join(f"+{c}" for c in UNIT_CAPS.split(","))
            cmd = ["setpriv", "--reuid=storebox", "--regid=storebox", "--init-groups",
                   f"--inh-caps=-all,{caps}", f"--ambient-caps=-all,{caps}",
                   f"--bounding-set=-all,{caps}", "--no-new-privs", "--", *cmd]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return 127, str(exc)
    lines = (proc.stderr.strip() or proc.stdout.strip()).splitlines()
    return proc.returncode, lines[-1] if lines else ""


def _systemd_unit() -> dict[str, str] | None:
    """The unit's state from systemd, or None when systemd is not running here."""
    if not Path("/run/systemd/system").is_dir() or not shutil.which("systemctl"):
        return None
    props = "ActiveState,SubState,Result,NRestarts,LoadState,InactiveExitTimestampMonotonic"
    try:
        proc = subprocess.run(["systemctl", "show", UNIT, "-p", props], capture_output=True,
                              text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    unit = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    started = unit.get("InactiveExitTimestampMonotonic", "0")
    if started.isdigit() and int(started) > 0:  # systemd's monotonic clock is ours
        unit["up_s"] = f"{time.monotonic() - int(started) / 1e6:.1f}"
    return unit


def _boot_uptime() -> float | None:
    try:
        return float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _claim_gpio(config: Config) -> str | None:
    """Claim and release every LED line with the configured pin factory; the problem, or
    None. Only while the daemon is not running (it holds the lines)."""
    from hw.gpio import make_pin_factory

    try:
        factory = make_pin_factory(config.hw.pin_factory)
    except Exception as exc:  # the backend's own errors: no gpiochip, no lgpio...
        return f"pin factory {config.hw.pin_factory!r}: {exc}"
    try:
        for led, name in config.hw.led_pins.items():
            try:
                pin = factory.pin(name)
                pin.function = "output"
                pin.close()
            except Exception as exc:
                return f"LED {led} ({name}): {exc}"
    finally:
        with contextlib.suppress(Exception):
            factory.close()
    return None


def real_box() -> Box:
    return Box(api=_api, run=_run, systemd_unit=_systemd_unit, boot_uptime=_boot_uptime,
               claim_gpio=_claim_gpio)


# --- the database, read-only ---------------------------------------------------------------

@dataclass
class DbFacts:
    exists: bool
    quick_check: str = ""
    migrations: list[str] = field(default_factory=list)
    queued_ids: list[str] = field(default_factory=list)
    payment_ids: set[str] = field(default_factory=set)


def read_db(state_dir: str) -> DbFacts:
    """Integrity, migrations and queue of the store, opened read-only (the daemon may be
    running; the key is the daemon's business and shows in its status)."""
    path = Path(state_dir) / DB_NAME
    if not path.exists():
        return DbFacts(exists=False)
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        quick = "; ".join(r[0] for r in conn.execute("PRAGMA quick_check").fetchall())
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master "
                                             "WHERE type = 'table'")}
        migrations = [r[0] for r in conn.execute("SELECT name FROM migrations ORDER BY id")] \
            if "migrations" in tables else []
        queued: list[str] = []
        ids: set[str] = set()
        if "payments" in tables:
            queued = [r[0] for r in conn.execute(
                "SELECT id FROM payments WHERE forward_state IN ('queued', 'unknown') "
                "ORDER BY id")]
            ids = {r[0] for r in conn.execute("SELECT id FROM payments")}
        return DbFacts(True, quick, migrations, queued, ids)
    finally:
        conn.close()


def known_migrations() -> list[str]:
    from payments_cache.migrations import MIGRATIONS

    return [m.name for m in MIGRATIONS]


# --- the checks ----------------------------------------------------------------------------

def record_path(config: Config, override: str | None) -> Path:
    return Path(override) if override else Path(config.device.state_dir) / RECORD_NAME


def take_record(config: Config, box: Box) -> dict[str, Any]:
    """What must still hold after the update."""
    db = read_db(config.device.state_dir)
    record: dict[str, Any] = {"recorded_at": time.time(), "database": db.exists,
                              "migrations": db.migrations, "queued_ids": db.queued_ids,
                              "modem_present": None, "sim_ready": None}
    with contextlib.suppress(ApiClientError):
        modem = box.api(config, "/v1/status").get("modem", {})
        record["modem_present"] = bool(modem.get("present"))
        record["sim_ready"] = modem.get("sim") == "ready"
    return record


def run_checks(config_path: str, box: Box, record_file: str | None,
               grace_s: float) -> Report:
    report = Report(grace_s=grace_s)
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        report.add("config", FAIL, "; ".join(str(p) for p in exc.problems))
        return report
    except OSError as exc:
        report.add("config", FAIL, f"{config_path}: {exc.strerror or exc}")
        return report
    report.add("config", OK, config_path)
    record = _load_record(record_path(config, record_file), report)
    _check_database(config, record, report)
    status = _check_daemon(config, box, report)
    _check_tools(config, box, report)
    _check_network(config, box, status, report)
    _check_modem(status, record, report)
    _check_gpio(config, box, status, report)
    return report


def _load_record(path: Path, report: Report) -> dict[str, Any] | None:
    try:
        record: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        report.add("record", SKIP, f"no {path} (`storebox selftest --record` before an "
                                   "update): nothing to compare")
        return None
    except (OSError, ValueError) as exc:
        report.add("record", FAIL, f"{path} unreadable: {exc}")
        return None
    report.add("record", OK, str(path))
    return record


def _check_database(config: Config, record: dict[str, Any] | None, report: Report) -> None:
    try:
        db = read_db(config.device.state_dir)
    except sqlite3.Error as exc:
        report.add("database", FAIL, f"cannot read the store: {exc}")
        return
    if not db.exists:
        if record and record.get("database"):
            report.add("database", FAIL, "the database is gone (it existed before the update)")
        else:
            report.add("database", OK, "no database yet (a new box)")
        return
    if db.quick_check != "ok":
        report.add("database", FAIL, f"PRAGMA quick_check: {db.quick_check[:300]}")
        return
    known = known_migrations()
    unknown = [m for m in db.migrations if m not in known]
    if unknown:
        report.add("database", FAIL, f"migrated by newer firmware ({', '.join(unknown)}): "
                                     "this firmware cannot open it")
        return
    before = list(record.get("migrations", [])) if record else []
    missing = [m for m in before if m not in db.migrations]
    if missing:
        report.add("database", FAIL, f"schema lost migrations {missing}: not the same database")
        return
    lost = [i for i in (record.get("queued_ids", []) if record else []) if i not in db.payment_ids]
    if lost:
        report.add("database", FAIL, f"{len(lost)} payments queued before the update are "
                                     f"gone: {', '.join(lost[:5])}")
        return
    pending = [m for m in known if m not in db.migrations]
    if pending:
        report.add("database", FAIL, f"migrations not applied yet: {', '.join(pending)}",
                   soft=True)
        return
    schema = db.migrations[-1] if db.migrations else "-"
    before_queued = f" (before: {len(record.get('queued_ids', []))})" if record else ""
    report.add("database", OK, f"quick_check ok; schema {schema} ({len(db.migrations)} "
                               f"migrations); queued {len(db.queued_ids)}{before_queued}")


def _check_daemon(config: Config, box: Box, report: Report) -> dict[str, Any] | None:
    unit = box.systemd_unit()
    if unit is not None and unit.get("LoadState") == "loaded":
        if unit.get("ActiveState") == "failed":
            report.add("service", FAIL, f"{UNIT} failed ({unit.get('Result')}, "
                                        f"{unit.get('NRestarts')} restarts)")
            report.up_s = box.boot_uptime()
            return None
        report.add("service", OK if unit.get("ActiveState") == "active" else WAIT,
                   f"{UNIT} {unit.get('ActiveState')}/{unit.get('SubState')}, "
                   f"{unit.get('NRestarts', '?')} restarts")
    try:
        health = box.api(config, "/healthz")
        status = box.api(config, "/v1/status")
    except ApiClientError as exc:
        # since the unit (re)started; else since boot (no systemd here)
        report.up_s = float(unit["up_s"]) if unit and "up_s" in unit else box.boot_uptime()
        report.add("api", FAIL, f"the daemon does not answer: {exc}", soft=True)
        return None
    report.up_s = float(status.get("uptime_s") or 0.0)
    report.add("api", OK if health.get("ok") else FAIL,
               f"/healthz {health}; phase {status.get('phase')}")
    failing = {name: c for name, c in (status.get("components") or {}).items()
               if c.get("state") == "restarting"}
    payments = status.get("payments") or {}
    faults = payments.get("faults") or []
    fault_codes = [str(f) for f in faults]
    if any("key_provider" in code for code in fault_codes):
        report.add("keys", FAIL, f"the store is not open with its key: {fault_codes}",
                   soft=True)
    else:
        report.add("keys", OK, f"store open, key provider {payments.get('key_provider')}")
    crashed = {n: c for n, c in failing.items() if n != "modem"}
    if crashed:
        detail = "; ".join(f"{n}: {c.get('state')} ({c.get('last_error')})"
                           for n, c in crashed.items())
        report.add("components", FAIL, detail, soft=True)
    else:
        report.add("components", OK, ", ".join(sorted(status.get("components") or {})))
    return status


def _check_tools(config: Config, box: Box, report: Report) -> None:
    if config.routing.backend == "none" and not config.routing.failover:
        report.add("nft", SKIP, "route control is off")
        return
    for name, cmd in (("nft", ["nft", "list", "tables"]), ("conntrack", ["conntrack", "-C"])):
        code, out = box.run(cmd, True)
        detail = f"`{' '.join(cmd)}` with CAP_NET_ADMIN, CAP_NET_RAW"
        report.add(name, OK if code == 0 else FAIL, detail + (f": {out}" if code else ""))


def _check_network(config: Config, box: Box, status: dict[str, Any] | None,
                   report: Report) -> None:
    if status is None:
        report.add("routes", WAIT, "the daemon does not answer")
        return
    if config.routing.lan_interfaces and config.routing.failover:
        code, out = box.run(["nft", "list", "table", "inet", "storebox"], False)
        report.add("nft_table", OK if code == 0 else FAIL,
                   "table inet storebox" + ("" if code == 0 else f" missing: {out}"), soft=True)
    uplink = status.get("uplink") or {}
    for name, ifname in (("wired", config.wired.interface), ("lte", config.lte.interface)):
        state = (uplink.get(name) or {}).get("state")
        if state != "up":  # down is an outage, not a broken update
            report.add(f"route_{name}", OK, f"{name} is {state}: no route expected")
            continue
        code, out = box.run(["ip", "-4", "route", "show", "default", "dev", ifname], False)
        present = code == 0 and "default" in out
        report.add(f"route_{name}", OK if present else FAIL,
                   f"default route via {ifname}" + ("" if present else " missing"), soft=True)


def _check_modem(status: dict[str, Any] | None, record: dict[str, Any] | None,
                 report: Report) -> None:
    if status is None:
        report.add("modem", WAIT, "the daemon does not answer")
        return
    modem = status.get("modem") or {}
    was_present = bool(record and record.get("modem_present"))
    was_ready = bool(record and record.get("sim_ready"))
    if not modem.get("present"):
        report.add("modem", FAIL if was_present else OK,
                   "the modem does not answer AT" + (" (it did before)" if was_present
                                                     else " (nor did it before)"),
                   soft=True)
        return
    if was_ready and modem.get("sim") != "ready":
        report.add("modem", FAIL, f"SIM {modem.get('sim')} (it was ready before)", soft=True)
        return
    report.add("modem", OK, f"answers AT; SIM {modem.get('sim')}")


def _check_gpio(config: Config, box: Box, status: dict[str, Any] | None,
                report: Report) -> None:
    if status is not None:
        leds = (status.get("components") or {}).get("leds") or {}
        bad = leds.get("state") == "restarting"
        report.add("gpio", FAIL if bad else OK,
                   f"LED lines held by the daemon: {status.get('leds')}", soft=True)
        return
    problem = box.claim_gpio(config)
    report.add("gpio", OK if problem is None else FAIL,
               problem or f"LED lines claimed and released ({config.hw.pin_factory})",
               soft=True)


# --- the command ---------------------------------------------------------------------------

def add_parser(sub: Any) -> None:
    p = sub.add_parser("selftest", help="is this firmware healthy? (A/B updates: "
                                        "0 commit, 1 roll back, 2 ask again later)")
    p.add_argument("--config", default=DEFAULT_PATH, help=f"config file (default {DEFAULT_PATH})")
    p.add_argument("--json", action="store_true", help="print the checks as JSON")
    p.add_argument("--record", action="store_true",
                   help="before an update: record what must survive it, then exit 0")
    p.add_argument("--record-file", default=None,
                   help=f"where the record is kept (default <state_dir>/{RECORD_NAME})")
    p.add_argument("--grace", type=float, default=300.0,
                   help="seconds the daemon may take to get ready before a missing part "
                        "counts as broken rather than 'ask again later' (default 300)")


def cmd_selftest(args: argparse.Namespace, box: Box | None = None) -> int:
    box = box or real_box()
    if args.record:
        try:
            config = load_config(args.config)
        except ConfigError as exc:
            for problem in exc.problems:
                print(problem, file=sys.stderr)
            return BROKEN
        path = record_path(config, args.record_file)
        record = take_record(config, box)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(record, indent=2), encoding="utf-8")
        os.replace(tmp, path)
        print(f"recorded {path}: {len(record['queued_ids'])} queued, "
              f"schema {record['migrations'][-1] if record['migrations'] else '-'}")
        return HEALTHY
    report = run_checks(args.config, box, args.record_file, args.grace)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        for check in report.checks:
            print(f"{report.effective(check):8} {check.name:12} {check.detail}")
        print(report.to_json()["verdict"])
    return report.exit_code
