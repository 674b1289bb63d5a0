"""`storebox drill`: the KT 2021 outage replayed against the real box, in namespaces."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_OK, EXIT_FAIL, EXIT_SETUP = 0, 1, 2


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    drill = sub.add_parser(
        "drill", help="replay the KT 2021 outage against the box, in network namespaces",
        description="Build a shop in network namespaces (the box, an ISP, an LTE carrier, "
                    "an internet with the gateway simulator, a POS on the LAN), run the real "
                    "daemon and play: normal trading, random loss on wired (no failover "
                    "wanted), a brownout on wired (the gateway's traffic steered to LTE and "
                    "back, the shop stays on wired), a blackhole at the ISP with the link "
                    "up, the LTE carrier failing as well, recovery. Exit 0 when every sale "
                    "was answered, every payment reached the gateway exactly once, failover "
                    "took at most 5 s and the loss phase caused none, and the brownout was "
                    "steered in time without a failover and with payments p95 at most 2 s; "
                    "1 otherwise; 2 when it could not run.")
    drill.add_argument("--short", action="store_true",
                       help="about two minutes (CI): short phases, quick failback and "
                            "unsteer")
    for name, what in (("normal", "normal trading"), ("loss", "the random-loss phase"),
                       ("brownout", "the brownout (its loss; the unsteer follows)"),
                       ("blackhole", "the wired blackhole"),
                       ("lte-down", "both uplinks down (offline mode)")):
        drill.add_argument(f"--{name}-s", type=float, default=None, metavar="S",
                           help=f"seconds of {what}")
    drill.add_argument("--recovery-s", type=float, default=None, metavar="S",
                       help="the most the recovery may take (it ends once back on wired "
                            "with an empty queue)")
    drill.add_argument("--loss", type=int, default=None, metavar="PCT",
                       help="random loss on the wired line, each way (default 20)")
    drill.add_argument("--brownout", type=int, default=None, metavar="PCT",
                       help="the brownout's loss on the wired line, each way (default 37: "
                            "60 %% of round trips)")
    drill.add_argument("--faults", default=None, metavar="LIST",
                       help="which faults to play, comma-separated, of "
                            "loss,brownout,blackhole,lte_down (default all)")
    drill.add_argument("--failback-after-s", type=float, default=None, metavar="S",
                       help="the box's failback stability window for the drill")
    drill.add_argument("--unsteer-after-s", type=float, default=None, metavar="S",
                       help="the box's steer.unsteer_after_s for the drill (default 30, "
                            "--short 10)")
    drill.add_argument("--pos-interval-s", type=float, default=None, metavar="S",
                       help="seconds between sales per terminal")
    drill.add_argument("--terminals", type=int, default=None, help="POS terminals (default 2)")
    drill.add_argument("--lte-carrier", choices=["KT", "SKT", "LGU"], default="KT",
                       help="the simulated LTE SIM's carrier (default KT, the same carrier "
                            "as the wired line, as in 2021: the box warns about it)")
    drill.add_argument("--json", dest="json_path", default=None, metavar="PATH",
                       help="also write the report as JSON to PATH ('-' for stdout)")
    drill.add_argument("--no-live", action="store_true",
                       help="one line per change instead of the live view")
    drill.add_argument("--keep", action="store_true",
                       help="keep the drill's files (config, daemon log, database)")


#: Said when the drill's code is not there: the Debian package leaves `lab/` out.
NEEDS_SOURCE = ("storebox drill: the drill lives in storebox's source tree (lab/), which "
                "this installation does not include; run it from a checkout: "
                "`sudo make run` (or `sudo .venv/bin/storebox drill`)")


def cmd_drill(args: argparse.Namespace) -> int:
    # The one place the product reaches into the lab, inside the command: the lab
    # imports product modules, never firmware.cli, so no cycle runs through here.
    try:
        from lab.drill.runner import run_drill
        from lab.drill.timeline import options_from_args
        from lab.errors import DrillError
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.partition(".")[0] != "lab":
            raise
        print(NEEDS_SOURCE, file=sys.stderr)
        return EXIT_SETUP
    try:
        options = options_from_args(args)
        report = run_drill(options, sys.stdout, live_view=False if args.no_live else None,
                           lte_carrier=args.lte_carrier, keep=args.keep)
    except DrillError as exc:
        print(f"storebox drill: {exc.step}: {exc.detail}", file=sys.stderr)
        return EXIT_SETUP
    except KeyboardInterrupt:
        # the box, the simulators and the namespaces have been torn down on the way out
        print("storebox drill: interrupted", file=sys.stderr)
        return 130
    if args.json_path == "-":
        print(json.dumps(report.to_json(), indent=2))
    elif args.json_path:
        Path(args.json_path).write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return EXIT_OK if report.passed else EXIT_FAIL
