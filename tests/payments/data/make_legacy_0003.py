"""Writes `legacy-0003/`: a queue as storebox at commit 7345d1d left it (schema 0001-0003).

Run against a checkout of that commit (it imports the old store), e.g.::

    git worktree add /tmp/old 7345d1d
    PYTHONPATH=/tmp/old python tests/payments/data/make_legacy_0003.py OUT_DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

from payments_cache.models import Card, GatewayResult, PaymentRequest, StandInDecision
from payments_cache.store import Store

PANS = {"q1": "4111111111111111", "q2": "5555555555554444", "u": "4012888888881881",
        "p": "378282246310005", "d": "6011111111111117", "f": "4000056655665556",
        "x": "5105105105105100"}
APPROVE = StandInDecision(True)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    now = [1_700_000_000.0]
    s = Store.open(out, out / "kek", wall=lambda: now[0])

    def begin(name: str, amount: int):  # type: ignore[no-untyped-def]
        now[0] += 1
        card = Card(PANS[name], 12, 2030, "123")
        return s.begin_online(name, PaymentRequest(amount, "KRW", card, "pos-1",
                                                   f"order-{name}"))

    for name in ("q1", "q2"):
        s.stand_in(begin(name, 1002).id, APPROVE)
    s.stand_in(begin("u", 2000).id, APPROVE, outcome_unknown=True)
    dead = s.stand_in(begin("d", 3000).id, APPROVE)
    s.mark_dead(dead.id, expect=dead, error="400 bad")
    fwd = s.stand_in(begin("f", 4000).id, APPROVE)
    s.record_forward_result(fwd.id, GatewayResult("approved", "A1"), expect=fwd)
    s.stand_in(begin("x", 500).id, StandInDecision(False, "limit"))
    begin("p", 5000)  # interrupted: the process "dies" during the online attempt
    s.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    s.db.conn.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
