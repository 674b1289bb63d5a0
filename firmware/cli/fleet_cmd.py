"""`storebox fleet serve|ls|incidents|...` (CONTRACTS §7): the operator's side.

`serve` runs the fleet server (`firmware.fleet_server`); `ls` and `incidents` read its
JSON API (`firmware.cli.fleet_api`); `cmd`, `jobs`, `config` and `key` are operations
(`firmware.cli.fleet_ops_cmd`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import urllib.parse
from typing import Any

from firmware.cli import fleet_ops_cmd
from firmware.cli.fleet_api import API_ERRORS, add_server_options, fetch, server_url

EXIT_OK, EXIT_FAIL, EXIT_CONFIG = 0, 1, 2


def add_parser(sub: Any) -> None:
    fleet = sub.add_parser("fleet", help="fleet operations: the server and its views")
    fsub = fleet.add_subparsers(dest="fleet_command", required=True, metavar="ACTION")
    serve = fsub.add_parser("serve", help="run the fleet server (MQTT ingest, API, dashboard)")
    serve.add_argument("--config", required=True, help="TOML with [fleet_server]")
    for name, text in (("ls", "every box: presence, uplinks, queue, ISP, region"),
                       ("incidents", "carrier outages seen across the fleet")):
        p = fsub.add_parser(name, help=text)
        p.add_argument("--json", action="store_true", help="print JSON")
        p.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                       help="only rows where KEY (dotted: wired.state) is VALUE; repeatable")
        add_server_options(p)
    fleet_ops_cmd.add_parsers(fsub)


def _box_line(b: dict[str, Any]) -> str:
    wired = (b.get("wired") or {}).get("state") or "-"
    lte = (b.get("lte") or {}).get("state") or "-"
    return (f"{b['device_id']:20} {b.get('presence', '-'):8} {b.get('active')!s:6} "
            f"{wired:9} {lte:9} {b.get('queued')!s:>6} {b.get('isp') or '-':8} "
            f"{b.get('region') or '-':10} {b.get('last_seen') or '-'}")


def cmd_fleet(args: argparse.Namespace) -> int:
    if args.fleet_command == "serve":
        from firmware.fleet_server.config import FleetServerConfigError, load
        from firmware.fleet_server.server import serve
        from firmware.logs import setup_logging

        try:
            config = load(args.config)
        except FleetServerConfigError as exc:
            print(exc, file=sys.stderr)
            return EXIT_CONFIG
        setup_logging("info")
        return asyncio.run(serve(config))
    if args.fleet_command in fleet_ops_cmd.ACTIONS:
        return fleet_ops_cmd.run(args)
    query = urllib.parse.urlencode([("where", w) for w in args.where])
    path = "/api/boxes" if args.fleet_command == "ls" else "/api/incidents"
    url = server_url(args) + path + (f"?{query}" if query else "")
    try:
        rows = fetch(url)
    except API_ERRORS as exc:
        print(f"storebox fleet {args.fleet_command}: {url}: {exc}", file=sys.stderr)
        return EXIT_FAIL
    if args.json:
        print(json.dumps(rows, indent=2))
    elif args.fleet_command == "ls":
        print(f"{'box':20} {'presence':8} {'active':6} {'wired':9} {'lte':9} {'queued':>6} "
              f"{'isp':8} {'region':10} last seen")
        for row in rows:
            print(_box_line(row))
    else:
        for row in rows or []:
            state = "open" if row.get("ended_at") is None else "ended"
            print(f"#{row['id']} [{state}] {row['title']}")
        if not rows:
            print("no incidents")
    return EXIT_OK
