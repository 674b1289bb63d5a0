"""`storebox fleet serve|ls|incidents|show|export|watch|cmd|jobs|config|key`
(docs/cli.md): the operator's side.

`serve` runs the fleet server (`firmware.fleet_server`); the others use its JSON API
(`firmware.cli.fleet_api`: `--server URL`, else the `listen` of `--config`, else
http://127.0.0.1:8480): `ls` and `incidents` here, `show`, `export` and `incidents
--claim` in `fleet_views`, `watch` in `fleet_watch`; `cmd`, `jobs`, `config` and `key`
are operations (`fleet_ops_cmd`)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import urllib.parse
from typing import Any

from firmware.cli import fleet_ops_cmd, fleet_views, fleet_watch
from firmware.cli.fleet_api import API_ERRORS, add_server_options, fetch, server_url
from firmware.cli.fleet_views import BOX_HEADER, box_line

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
    fsub.choices["incidents"].add_argument(
        "--claim", type=int, default=None, metavar="ID",
        help="incident ID's claim report: each shop's outage minutes and offline payments "
             "(CSV; --json for JSON with totals)")
    fleet_views.add_parsers(fsub, add_server_options)
    fleet_watch.add_parser(fsub, add_server_options)
    fleet_ops_cmd.add_parsers(fsub)


def _serve(args: argparse.Namespace) -> int:
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


def cmd_fleet(args: argparse.Namespace) -> int:
    if args.fleet_command == "serve":
        return _serve(args)
    if args.fleet_command in fleet_ops_cmd.ACTIONS:
        return fleet_ops_cmd.run(args)
    if args.fleet_command == "watch":
        return fleet_watch.run(args, server_url(args))
    if args.fleet_command in ("show", "export") or getattr(args, "claim", None) is not None:
        return fleet_views.run(args, server_url(args))
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
        print(BOX_HEADER)
        for row in rows:
            print(box_line(row))
    else:
        for row in rows or []:
            state = "open" if row.get("ended_at") is None else "ended"
            print(f"#{row['id']} [{state}] {row['title']}")
        if not rows:
            print("no incidents")
    return EXIT_OK
