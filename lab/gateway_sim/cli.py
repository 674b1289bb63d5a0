"""``python -m lab.gateway_sim``: the simulator as a process (see the package docstring)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from lab.gateway_sim.faults import Faults
from lab.gateway_sim.rules import DeclineRules
from lab.gateway_sim.server import GatewaySimulator
from payments_cache.errors import SealKeyError
from payments_cache.sealing import SealOpener


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def _fraction(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 0 <= number <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1: {value!r}")
    return number


def _seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {value!r}")
    return number


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lab.gateway_sim",
        description="Simulated card gateway (docs/gateway-protocol.md) with fault injection.")
    p.add_argument("--listen", type=_host_port, default=("127.0.0.1", 8443),
                   metavar="HOST:PORT", help="gateway address (default 127.0.0.1:8443; port 0 "
                   "picks one)")
    p.add_argument("--admin-listen", type=_host_port, metavar="HOST:PORT",
                   help="a separate listener for /_sim/* (needed for down_mode=refuse "
                   "through the admin endpoint)")
    p.add_argument("--merchant-key-file", type=Path, required=True,
                   help="file holding the merchant key (surrounding whitespace ignored)")
    p.add_argument("--seed", type=int, help="seed of the simulator's random.Random")
    p.add_argument("--latency", type=_seconds, default=0.0, metavar="S")
    p.add_argument("--jitter", type=_seconds, default=0.0, metavar="S")
    p.add_argument("--fail-5xx", type=_fraction, default=0.0, metavar="F")
    p.add_argument("--fail-5xx-status", type=int, default=503, metavar="N")
    p.add_argument("--fail-429", type=_fraction, default=0.0, metavar="F")
    p.add_argument("--retry-after", type=int, default=1, metavar="S",
                   help="Retry-After of the injected 429s, in seconds")
    p.add_argument("--retry-after-http-date", action="store_true",
                   help="send Retry-After as an HTTP-date")
    p.add_argument("--drop-answers", type=_fraction, default=0.0, metavar="F")
    p.add_argument("--down", choices=["503", "refuse"], help="start down in this mode")
    p.add_argument("--decline-amount", type=int, action="append", default=[], metavar="N",
                   help="decline this amount (repeatable)")
    p.add_argument("--decline-pan", action="append", default=[], metavar="PAN",
                   help="decline this card number (repeatable)")
    p.add_argument("--no-luhn", action="store_true", help="do not decline Luhn failures")
    p.add_argument("--no-expiry-check", action="store_true",
                   help="do not decline expired cards")
    p.add_argument("--seal-private-key", type=Path, action="append", default=[],
                   metavar="PATH", help="X25519 private key (PEM PKCS8) that opens card_sealed "
                   "(docs/gateway-protocol.md; repeatable, for key rotation)")
    p.add_argument("--log-level", default="warning",
                   choices=["debug", "info", "warning", "error"])
    return p


async def _serve(sim: GatewaySimulator, ready: Callable[[str], None],
                 stop_signals: Iterable[signal.Signals]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in stop_signals:
        loop.add_signal_handler(sig, stop.set)
    async with sim:
        line = f"gateway_sim listening on {sim.url}"
        if sim.admin_url != sim.url:
            line += f" admin {sim.admin_url}"
        ready(line)
        await stop.wait()


def _print_line(line: str) -> None:
    print(line, flush=True)


def main(argv: list[str] | None = None,
         ready: Callable[[str], None] = _print_line) -> int:
    """The CLI; returns the exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        key = args.merchant_key_file.read_text().strip()
    except OSError as exc:
        parser.error(f"cannot read --merchant-key-file: {exc.strerror}")
    if not key:
        parser.error("--merchant-key-file is empty")
    try:
        faults = Faults(latency_s=args.latency, jitter_s=args.jitter, fail_5xx=args.fail_5xx,
                        fail_5xx_status=args.fail_5xx_status, fail_429=args.fail_429,
                        retry_after_s=args.retry_after,
                        retry_after_http_date=args.retry_after_http_date,
                        drop_answers=args.drop_answers, down=args.down is not None,
                        down_mode=args.down or "503")
        rules = DeclineRules(decline_amounts=frozenset(args.decline_amount),
                             decline_pans=frozenset(args.decline_pan),
                             check_luhn=not args.no_luhn,
                             check_expiry=not args.no_expiry_check)
    except ValueError as exc:
        parser.error(str(exc))
    try:
        opener = SealOpener.from_pem_files(args.seal_private_key)
    except SealKeyError as exc:
        parser.error(f"--seal-private-key: {exc}")
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    host, port = args.listen
    admin_host, admin_port = args.admin_listen or (None, None)
    sim = GatewaySimulator(key, host=host, port=port, faults=faults, rules=rules,
                           seed=args.seed, admin_host=admin_host, admin_port=admin_port,
                           seal_opener=opener)
    try:
        asyncio.run(_serve(sim, ready, (signal.SIGTERM, signal.SIGINT)))
    except OSError as exc:
        print(f"gateway_sim: cannot listen: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0
