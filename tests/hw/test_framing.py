"""The pure AT framer: table of byte streams -> events, and split-invariance properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hw.modem.framing import (
    AtFramer,
    Echo,
    Event,
    Final,
    FinalKind,
    Garbage,
    Line,
    Prompt,
    parse_final,
    split_glued_final,
)


def frame(data: bytes, *, echoes: tuple[str, ...] = ()) -> list[Event]:
    framer = AtFramer()
    for command in echoes:
        framer.expect_echo(command)
    return framer.feed(data) + framer.flush()


OK = Final(FinalKind.OK, "OK")

TABLE: list[tuple[str, bytes, tuple[str, ...], list[Event]]] = [
    ("bare OK", b"\r\nOK\r\n", (), [OK]),
    (
        "echo, info line, OK (EC25 with echo on)",
        b"AT+CSQ\r\r\n+CSQ: 20,99\r\n\r\nOK\r\n",
        ("AT+CSQ",),
        [Echo("AT+CSQ"), Line("+CSQ: 20,99"), OK],
    ),
    (
        "multi-line information response",
        b"\r\nQuectel\r\nEC25\r\nRevision: EC25EFAR06A06M4G\r\n\r\nOK\r\n",
        (),
        [Line("Quectel"), Line("EC25"), Line("Revision: EC25EFAR06A06M4G"), OK],
    ),
    ("lone CR terminators", b"\r+CSQ: 1,99\rOK\r", (), [Line("+CSQ: 1,99"), OK]),
    ("lone LF terminators", b"\n+CSQ: 1,99\nOK\n", (), [Line("+CSQ: 1,99"), OK]),
    ("LF CR order", b"+CSQ: 1,99\n\rOK\n\r", (), [Line("+CSQ: 1,99"), OK]),
    ("ERROR", b"\r\nERROR\r\n", (), [Final(FinalKind.ERROR, "ERROR")]),
    (
        "+CME ERROR numeric",
        b"\r\n+CME ERROR: 10\r\n",
        (),
        [Final(FinalKind.CME_ERROR, "+CME ERROR: 10", 10, "10")],
    ),
    (
        "+CME ERROR verbose text mapped to its number",
        b"\r\n+CME ERROR: SIM not inserted\r\n",
        (),
        [Final(FinalKind.CME_ERROR, "+CME ERROR: SIM not inserted", 10, "SIM not inserted")],
    ),
    (
        "+CME ERROR unknown text",
        b"\r\n+CME ERROR: frobnicated\r\n",
        (),
        [Final(FinalKind.CME_ERROR, "+CME ERROR: frobnicated", None, "frobnicated")],
    ),
    (
        "+CMS ERROR",
        b"\r\n+CMS ERROR: 500\r\n",
        (),
        [Final(FinalKind.CMS_ERROR, "+CMS ERROR: 500", 500, "500")],
    ),
    ("NO CARRIER", b"\r\nNO CARRIER\r\n", (), [Final(FinalKind.NO_CARRIER, "NO CARRIER")]),
    ("BUSY", b"\r\nBUSY\r\n", (), [Final(FinalKind.BUSY, "BUSY")]),
    ("NO ANSWER", b"\r\nNO ANSWER\r\n", (), [Final(FinalKind.NO_ANSWER, "NO ANSWER")]),
    ("NO DIALTONE", b"\r\nNO DIALTONE\r\n", (), [Final(FinalKind.NO_DIALTONE, "NO DIALTONE")]),
    ("CONNECT", b"\r\nCONNECT\r\n", (), [Final(FinalKind.CONNECT, "CONNECT")]),
    (
        "CONNECT with text",
        b"\r\nCONNECT 150000000\r\n",
        (),
        [Final(FinalKind.CONNECT, "CONNECT 150000000", detail="150000000")],
    ),
    (
        "vendor: COMMAND NOT SUPPORT",
        b"\r\nCOMMAND NOT SUPPORT\r\n",
        (),
        [Final(FinalKind.NOT_SUPPORTED, "COMMAND NOT SUPPORT")],
    ),
    (
        "+CME ERROR glued to the end of an information line",
        b"\r\n+CPIN: +CME ERROR: 10\r\n",
        (),
        [Line("+CPIN:"), Final(FinalKind.CME_ERROR, "+CME ERROR: 10", 10, "10")],
    ),
    (
        "+CME ERROR glued to the echo",
        b"AT+CIMI+CME ERROR: 10\r\n",
        ("AT+CIMI",),
        [Echo("AT+CIMI"), Final(FinalKind.CME_ERROR, "+CME ERROR: 10", 10, "10")],
    ),
    (
        "+CME ERROR without colon",
        b"\r\n+CME ERROR 3\r\n",
        (),
        [Final(FinalKind.CME_ERROR, "+CME ERROR 3", 3, "3")],
    ),
    ("prompt without terminator", b"AT+CMGS=5\r\r\n> ", ("AT+CMGS=5",),
     [Echo("AT+CMGS=5"), Prompt()]),
    (
        "NUL bytes reported, the line still framed",
        b"\r\n\x00\x00OK\r\n",
        (),
        [Garbage(b"\x00\x00"), OK],
    ),
    (
        "power-up noise before RDY",
        b"\xff\xfe\x00RDY\r\n",
        (),
        [Garbage(b"\xff\xfe\x00"), Line("RDY")],
    ),
    ("only garbage", b"\x00\x01\x02\r\n", (), [Garbage(b"\x00\x01\x02")]),
    ("unterminated tail framed by flush", b"\r\n+QIND: PB DONE", (), [Line("+QIND: PB DONE")]),
    (
        "URC inside an answer is just a line here",
        b"\r\n+CSQ: 20,99\r\n\r\n+CEREG: 1\r\n\r\nOK\r\n",
        (),
        [Line("+CSQ: 20,99"), Line("+CEREG: 1"), OK],
    ),
    (
        "an unannounced AT line is not an echo",
        b"ATI\r\r\nOK\r\n",
        (),
        [Line("ATI"), OK],
    ),
    (
        "echo compared case-insensitively",
        b"at+csq\r\r\nOK\r\n",
        ("AT+CSQ",),
        [Echo("at+csq"), OK],
    ),
]


ISSUE = "issue #10 review of real modem responses"
MM_PARSERS = "ModemManager src/mm-serial-parsers.c"

#: Quirks of real firmware: each row names where the byte sequence comes from.
QUIRKS: list[tuple[str, bytes, tuple[str, ...], list[Event]]] = [
    (f"{ISSUE}: OK glued to the +CSQ value", b"\r\n+CSQ: 18,99OK\r\n", (),
     [Line("+CSQ: 18,99"), OK]),
    (f"{ISSUE}: ERROR glued to a quoted value", b'\r\n+COPS: 0,0,"KT",7ERROR\r\n', (),
     [Line('+COPS: 0,0,"KT",7'), Final(FinalKind.ERROR, "ERROR")]),
    (f"{ISSUE}: lowercase ok", b"\r\n+CSQ: 18,99\r\n\r\nok\r\n", (),
     [Line("+CSQ: 18,99"), Final(FinalKind.OK, "ok")]),
    (f"{ISSUE}: lowercase error", b"\r\nerror\r\n", (), [Final(FinalKind.ERROR, "error")]),
    (f"{ISSUE}: lowercase +cme error", b"\r\n+cme error: 10\r\n", (),
     [Final(FinalKind.CME_ERROR, "+cme error: 10", 10, "10")]),
    (f"{ISSUE}: lowercase verbose +cme error", b"\r\n+cme error: sim not inserted\r\n", (),
     [Final(FinalKind.CME_ERROR, "+cme error: sim not inserted", 10, "sim not inserted")]),
    (f"{ISSUE}: NUL/0xFF noise inside a value splits it, never merges it",
     b"\r\n+CSQ: 2\x00\xff3,99\r\n\r\nOK\r\n", (),
     [Line("+CSQ: 2"), Garbage(b"\x00\xff"), Line("3,99"), OK]),
    (f"{ISSUE}: a stray 0xFF between two lines", b"\r\n+CEREG: 2,1\xff\r\nOK\r\n", (),
     [Line("+CEREG: 2,1"), Garbage(b"\xff"), OK]),
    (f"{ISSUE}: malformed UTF-8 (lone continuation byte) splits too",
     b"\r\nAB\x80CD\r\n", (), [Line("AB"), Garbage(b"\x80"), Line("CD")]),
    (f"{ISSUE}: UTF-8 operator name keeps its letters",
     '\r\n+COPS: 0,0,"Telefónica",7\r\n\r\nOK\r\n'.encode(), (),
     [Line('+COPS: 0,0,"Telefónica",7'), OK]),
    (f"{MM_PARSERS} (regex_ok matches only a whole OK line): a line ending in OK is text",
     b'\r\n+CGMM: FACEBOOK\r\n', (), [Line("+CGMM: FACEBOOK")]),
    ("ModemManager src/plugins/wavecom/mm-broadband-modem-wavecom.c (custom success "
     "regex): +CPIN: READY with no OK is one line here; the channel ends the command",
     b"\r\n+CPIN: READY\r\n", (), [Line("+CPIN: READY")]),
]


@pytest.mark.parametrize(
    ("data", "echoes", "expected"),
    [pytest.param(d, e, x, id=name) for name, d, e, x in TABLE + QUIRKS],
)
def test_table(data: bytes, echoes: tuple[str, ...], expected: list[Event]) -> None:
    assert frame(data, echoes=echoes) == expected


def test_echo_consumes_its_announcement_and_older_ones() -> None:
    framer = AtFramer()
    framer.expect_echo("AT+CSQ")
    framer.expect_echo("AT+COPS?")
    assert framer.feed(b"AT+COPS?\r") == [Echo("AT+COPS?")]
    assert framer.pending_echoes == ()
    # the first one is gone: the same text now is a line
    assert framer.feed(b"AT+CSQ\r") == [Line("AT+CSQ")]


def test_forget_echoes() -> None:
    framer = AtFramer()
    framer.expect_echo("AT")
    framer.forget_echoes()
    assert framer.feed(b"AT\r") == [Line("AT")]


def test_overlong_line_is_garbage_and_framing_recovers() -> None:
    framer = AtFramer(max_line=16)
    events = framer.feed(b"X" * 40 + b"\r\nOK\r\n")
    assert events[:2] == [Garbage(b"X" * 16), Garbage(b"X" * 16)]
    assert events[2:] == [Line("X" * 8), OK]


def test_extra_finals() -> None:
    framer = AtFramer(extra_finals={"SEND OK": FinalKind.OK})
    assert framer.feed(b"\r\nSEND OK\r\n") == [Final(FinalKind.OK, "SEND OK")]
    assert AtFramer().feed(b"\r\nSEND OK\r\n") == [Line("SEND OK")]


def test_partial_keeps_the_unterminated_line() -> None:
    framer = AtFramer()
    assert framer.feed(b"\r\n+CSQ: 2") == []
    assert framer.partial == b"+CSQ: 2"
    assert framer.feed(b"0,99\r\n") == [Line("+CSQ: 20,99")]


@pytest.mark.parametrize(
    ("text", "kind"),
    [("OK", FinalKind.OK), ("CONNECT", FinalKind.CONNECT), ("ERROR", FinalKind.ERROR),
     ("NO CARRIER", FinalKind.NO_CARRIER)],
)
def test_success_property(text: str, kind: FinalKind) -> None:
    final = parse_final(text)
    assert final is not None and final.kind is kind
    assert kind.success is (text in ("OK", "CONNECT"))


def test_parse_final_rejects_information_lines() -> None:
    for text in ("+CSQ: 20,99", "OKAY", "RDY", "ERRORS", "+CPIN: READY"):
        assert parse_final(text) is None


# -- split invariance ----------------------------------------------------------------------

PIECES = [
    b"AT+CSQ\r", b"\r\n+CSQ: 20,99\r\n", b"\r\nOK\r\n", b"\r\nERROR\r\n",
    b"\r\n+CME ERROR: 10\r\n", b"\r\n+CEREG: 1\r\n", b"\r\nRDY\r\n", b"\r\n> ",
    b"\x00", b"\xff\xfe", b"\r", b"\n", b"\r\nCONNECT 150000000\r\n", b"\r\nQuectel\r\nEC25",
    b"\r\n+CPIN: +CME ERROR: 11\r\n", b"\r\nNO CARRIER\r\n",
]


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    chunks, last = [], 0
    for point in points:
        chunks.append(data[last:point])
        last = point
    chunks.append(data[last:])
    return chunks


def feed_chunks(chunks: list[bytes]) -> list[Event]:
    framer = AtFramer(max_line=32)
    framer.expect_echo("AT+CSQ")
    events: list[Event] = []
    for chunk in chunks:
        events += framer.feed(chunk)
    return events + framer.flush()


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(PIECES), max_size=20),
    st.lists(st.integers(min_value=0, max_value=10_000), max_size=30),
)
def test_any_split_of_a_modem_stream_yields_the_same_events(
    pieces: list[bytes], cuts: list[int]
) -> None:
    data = b"".join(pieces)
    assert feed_chunks(split_at(data, cuts)) == feed_chunks([data])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200), st.lists(st.integers(min_value=0, max_value=400), max_size=20))
def test_any_split_of_arbitrary_bytes_yields_the_same_events(
    data: bytes, cuts: list[int]
) -> None:
    assert feed_chunks(split_at(data, cuts)) == feed_chunks([data])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1,
                max_size=20).filter(lambda t: parse_final(t) is None and "+CM" not in t
                                    and split_glued_final(t) is None
                                    and not t.upper().startswith("AT")),
        max_size=10,
    ),
    st.sampled_from([b"\r\n", b"\r", b"\n"]),
    st.data(),
)
def test_framed_lines_come_out_in_order_and_intact(
    lines: list[str], terminator: bytes, data: st.DataObject
) -> None:
    stream = b"".join(terminator + line.encode() + terminator for line in lines) + b"\r\nOK\r\n"
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=len(stream)), max_size=10))
    events = feed_chunks(split_at(stream, cuts))
    assert events == [Line(line) for line in lines] + [OK]


def test_noise_never_joins_digits_of_a_value() -> None:
    # the old framer dropped the noise and read "+CSQ: 23,99": a wrong value, not an error
    events = frame(b"\r\n+CSQ: 2\x00\xff3,99\r\n")
    assert Line("+CSQ: 23,99") not in events
    assert [e for e in events if isinstance(e, Line)] == [Line("+CSQ: 2"), Line("3,99")]


def test_glued_final_only_after_a_value() -> None:
    assert split_glued_final("+CSQ: 18,99OK") == ("+CSQ: 18,99", "OK")
    assert split_glued_final('+COPS: 0,0,"KT"ok') == ('+COPS: 0,0,"KT"', "ok")
    for text in ("+CGMM: FACEBOOK", "OK", "+CPIN: READY", "Revision: 1OK", "+CSQ: 18,99"):
        assert split_glued_final(text) is None
