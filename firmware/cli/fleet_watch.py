"""`storebox fleet watch`: the fleet as a live table in a terminal, fed by the fleet
server's server-sent events (`GET /api/stream`: `box`, `event`, `incident`).

What is shown is a function of what is known: `Board` holds the boxes and incidents
(`load` from the API, `apply` each stream event) and `Board.render` draws a screen;
`watch` only connects a stream to a board and the board to the terminal, at most one
screen per `interval`. So the screen is tested with a made-up stream, and `--count N`
(stop after N stream events) or `--once` (the snapshot, no stream) make the command itself
testable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TextIO

import aiohttp

from firmware.cli.fleet_views import BOX_HEADER, EXIT_FAIL, EXIT_OK, EXIT_USAGE, box_line

#: Escape codes: cursor home and clear the screen (only when writing to a terminal).
CLEAR = "\x1b[H\x1b[2J"
RECONNECT_S = 2.0


def add_parser(fsub: Any, server_args: Callable[[argparse.ArgumentParser], None]) -> None:
    watch = fsub.add_parser("watch", help="live table of the fleet in this terminal")
    watch.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                       help="only boxes where KEY (dotted: wired.state) is VALUE; repeatable")
    watch.add_argument("--interval", type=float, default=1.0,
                       help="at most one screen per this many seconds (default 1)")
    stop = watch.add_mutually_exclusive_group()
    stop.add_argument("--once", action="store_true", help="draw the fleet once and exit")
    stop.add_argument("--count", type=int, default=None, metavar="N",
                      help="exit after N stream events (for scripts and tests)")
    server_args(watch)


def severity(box: dict[str, Any]) -> int:
    """Most urgent first: gone, wired down, silent, not on wired; then the healthy."""
    if box.get("presence") == "offline":
        return 0
    if (box.get("wired") or {}).get("state") == "down":
        return 1
    if box.get("presence") == "stale":
        return 2
    return 4 if box.get("active") == "wired" else 3


@dataclass
class Board:
    """What `fleet watch` knows: every box (as in /api/boxes) and every incident."""

    #: Which boxes the table lists (`--where`); the counts above it are the whole fleet's.
    keep: Callable[[dict[str, Any]], bool] = lambda box: True
    boxes: dict[str, dict[str, Any]] = field(default_factory=dict)
    incidents: dict[int, dict[str, Any]] = field(default_factory=dict)
    events: int = 0

    def load(self, boxes: list[dict[str, Any]], incidents: list[dict[str, Any]]) -> None:
        self.boxes = {b["device_id"]: b for b in boxes}
        self.incidents = {int(i["id"]): i for i in incidents}

    def apply(self, kind: str, data: dict[str, Any]) -> bool:
        """One stream event; whether the screen changes."""
        self.events += 1
        if kind == "box" and isinstance(data.get("box"), dict):
            self.boxes[data["box"]["device_id"]] = data["box"]
            return True
        if kind == "incident" and isinstance(data.get("incident"), dict):
            self.incidents[int(data["incident"]["id"])] = data["incident"]
            return True
        return False

    def render(self, now: datetime, width: int = 120, height: int = 40) -> str:
        boxes = list(self.boxes.values())
        presence = {p: sum(1 for b in boxes if b.get("presence") == p)
                    for p in ("online", "stale", "offline")}
        down = sum(1 for b in boxes if (b.get("wired") or {}).get("state") == "down")
        lines = [f"storebox fleet  {now.strftime('%H:%M:%S')} UTC  {len(boxes)} shops: "
                 f"{presence['online']} online, {presence['stale']} stale, "
                 f"{presence['offline']} offline; wired down at {down}"]
        open_ = sorted((i for i in self.incidents.values() if not i.get("ended_at")),
                       key=lambda i: -int(i["id"]))
        lines += [f"! #{i['id']} {i.get('title')}" for i in open_] or ["no open incident"]
        shown = sorted((b for b in boxes if self.keep(b)),
                       key=lambda b: (severity(b), b["device_id"]))
        room = max(1, height - len(lines) - 3)
        lines += ["", BOX_HEADER] + [box_line(b) for b in shown[:room]]
        if len(shown) > room:
            lines.append(f"… and {len(shown) - room} more (narrow with --where)")
        return "\n".join(line[:width] for line in lines)


async def sse_events(lines: AsyncIterable[bytes]) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """`(event, data)` from a server-sent event stream's lines (comments skipped)."""
    kind = "message"
    data: list[str] = []
    async for raw in lines:
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            if data:
                try:
                    doc = json.loads("\n".join(data))
                except ValueError:
                    doc = None
                if isinstance(doc, dict):
                    yield kind, doc
            kind, data = "message", []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                kind = value
            elif name == "data":
                data.append(value)


