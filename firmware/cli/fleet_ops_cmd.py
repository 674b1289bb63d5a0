"""`storebox fleet cmd|jobs|config|key`: fleet operations, through the fleet server.

`fleet cmd NAME` asks the server (`POST /api/jobs`) to run the command on the boxes that
match `--where`, and follows the job until it ends. The server, not this CLI, holds the
operator's key, sends, tracks the answers and records the job and the audit log: one
place that signs, one database writer, one audit trail, and no broker credentials or
private key on the operator's laptop. It prints progress while the job runs and the
summary (with the boxes that failed) at the end; exit 0 when every selected box that
was online answered ok, 1 otherwise (aborted, failures, or the server unreachable).

`fleet config push FILE` publishes a desired-config document (FILE: TOML tables
`[payments] offline_max_amount = 30000`, or JSON, flat `section.key` or nested);
`fleet config status` shows how many boxes converged. `fleet key new PATH` makes the
operator's key pair (PATH for `fleet_server.command_key_file`, PATH.pub for the boxes).
"""

from __future__ import annotations

import argparse
import getpass
import json
import socket
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from firmware.cli.fleet_api import API_ERRORS, add_server_options, fetch, post, server_url

ACTIONS = ("cmd", "jobs", "config", "key")
EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
POLL_S = 0.5
FAILURES = ("refused", "error", "no_answer")


def add_parsers(fsub: Any) -> None:
    cmd = fsub.add_parser("cmd", help="run a (signed) command on many boxes, as a job")
    cmd.add_argument("name", help="the command (ping, status, queue_drain, ...)")
    cmd.add_argument("--arg", action="append", default=[], metavar="KEY=VALUE",
                     help="an argument (VALUE as JSON when it parses, else a string)")
    cmd.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                     help="only boxes where KEY (dotted: wired.state) is VALUE; repeatable")
    cmd.add_argument("--rate", default="100/s", metavar="N/s", help="sends per second")
    cmd.add_argument("--abort-after-failures", type=float, default=None, metavar="PCT",
                     help="stop sending once more than PCT %% of the answers are failures")
    cmd.add_argument("--min-sample", type=int, default=None, metavar="N",
                     help="boxes with an outcome before the abort rule applies (10)")
    cmd.add_argument("--timeout", type=float, default=None, metavar="S",
                     help="wait this long for each box's answer (the server's default)")
    cmd.add_argument("--no-wait", action="store_true", help="print the job id and return")
    _common(cmd)
    jobs = fsub.add_parser("jobs", help="command jobs, newest first; or one job")
    jobs.add_argument("id", nargs="?", help="one job, with every box's result")
    _common(jobs)
    config = fsub.add_parser("config", help="the fleet's desired configuration")
    csub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    push = csub.add_parser("push", help="sign and publish FILE as the next version")
    push.add_argument("file", help="TOML or JSON settings (section.key = value)")
    _common(push)
    _common(csub.add_parser("status", help="the version and how many boxes converged"))
    key = fsub.add_parser("key", help="the operator's signing key")
    ksub = key.add_subparsers(dest="key_command", required=True, metavar="ACTION")
    new = ksub.add_parser("new", help="write PATH (private, 0600) and PATH.pub")
    new.add_argument("path")


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--operator", default=None, help="who asks (default user@host)")
    add_server_options(parser)


def run(args: argparse.Namespace) -> int:
    if args.fleet_command == "key":
        return _new_key(args.path)
    try:
        if args.fleet_command == "cmd":
            return _cmd(args)
        if args.fleet_command == "jobs":
            return _jobs(args)
        if args.config_command == "push":
            return _push(args)
        return _config_status(args)
    except API_ERRORS as exc:
        print(f"storebox fleet {args.fleet_command}: {exc}", file=sys.stderr)
        return EXIT_FAIL


def _operator(args: argparse.Namespace) -> str:
    return str(args.operator or f"{getpass.getuser()}@{socket.gethostname()}")


def parse_rate(text: str) -> float:
    """`200/s` or `200` → 200.0."""
    number = text[:-2] if text.endswith("/s") else text
    return float(number)


def parse_arg(item: str) -> tuple[str, Any]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ValueError(f"--arg {item!r}: expected KEY=VALUE")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


# ---------------------------------------------------------------------- cmd, jobs


