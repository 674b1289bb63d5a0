"""`storebox`: the daemon and the technician's commands (CONTRACTS §1)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence

from firmware.cli.client import api_address, get_json, read_token
from firmware.cli.status_view import render_status
from firmware.config import DEFAULT_PATH, Config, load_config
from firmware.errors import ApiClientError, ConfigError

EXIT_OK, EXIT_FAIL, EXIT_CONFIG = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="storebox", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon in the foreground (systemd Type=notify)")
    run.add_argument("--config", default=DEFAULT_PATH, help=f"config file (default {DEFAULT_PATH})")

    status = sub.add_parser("status", help="the box at a glance")
    status.add_argument("--json", action="store_true", help="print the status document")
    status.add_argument("--config", default=None, help=f"config file (default {DEFAULT_PATH})")
    status.add_argument("--api", default=None, help="API address: http://HOST:PORT or unix:/PATH")

    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = config_sub.add_parser("check", help="validate a config file")
    check.add_argument("--config", default=DEFAULT_PATH)
    return parser


def _load_or_report(path: str) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


def cmd_run(args: argparse.Namespace) -> int:
    from firmware.daemon import Daemon
    from firmware.logs import setup_logging

    config = _load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    setup_logging(config.device.log_level)

    async def main() -> int:
        return await Daemon(config).run()

    return asyncio.run(main())


def cmd_status(args: argparse.Namespace) -> int:
    config = None
    if args.config or args.api is None:
        config = _load_or_report(args.config or DEFAULT_PATH)
        if config is None and args.api is None:
            return EXIT_CONFIG
    address = api_address(config, args.api)
    try:
        doc = get_json(address, "/v1/status", read_token(config))
    except ApiClientError as exc:
        print(f"storebox status: {exc}", file=sys.stderr)
        return EXIT_FAIL
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(render_status(doc, colour=sys.stdout.isatty()))
    return EXIT_OK


def cmd_config_check(args: argparse.Namespace) -> int:
    config = _load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    print(f"{args.config}: ok")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "run":
        return cmd_run(args)
    if args.command == "status":
        return cmd_status(args)
    if args.command == "config":
        return cmd_config_check(args)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