class Screen:
    """Draws the board on `out`: cleared each time on a terminal, appended otherwise."""

    def __init__(self, board: Board, out: TextIO, wall: Callable[[], datetime]) -> None:
        self.board = board
        self.out = out
        self.wall = wall
        self.tty = out.isatty()
        self.frames = 0

    def draw(self, note: str = "") -> None:
        size = shutil.get_terminal_size((120, 40))
        text = self.board.render(self.wall(), size.columns, size.lines - (1 if note else 0))
        self.out.write((CLEAR if self.tty else "\n") + text + (f"\n{note}" if note else "")
                       + "\n")
        self.out.flush()
        self.frames += 1


async def _snapshot(http: aiohttp.ClientSession, server: str, board: Board) -> None:
    async def get(path: str) -> Any:
        async with http.get(server + path) as response:
            response.raise_for_status()
            return await response.json()

    board.load(await get("/api/boxes"), await get("/api/incidents"))


async def follow(http: aiohttp.ClientSession, server: str, screen: Screen, *,
                 count: int | None, interval: float,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> bool:
    """One connection to the stream: the snapshot, then the events drawn at most once per
    `interval`. True when `count` events were seen (the stream ended otherwise)."""
    dirty = asyncio.Event()

    async def drawer() -> None:
        while True:
            await dirty.wait()
            dirty.clear()
            screen.draw()
            await sleep(interval)

    async with http.get(server + "/api/stream") as stream:
        stream.raise_for_status()
        await _snapshot(http, server, screen.board)  # after subscribing: nothing missed
        screen.draw()
        task = asyncio.create_task(drawer())
        seen = 0
        try:
            async for kind, data in sse_events(stream.content):
                seen += 1
                if screen.board.apply(kind, data):
                    dirty.set()
                if count is not None and seen >= count:
                    break
        finally:
            task.cancel()
        screen.draw()
        return count is not None and seen >= count


async def watch(server: str, board: Board, out: TextIO, *, once: bool = False,
                count: int | None = None, interval: float = 1.0,
                wall: Callable[[], datetime] = lambda: datetime.now(UTC),
                sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> int:
    """Draw the fleet until interrupted (or once, or after `count` events); reconnect
    when the stream breaks, after having worked at least once."""
    screen = Screen(board, out, wall)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=60)
    async with aiohttp.ClientSession(timeout=timeout) as http:
        while True:
            try:
                if once:
                    await _snapshot(http, server, board)
                    screen.draw()
                    return EXIT_OK
                if await follow(http, server, screen, count=count, interval=interval,
                                sleep=sleep):
                    return EXIT_OK
                note = "the stream ended; reconnecting"
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                if not screen.frames:  # never got through: say so and stop
                    print(f"storebox fleet watch: {server}: {exc}", file=sys.stderr)
                    return EXIT_FAIL
                note = f"lost the server ({exc}); reconnecting"
            screen.draw(note)
            await sleep(RECONNECT_S)


def run(args: argparse.Namespace, server: str) -> int:
    from firmware.fleet_server.where import matches, parse_where

    try:
        where = parse_where(args.where)
    except ValueError as exc:
        print(f"storebox fleet watch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    board = Board(keep=lambda box: matches(box, where))
    try:
        return asyncio.run(watch(server, board, sys.stdout, once=args.once,
                                 count=args.count, interval=max(0.05, args.interval)))
    except KeyboardInterrupt:
        return EXIT_OK