def _cmd(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"name": args.name, "args": dict(parse_arg(a) for a in args.arg),
                            "where": args.where, "rate": parse_rate(args.rate),
                            "operator": _operator(args)}
    for key, value in (("abort_after_failures_pct", args.abort_after_failures),
                       ("min_sample", args.min_sample), ("timeout_s", args.timeout)):
        if value is not None:
            body[key] = value
    server = server_url(args)
    job = post(server + "/api/jobs", body)
    if not args.json:
        print(f"job {job['id']}: {job['name']} to {job['targets']} boxes at "
              f"{job['rate']:g}/s{'' if job['signed'] else ' (unsigned: no operator key)'}")
    if args.no_wait:
        print(json.dumps(job, indent=2) if args.json else job["id"])
        return EXIT_OK
    job = _follow(server, job, quiet=args.json)
    job["results"] = fetch(f"{server}/api/jobs/{job['id']}?results=failures")["results"]
    if args.json:
        print(json.dumps(job, indent=2))
    else:
        _print_summary(job)
    return EXIT_OK if job["status"] == "done" and not job["results"] else EXIT_FAIL


def _follow(server: str, job: dict[str, Any], quiet: bool) -> dict[str, Any]:
    """Poll the job until it ends, printing a progress line whenever it moved."""
    last = None
    while True:
        line = _progress(job)
        if line != last and not quiet:
            print(line, flush=True)
            last = line
        if job["status"] != "running":
            return job
        time.sleep(POLL_S)
        job = fetch(f"{server}/api/jobs/{job['id']}?results=none")


def _progress(job: dict[str, Any]) -> str:
    c = job["counts"]
    return (f"  {c['sent']}/{job['targets']} sent: ok {c['ok']}, refused {c['refused']}, "
            f"error {c['error']}, no answer {c['no_answer']}, offline {c['offline']}, "
            f"waiting {c['waiting']}")


def _print_summary(job: dict[str, Any]) -> None:
    c = job["counts"]
    reason = f" ({job['reason']})" if job.get("reason") else ""
    print(f"job {job['id']} {job['status']}{reason}: {c['ok']} ok, {c['refused']} refused, "
          f"{c['error']} error, {c['no_answer']} no answer, {c['offline']} offline, "
          f"{c['not_sent']} not sent, of {job['targets']}")
    for r in job.get("results", [])[:50]:
        detail = ": ".join(x for x in (r.get("code"), r.get("message")) if x)
        print(f"  {r['device_id']:20} {r['outcome']:9} {detail}")


def _jobs(args: argparse.Namespace) -> int:
    server = server_url(args)
    if args.id:
        job = fetch(f"{server}/api/jobs/{args.id}")
        if args.json:
            print(json.dumps(job, indent=2))
        else:
            _print_summary(job)
        return EXIT_OK
    rows = fetch(server + "/api/jobs")
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    for job in rows:
        c = job["counts"]
        print(f"{job['id']} {job['created_at'][:19]} {job['status']:8} {job['name']:14} "
              f"{c['ok']}/{job['targets']} ok  by {job['actor']}")
    if not rows:
        print("no jobs")
    return EXIT_OK


# ---------------------------------------------------------------------- config, key


def read_settings(path: str) -> dict[str, Any]:
    """FILE's settings as dotted `section.key` names."""
    text = Path(path).read_text(encoding="utf-8")
    try:
        doc = json.loads(text) if path.endswith(".json") else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
    if isinstance(doc.get("settings"), dict):
        doc = doc["settings"]
    settings: dict[str, Any] = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            settings.update({f"{key}.{name}": v for name, v in value.items()})
        else:
            settings[key] = value
    return settings


def _push(args: argparse.Namespace) -> int:
    settings = read_settings(args.file)
    doc = post(server_url(args) + "/api/config",
               {"settings": settings, "operator": _operator(args)})
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(f"desired config version {doc['version']} published: "
              f"{', '.join(sorted(doc['settings']))}")
    return EXIT_OK


def _config_status(args: argparse.Namespace) -> int:
    status = fetch(server_url(args) + "/api/config")
    if args.json:
        print(json.dumps(status, indent=2))
        return EXIT_OK
    if status["version"] is None:
        print("no desired config pushed yet")
        return EXIT_OK
    print(f"desired config version {status['version']} (issued {status['issued_at']} by "
          f"{status['actor']}): {status['converged']} of {status['boxes']} boxes converged, "
          f"{status['pending']} pending, {status['offline']} offline, "
          f"{len(status['refused'])} refused")
    for r in status["refused"][:50]:
        field = f" ({r['field']})" if r.get("field") else ""
        print(f"  {r['device_id']:20} {r['code']}{field}: {r['message']}")
    return EXIT_OK


def _new_key(path: str) -> int:
    from firmware.fleet_server.signing import new_key_files

    try:
        private, public = new_key_files(path)
    except OSError as exc:
        print(f"storebox fleet key new: {path}: {exc.strerror}", file=sys.stderr)
        return EXIT_FAIL
    print(f"{private}: the operator's private key (fleet_server.command_key_file)\n"
          f"{public}: its public key, for every box (fleet.command_key_file)")
    return EXIT_OK
