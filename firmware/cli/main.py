"""`storebox`: the daemon and the technician's commands (docs/cli.md)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from firmware.cli import drill_cmd, fleet_cmd, outages_cmd, selftest, token_cmd
from firmware.cli.client import api_address, get_json, read_token
from firmware.cli.status_view import render_queue_list, render_queue_stats, render_status
from firmware.config import DEFAULT_PATH, Config, load_config
from firmware.errors import ApiClientError, ConfigError

EXIT_OK, EXIT_FAIL, EXIT_CONFIG = 0, 1, 2
_EPILOG = ("Every command, option and exit code: docs/cli.md. The configuration keys: "
           "docs/config.md. The API the commands call: docs/openapi.json (also served by the "
           "box at GET /v1/openapi.json); the status document: docs/schemas/status.json.")
_API_HELP = ("API address: unix:/PATH (the admin socket; default from the config), "
             "https://HOST:PORT#sha256=<certificate SHA-256 to pin> (or $STOREBOX_API_PIN), "
             "or http://HOST:PORT on loopback")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="storebox", description=__doc__, epilog=_EPILOG)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon in the foreground (systemd Type=notify)")
    run.add_argument("--config", default=DEFAULT_PATH, help=f"config file (default {DEFAULT_PATH})")

    status = sub.add_parser("status", help="the box at a glance")
    status.add_argument("--json", action="store_true",
                        help="print the status document (docs/schemas/status.json)")
    status.add_argument("--config", default=None, help=f"config file (default {DEFAULT_PATH})")
    status.add_argument("--api", default=None, help=_API_HELP)

    queue = sub.add_parser("queue", help="the offline payment queue")
    queue.add_argument("action", choices=["stats", "list", "drain", "declined", "requeue"],
                       help="stats: totals by state; list: queued payments (masked); "
                            "drain: forward now; declined: approved offline, then declined "
                            "by the gateway; requeue ID: a stuck or dead payment back in "
                            "the queue under its own id")
    queue.add_argument("payment_id", nargs="?", help="the payment to requeue")
    queue.add_argument("--json", action="store_true", help="print JSON")
    queue.add_argument("--limit", type=int, default=100, help="rows for list (default 100)")
    queue.add_argument("--config", default=None, help=f"config file (default {DEFAULT_PATH})")
    queue.add_argument("--api", default=None, help=_API_HELP)

    modem = sub.add_parser("modem", help="talk AT to the LTE modem directly")
    modem_sub = modem.add_subparsers(dest="modem_command", required=True, metavar="ACTION")
    info = modem_sub.add_parser("info", help="identity, SIM, registration, operator, signal")
    info.add_argument("--port", required=True, help="device path or pyserial URL")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.add_argument("--baudrate", type=int, default=115200)
    info.add_argument("--timeout", type=float, default=5.0, help="seconds per command")
    info.add_argument("--wired-carrier", default="",
                      help="the wired ISP's carrier, to check carrier diversity")
    at = modem_sub.add_parser("at", help="send one raw AT command")
    at.add_argument("--port", required=True, help="device path or pyserial URL")
    at.add_argument("--baudrate", type=int, default=115200)
    at.add_argument("--timeout", type=float, default=10.0)
    at.add_argument("cmd", help='e.g. AT+CSQ or \'AT+QENG="servingcell"\'')

    keys = sub.add_parser("keys", help="card-data encryption keys")
    keys.add_argument("action", choices=["rotate"],
                      help="rotate: new data key, every stored card re-encrypted under it")
    keys.add_argument("--config", default=None, help=f"config file (default {DEFAULT_PATH})")
    keys.add_argument("--api", default=None, help=_API_HELP)

    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    check = config_sub.add_parser("check", help="validate a config file (keys: docs/config.md)")
    check.add_argument("--config", default=DEFAULT_PATH)

    drill_cmd.add_parser(sub)
    token_cmd.add_parser(sub)
    selftest.add_parser(sub)
    outages_cmd.add_parser(sub)
    fleet_cmd.add_parser(sub)
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
    from firmware.hardening import harden_memory
    from firmware.logs import setup_logging

    config = _load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    setup_logging(config.device.log_level)
    harden_memory()  # before the daemon reads its tokens and keys

    async def main() -> int:
        return await Daemon(config, freeze_heap=True).run()

    return asyncio.run(main())


def _api_call(args: argparse.Namespace, path: str, method: str = "GET") -> dict[str, Any] | int:
    """Call the daemon's API as the CLI does: address and token from the config."""
    config = None
    if args.config or args.api is None:
        config = _load_or_report(args.config or DEFAULT_PATH)
        if config is None and args.api is None:
            return EXIT_CONFIG
    try:
        return get_json(api_address(config, args.api), path, read_token(config), method=method)
    except ApiClientError as exc:
        print(f"storebox {args.command}: {exc}", file=sys.stderr)
        return EXIT_FAIL


