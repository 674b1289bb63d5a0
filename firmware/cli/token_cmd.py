"""`storebox token add|list|revoke`: the POS API's bearer tokens (docs/openapi.json).

`add` prints a new token once (192 random bits) and stores only its SHA-256 in
`api.tokens_file`; `list` shows names, scopes and creation times (never a whole hash);
`revoke` removes one by name. Each change rewrites the file atomically (0600, fsync'd,
renamed into place) under a lock on its directory, in the hashed form: plain tokens of the
old form are converted on the way (named `legacy-<line>`). The running daemon picks the
change up on SIGHUP (`systemctl reload storebox`).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from firmware.config import DEFAULT_PATH
from firmware.errors import ConfigError
from firmware.tokens import (
    NAME_RE,
    SCOPES,
    ParsedTokens,
    TokenEntry,
    daemon_uid,
    digest_of,
    file_owner,
    load_for_edit,
    locked_dir,
    new_token,
    now_iso,
    parse_scopes,
    write_tokens_file,
)

EXIT_OK, EXIT_FAIL, EXIT_CONFIG = 0, 1, 2
RELOAD_HINT = "the running daemon applies it on SIGHUP: systemctl reload storebox"


def add_parser(sub: Any) -> None:
    token = sub.add_parser("token", help="the POS API's bearer tokens (scopes pos, read, admin)")
    actions = token.add_subparsers(dest="action", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", default=DEFAULT_PATH,
                       help=f"config naming api.tokens_file (default {DEFAULT_PATH})")
        p.add_argument("--tokens-file", default=None,
                       help="the tokens file itself, instead of the config's")

    add = actions.add_parser("add", help="make a token, print it once, store its hash")
    add.add_argument("--scope", required=True,
                     help=f"comma list of {', '.join(SCOPES)} (e.g. pos or pos,read)")
    add.add_argument("--name", required=True, help="unique name, e.g. the till: till-1")
    common(add)
    listing = actions.add_parser("list", help="names, scopes, created (never the hashes)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    common(listing)
    revoke = actions.add_parser("revoke", help="remove a token by name")
    revoke.add_argument("name")
    common(revoke)


def _locate(args: argparse.Namespace) -> tuple[str, int] | None:
    """The tokens file and the daemon's uid (who must own it)."""
    if args.tokens_file:
        return args.tokens_file, daemon_uid(None)
    from firmware.config import load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None
    return config.api.tokens_file, daemon_uid(config.device.state_dir)


def _report(parsed: ParsedTokens) -> None:
    for warning in parsed.warnings:
        print(f"storebox token: {warning}", file=sys.stderr)


def _rewrite(path: str, uid: int, parsed: ParsedTokens, entries: list[TokenEntry]) -> None:
    write_tokens_file(path, entries, file_owner(path, uid))
    converted = sum(1 for e in entries if e.legacy)
    if converted:
        print(f"storebox token: {converted} plain tokens of the old form are now stored as "
              "hashes (scopes pos,read, named legacy-<line>)", file=sys.stderr)
    dropped = len([w for w in parsed.warnings if w.endswith("; refused")])
    if dropped:
        print(f"storebox token: {dropped} refused lines were left out of the rewritten file",
              file=sys.stderr)


def cmd_add(args: argparse.Namespace) -> int:
    if not NAME_RE.match(args.name):
        print("storebox token add: --name: letters, digits, '.', '_', '-'; at most 64",
              file=sys.stderr)
        return EXIT_CONFIG
    try:
        scopes = parse_scopes(args.scope)
    except ValueError as exc:
        print(f"storebox token add: --scope: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    located = _locate(args)
    if located is None:
        return EXIT_CONFIG
    path, uid = located
    token = new_token()
    try:
        with locked_dir(path):
            parsed = load_for_edit(path)
            _report(parsed)
            if any(e.name == args.name for e in parsed.entries):
                print(f"storebox token add: a token named {args.name!r} exists; revoke it "
                      "first", file=sys.stderr)
                return EXIT_FAIL
            entry = TokenEntry(args.name, scopes, digest_of(token), now_iso())
            _rewrite(path, uid, parsed, [*parsed.entries, entry])
    except (OSError, UnicodeDecodeError) as exc:
        print(f"storebox token add: cannot update {path!r}: {exc}", file=sys.stderr)
        return EXIT_FAIL
    print(token)
    print(f"storebox token: added {args.name!r} with scopes "
          f"{','.join(s for s in SCOPES if s in scopes)}; the token above is shown only "
          f"this once; {RELOAD_HINT}", file=sys.stderr)
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    located = _locate(args)
    if located is None:
        return EXIT_CONFIG
    path = located[0]
    try:
        parsed = load_for_edit(path)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"storebox token list: cannot read {path!r}: {exc}", file=sys.stderr)
        return EXIT_FAIL
    _report(parsed)
    rows: list[dict[str, Any]] = [{"name": e.name, "scopes": [s for s in SCOPES if s in e.scopes],
             "created": e.created or None, "id": e.short_id,
             "form": "plain" if e.legacy else "hashed"} for e in parsed.entries]
    if args.json:
        print(json.dumps(rows, indent=2))
        return EXIT_OK
    if not rows:
        print(f"no tokens in {path}")
        return EXIT_OK
    width = max(len(r["name"]) for r in rows)
    print(f"{'NAME':<{width}}  {'SCOPES':<14}  {'CREATED':<20}  ID")
    for r in rows:
        created = r["created"] or ("(plain, old form)" if r["form"] == "plain" else "-")
        print(f"{r['name']:<{width}}  {','.join(r['scopes']):<14}  {created:<20}  {r['id']}")
    return EXIT_OK


def cmd_revoke(args: argparse.Namespace) -> int:
    located = _locate(args)
    if located is None:
        return EXIT_CONFIG
    path, uid = located
    try:
        with locked_dir(path):
            parsed = load_for_edit(path)
            _report(parsed)
            kept = [e for e in parsed.entries if e.name != args.name]
            if len(kept) == len(parsed.entries):
                print(f"storebox token revoke: no token named {args.name!r} in {path}",
                      file=sys.stderr)
                return EXIT_FAIL
            _rewrite(path, uid, parsed, kept)
    except (OSError, UnicodeDecodeError) as exc:
        print(f"storebox token revoke: cannot update {path!r}: {exc}", file=sys.stderr)
        return EXIT_FAIL
    print(f"revoked {args.name!r}; {RELOAD_HINT}")
    return EXIT_OK


def cmd_token(args: argparse.Namespace) -> int:
    if args.action == "add":
        return cmd_add(args)
    if args.action == "list":
        return cmd_list(args)
    return cmd_revoke(args)
