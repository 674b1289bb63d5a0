"""Fleet payloads are valid JSON, scrubbed of card-like strings, with numbers intact."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from firmware.fleet.agent import _json


def test_a_float_with_many_digits_survives_and_stays_json() -> None:
    # a real latency the drill saw: scrubbing the serialised text cut its digits
    doc = {"uplink": {"lte": {"latency_ms": 2.1058360000000145, "loss_pct": 20.0}}}
    assert json.loads(_json(doc)) == doc


def test_card_like_strings_and_long_integers_are_scrubbed() -> None:
    doc = {"message": "card 4111111111111111 declined", "n": 4111111111111111,
           "list": ["5555555555554444"], "ok": True, "none": None, "small": 12500}
    out = _json(doc)
    text = out.decode()
    assert "4111111111111111" not in text and "5555555555554444" not in text
    parsed = json.loads(out)
    assert parsed["ok"] is True and parsed["none"] is None and parsed["small"] == 12500


def test_other_values_become_text() -> None:
    when = datetime(2021, 10, 25, 11, 20, tzinfo=UTC)
    assert json.loads(_json({"at": when})) == {"at": "2021-10-25 11:20:00+00:00"}
