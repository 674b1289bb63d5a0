"""`storebox fleet show DEVICE`, `fleet export [--csv|--json]` and `fleet incidents --claim
ID` (docs/cli.md): views of the fleet server's JSON API for the operator, in a terminal
or as files for a spreadsheet and for the ISP compensation claim.

Each reads the API of the server named by `--server`/`--config` (the caller resolves it);
nothing here touches the server's database."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any

from firmware.errors import FirmwareError

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
#: `fleet export --csv`: these columns first (the rest of what the API gives follows, sorted).
EXPORT_FIRST = ("device_id", "presence", "online", "active", "wired.state", "lte.state",
                "queued", "queued_amount", "isp", "region", "modem.operator",
                "modem.same_carrier_as_wired", "last_seen", "state_at")
BOX_HEADER = (f"{'box':20} {'presence':8} {'active':6} {'wired':9} {'lte':9} {'queued':>6} "
              f"{'isp':8} {'region':10} last seen")


class FleetApiError(FirmwareError):
    """The fleet server's API gave no usable answer at `url`; `reason` says why."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"{url!r}: {reason}")


def add_parsers(fsub: Any, server_args: Callable[[argparse.ArgumentParser], None]) -> None:
    show = fsub.add_parser("show", help="one shop: its state, incidents and timeline")
    show.add_argument("device", metavar="DEVICE", help="the box's device.id")
    show.add_argument("--limit", type=int, default=20, help="timeline entries (default 20)")
    show.add_argument("--json", action="store_true", help="print JSON")
    server_args(show)
    export = fsub.add_parser("export", help="every box as CSV (default) or JSON")
    fmt = export.add_mutually_exclusive_group()
    fmt.add_argument("--csv", action="store_true", help="CSV, one row per box (default)")
    fmt.add_argument("--json", action="store_true", help="JSON, as GET /api/boxes")
    export.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                        help="only rows where KEY (dotted: wired.state) is VALUE; repeatable")
    server_args(export)


def box_line(b: dict[str, Any]) -> str:
    """One box in the `fleet ls` (and `fleet watch`) table, under `BOX_HEADER`."""
    wired = (b.get("wired") or {}).get("state") or "-"
    lte = (b.get("lte") or {}).get("state") or "-"
    return (f"{b['device_id']:20} {b.get('presence', '-'):8} {b.get('active')!s:6} "
            f"{wired:9} {lte:9} {b.get('queued')!s:>6} {b.get('isp') or '-':8} "
            f"{b.get('region') or '-':10} {b.get('last_seen') or '-'}")


def fetch(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (http only)
            body: bytes = response.read()
            return body
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace").strip()
        raise FleetApiError(url, f"{exc.code} {detail or exc.reason}") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise FleetApiError(url, str(exc)) from exc


def fetch_json(url: str) -> Any:
    try:
        return json.loads(fetch(url))
    except ValueError as exc:
        raise FleetApiError(url, f"not JSON: {exc}") from exc


def run(args: argparse.Namespace, server: str) -> int:
    """`show`, `export` or `incidents --claim` against `server`."""
    try:
        if args.fleet_command == "show":
            return _show(args, server)
        if args.fleet_command == "export":
            return _export(args, server)
        return _claim(args, server)
    except FleetApiError as exc:
        print(f"storebox fleet {args.fleet_command}: {exc}", file=sys.stderr)
        return EXIT_FAIL


def _show(args: argparse.Namespace, server: str) -> int:
    path = f"{server}/api/boxes/{urllib.parse.quote(args.device, safe='')}"
    box = fetch_json(path)
    timeline = fetch_json(f"{path}/timeline?limit={max(1, args.limit)}")
    if args.json:
        print(json.dumps({"box": box, "timeline": timeline}, indent=2))
    else:
        print(render_show(box, timeline))
    return EXIT_OK


def render_show(box: dict[str, Any], timeline: list[dict[str, Any]]) -> str:
    """`fleet show`: the shop's facts, then its timeline, newest first."""
    modem = box.get("modem") or {}
    lte = [(box.get("lte") or {}).get("state"), modem.get("operator"),
           f"{modem['signal_dbm']} dBm" if modem.get("signal_dbm") is not None else None]
    wired = box.get("wired") or {}
    facts = [("presence", f"{box.get('presence')} (session {box.get('session')})"),
             ("active uplink", box.get("active") or "none"),
             ("wired", ": ".join(str(v) for v in (wired.get("state"), wired.get("reason"))
                                 if v)),
             ("LTE", ", ".join(str(v) for v in lte if v)),
             ("queued offline", f"{box.get('queued') or 0}" + (
                 f", amount {box['queued_amount']}" if box.get("queued_amount") else "")),
             ("ISP / region", f"{box.get('isp') or '-'} / {box.get('region') or '-'}"),
             ("version", f"{box.get('version') or '-'} "
                         f"(config {box.get('config_version') or '-'})"),
             ("last seen", box.get("last_seen") or "-")]
    if modem.get("same_carrier_as_wired"):
        facts.append(("warning", "the LTE SIM is on the wired ISP's carrier"))
    facts += [(f"incident #{i['id']}", i["title"]) for i in box.get("incidents") or []]
    lines = [str(box["device_id"])] + [f"  {name:15} {value}" for name, value in facts]
    lines.append("timeline (newest first)" if timeline else "timeline: nothing recorded yet")
    for entry in timeline:
        what = f"{entry.get('kind')}" if entry.get("what") == "event" else "state"
        lines.append(f"  {str(entry.get('at') or '')[:19]:19}  {what:12} {entry.get('text')}")
    return "\n".join(lines)


def _export(args: argparse.Namespace, server: str) -> int:
    query = urllib.parse.urlencode([("where", w) for w in args.where])
    rows = fetch_json(f"{server}/api/boxes" + (f"?{query}" if query else ""))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        sys.stdout.write(export_csv(rows))
    return EXIT_OK


def flatten(doc: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"wired": {"state": "up"}}` -> `{"wired.state": "up"}` (lists as JSON)."""
    out: dict[str, Any] = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = json.dumps(value) if isinstance(value, list) else value
    return out


def export_csv(rows: Iterable[dict[str, Any]]) -> str:
    """The boxes as CSV: `EXPORT_FIRST` columns, then every other (dotted) key seen."""
    flat = [flatten(row) for row in rows]
    seen = {key for row in flat for key in row}
    columns = [c for c in EXPORT_FIRST if c in seen] + sorted(seen - set(EXPORT_FIRST))
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat)
    return out.getvalue()


def _claim(args: argparse.Namespace, server: str) -> int:
    base = f"{server}/api/incidents/{int(args.claim)}/claim"
    if args.json:
        print(json.dumps(fetch_json(base), indent=2))
    else:
        sys.stdout.write(fetch(f"{base}.csv").decode("utf-8"))
    return EXIT_OK
