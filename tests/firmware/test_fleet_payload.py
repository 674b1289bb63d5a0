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


def test_command_json_is_parsed_within_bounds() -> None:
    import pytest

    from firmware.fleet.auth import CommandRefused
    from firmware.fleet.commands import MAX_DEPTH, load_json

    ok = b'{"id": "a", "args": {"s": "[[[[{{{{\\"]]]]", "n": -12.5e3, "big": 12345678901234}}'
    assert load_json(ok)["args"]["s"] == '[[[[{{{{"]]]]'  # brackets in strings do not nest
    deep_enough = b"[" * MAX_DEPTH + b"]" * MAX_DEPTH
    assert load_json(deep_enough) is not None
    for bad in (b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), b"[" * 100_000,
                b'{"a": 1, "a": 2}', b"NaN", b"1e400", b"-1e400", b"9" * 41,
                b'"\\udc00"', b'{"\\ud800": 0}', b"\xc3\x28", b"{"):
        with pytest.raises(CommandRefused) as info:
            load_json(bad)
        assert info.value.code == "bad_json", bad[:40]