def cmd_queue(args: argparse.Namespace) -> int:
    if args.action == "drain":
        result = _api_call(args, "/v1/queue/drain", method="POST")
        if isinstance(result, int):
            return result
        print("forwarding the queue now")
        return EXIT_OK
    if args.action == "requeue":
        if not args.payment_id:
            print("storebox queue requeue: which payment? (storebox queue list shows ids)",
                  file=sys.stderr)
            return EXIT_CONFIG
        result = _api_call(args, f"/v1/queue/{args.payment_id}/requeue", method="POST")
        if isinstance(result, int):
            return result
        print(f"{args.payment_id} is back in the queue")
        return EXIT_OK
    doc = _api_call(args, f"/v1/queue?limit={max(1, args.limit)}")
    if isinstance(doc, int):
        return doc
    rows = doc.get("declined_after_offline", []) if args.action == "declined" \
        else doc["payments"]
    if args.json:
        print(json.dumps(doc["stats"] if args.action == "stats" else rows, indent=2))
    elif args.action == "stats":
        print(render_queue_stats(doc["stats"]))
    else:
        print(render_queue_list(rows))
    return EXIT_OK


def cmd_modem(args: argparse.Namespace) -> int:
    from firmware.cli.modem_cmd import (
        ModemUnavailable,
        modem_at,
        modem_info,
        render_modem,
        status_json,
    )

    try:
        if args.modem_command == "info":
            snap = asyncio.run(modem_info(args.port, args.baudrate, args.timeout,
                                          args.wired_carrier))
            if args.json:
                print(json.dumps(status_json(args.port, snap), indent=2, default=str))
            else:
                print(render_modem(args.port, snap, colour=sys.stdout.isatty()))
            return EXIT_OK
        lines, final = asyncio.run(modem_at(args.port, args.cmd, args.baudrate, args.timeout))
    except ModemUnavailable as exc:
        print(f"storebox modem: {exc}", file=sys.stderr)
        return EXIT_FAIL
    for line in lines:
        print(line)
    print(final)
    return EXIT_OK if final.startswith("OK") or final.startswith("CONNECT") else EXIT_FAIL


def cmd_keys(args: argparse.Namespace) -> int:
    result = _api_call(args, "/v1/keys/rotate", method="POST")
    if isinstance(result, int):
        return result
    print(f"new data key {result['new_key_id']}: {result['reencrypted']} stored cards "
          f"re-encrypted, {len(result['retired_keys'])} old keys retired")
    if result["quarantined"]:
        print(f"quarantined (failed authentication): {', '.join(result['quarantined'])}")
        return EXIT_FAIL
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    doc = _api_call(args, "/v1/status")
    if isinstance(doc, int):
        return doc
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(render_status(doc, colour=sys.stdout.isatty()))
    return EXIT_OK


def cmd_config_check(args: argparse.Namespace) -> int:
    """The TOML first; when it is valid, the files it names (`firmware.config.files`)."""
    from pathlib import Path

    from firmware.config.files import file_problems
    from firmware.config.locate import key_lines
    from firmware.errors import Problem

    config = _load_or_report(args.config)
    if config is None:
        return EXIT_CONFIG
    found = file_problems(config)
    if found:
        lines = key_lines(Path(args.config).read_text(encoding="utf-8"))
        problems = [Problem(args.config, _line_of(lines, key), key, message)
                    for key, message in found]
        for problem in sorted(problems, key=lambda p: (p.line, p.key)):
            print(problem, file=sys.stderr)
        return EXIT_CONFIG
    print(f"{args.config}: ok")
    return EXIT_OK


def _line_of(lines: dict[str, int], key: str) -> int:
    """The key's line, else its table's (a default value), else 1, as the loader says."""
    while key:
        if key in lines:
            return lines[key]
        key = key.rpartition(".")[0]
    return 1


#: `storebox <command>` -> what runs it (the subparsers in `_parser`).
_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "status": cmd_status,
    "modem": cmd_modem,
    "keys": cmd_keys,
    "queue": cmd_queue,
    "config": cmd_config_check,
    "drill": drill_cmd.cmd_drill,
    "token": token_cmd.cmd_token,
    "selftest": selftest.cmd_selftest,
    "outages": outages_cmd.cmd_outages,
    "fleet": fleet_cmd.cmd_fleet,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return _COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
