"""`python -m hw.modem.simulator`: the EC25 simulator standalone, for a technician or a
developer without hardware — a pty (optionally linked at a stable path), a SIM of the
chosen carrier, Ctrl-C stops it."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal as signals
import sys
from collections.abc import Sequence

from hw.modem.simulator.ec25 import ModemSimulator
from hw.modem.simulator.scenario import OPERATORS, SimCard

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hw.modem.simulator",
        description="Quectel EC25 simulator on a pseudo-terminal (for work without hardware).",
    )
    parser.add_argument("--link", help="create this symlink to the pty slave (e.g. /tmp/ttyMODEM)")
    parser.add_argument("--operator", choices=sorted(OPERATORS), default="KT",
                        help="operator of the SIM in slot 0 (default KT, 450-08)")
    parser.add_argument("--slot2-operator", choices=sorted(OPERATORS),
                        help="a SIM of this operator in slot 1 (default: slot 1 empty)")
    parser.add_argument("--no-sim", action="store_true", help="slot 0 is empty")
    parser.add_argument("--pin", help="the SIM in slot 0 is locked with this PIN")
    parser.add_argument("--interface", help="data interface to bring up/down with the data call")
    parser.add_argument("--netns", help="network namespace of --interface")
    parser.add_argument("--address", help="CIDR address to put on --interface when data is up")
    parser.add_argument("--cops-delay", type=float, default=0.0, metavar="S",
                        help="answer AT+COPS? after S seconds")
    parser.add_argument("--boot", action="store_true",
                        help="play the power-on sequence (RDY ...) at start")
    parser.add_argument("--boot-delay", type=float, default=0.0, metavar="S",
                        help="seconds from power-on to RDY")
    parser.add_argument("--log-level", default="warning")
    return parser


def _make_link(link: str, target: str) -> bool:
    """Point symlink `link` at `target`, replacing an old symlink (never a real file)."""
    if os.path.lexists(link):
        if not os.path.islink(link):
            print(f"refusing to replace {link!r}: not a symlink", file=sys.stderr)
            return False
        os.unlink(link)
    os.symlink(target, link)
    return True


def _remove_link(link: str, target: str) -> None:
    if os.path.islink(link) and os.readlink(link) == target:
        os.unlink(link)


async def _serve(args: argparse.Namespace) -> int:
    card = SimCard.absent() if args.no_sim else OPERATORS[args.operator]()
    if args.pin and card.present:
        card.pin = args.pin
    slot2 = OPERATORS[args.slot2_operator]() if args.slot2_operator else SimCard.absent()
    sim = ModemSimulator(
        sims=[card, slot2], data_interface=args.interface, netns=args.netns,
        data_address=args.address, cops_delay_s=args.cops_delay, boot_delay_s=args.boot_delay,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signals.SIGINT, signals.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await sim.start(boot=args.boot)
    link = args.link
    try:
        if link and not _make_link(link, sim.slave_path):
            return 2
        where = f"{sim.slave_path}" + (f" (linked at {link})" if link else "")
        sim_text = "no SIM" if not card.present else f"{card.operator} {card.mcc}-{card.mnc}"
        print(f"EC25 simulator ready on {where}: {sim_text}; Ctrl-C stops", flush=True)
        await stop.wait()
    finally:
        if link:
            _remove_link(link, sim.slave_path)
        await sim.stop()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(message)s")
    return asyncio.run(_serve(args))
