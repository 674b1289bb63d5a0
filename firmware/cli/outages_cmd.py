"""`storebox outages [--json|--csv] [--since ISO]`: the box's outage ledger (docs/cli.md),
read from `<state_dir>/outages.sqlite3` (read-only: it works with the daemon running or
not)."""

from __future__ import annotations

import argparse
import json
import sqlite3
import sys
from datetime import UTC, datetime
from typing import Any

from firmware.config import DEFAULT_PATH, load_config
from firmware.errors import ConfigError
from firmware.ledger.outages import as_csv, as_json, as_table, read_rows

EXIT_OK, EXIT_FAIL, EXIT_CONFIG = 0, 1, 2


def add_parser(sub: Any) -> None:
    p = sub.add_parser("outages", help="the uplink outage ledger (evidence for ISP claims)")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="print JSON")
    fmt.add_argument("--csv", action="store_true", help="print CSV (with a header line)")
    p.add_argument("--since", default=None,
                   help="only outages going on at or after this ISO 8601 time")
    p.add_argument("--config", default=DEFAULT_PATH, help=f"config file (default {DEFAULT_PATH})")


def _since(text: str | None) -> datetime | None:
    if text is None:
        return None
    when = datetime.fromisoformat(text)
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def cmd_outages(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_CONFIG
    try:
        since = _since(args.since)
    except ValueError:
        print(f"storebox outages: --since {args.since!r} is not an ISO 8601 time",
              file=sys.stderr)
        return EXIT_CONFIG
    try:
        rows = read_rows(config.device.state_dir, since)
    except sqlite3.Error as exc:
        print(f"storebox outages: cannot read the ledger: {exc}", file=sys.stderr)
        return EXIT_FAIL
    if args.json:
        print(json.dumps(as_json(rows), indent=2))
    elif args.csv:
        sys.stdout.write(as_csv(rows))
    else:
        print(as_table(rows))
    return EXIT_OK
