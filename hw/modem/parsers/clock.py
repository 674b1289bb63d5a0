"""Network time parsers (3GPP TS 27.007): `+CCLK` (clause 8.15) and the time zone
report `+CTZE` (clause 8.41), with the `yy/MM/dd,hh:mm:ss±zz` value both (and Quectel's
`+QLTS`) share. Pure, like every module of `hw.modem.parsers`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Final

from hw.modem.errors import ParseError
from hw.modem.parsers.tokens import line_fields, payload, single_line, to_int

# --- network time: +CCLK (clause 8.15) --------------------------------------------------


@dataclass(frozen=True, slots=True)
class NetworkTime:
    """A clock reading. `time` is always timezone-aware, expressed in the reported zone;
    `utc_offset` is None when the modem reported no zone (then `time` is taken as UTC);
    `dst_hours` is the daylight-saving adjustment already included in the zone, when given."""

    time: datetime
    utc_offset: timedelta | None
    dst_hours: int | None


_TIME_RE: Final = re.compile(
    r"(?P<y>\d{4}|\d{2})/(?P<mo>\d{1,2})/(?P<d>\d{1,2}),\s*"
    r"(?P<h>\d{1,2}):(?P<mi>\d{2}):(?P<s>\d{2})"
    r"(?:\s*(?P<sign>[+-])\s*(?P<tz>\d{1,2}))?"
    r"(?:\s*,\s*(?P<dst>\d))?")


def quarter_hours(quarters: int) -> timezone:
    """The fixed zone of a `±zz` time-zone field in quarters of an hour.

    TS 27.007 allows -96..+96, but ±96 is a whole day, which no UTC offset can be (real
    zones span -48..+56): -95..+95 are accepted, anything else is a `ValueError`."""
    if not -95 <= quarters <= 95:
        raise ValueError(f"time zone {quarters} quarter hours is outside -95..+95")
    return timezone(timedelta(minutes=15 * quarters))


def parse_time_value(value: str, command: str, line: str, *, utc: bool = False) -> NetworkTime:
    """`yy/MM/dd,hh:mm:ss±zz[,d]` (two- or four-digit year). The wall time is local unless
    `utc` (then it is UTC and is converted into the reported zone)."""
    match = _TIME_RE.fullmatch(value.strip())
    if match is None:
        raise ParseError(command, line, "expected yy/MM/dd,hh:mm:ss±zz")
    year = int(match["y"])
    if len(match["y"]) == 2:
        year += 2000
    zone: timezone | None = None
    if match["tz"] is not None:
        quarters = int(match["tz"]) * (-1 if match["sign"] == "-" else 1)
        try:
            zone = quarter_hours(quarters)
        except ValueError as exc:
            raise ParseError(command, line, str(exc)) from None
    try:
        wall = datetime(year, int(match["mo"]), int(match["d"]),
                        int(match["h"]), int(match["mi"]), int(match["s"]))
    except ValueError as exc:
        raise ParseError(command, line, f"not a valid date/time ({exc})") from None
    if utc or zone is None:
        moment = wall.replace(tzinfo=UTC)
        if zone is not None:
            moment = moment.astimezone(zone)
    else:
        moment = wall.replace(tzinfo=zone)
    return NetworkTime(time=moment, utc_offset=None if zone is None else zone.utcoffset(None),
                       dst_hours=None if match["dst"] is None else int(match["dst"]))


def quoted_value(body: str, command: str, line: str) -> tuple[str, str]:
    """Split `"value",rest` into `value` and `rest` (the whole body when unquoted)."""
    body = body.strip()
    if not body.startswith('"'):
        return body, ""
    end = body.find('"', 1)
    if end < 0:
        raise ParseError(command, line, "unterminated quote")
    return body[1:end], body[end + 1:].strip()


def parse_cclk(text: str) -> NetworkTime:
    """`+CCLK: "yy/MM/dd,hh:mm:ss±zz"`: local time, zone in quarter hours (negative zones
    too). Quotes are optional; a missing zone gives UTC with `utc_offset` None."""
    line = single_line(text, "+CCLK")
    value, rest = quoted_value(payload(line, "+CCLK"), "+CCLK", line)
    if rest:
        match = re.fullmatch(r",\s*(\d)", rest)
        if match is None:
            raise ParseError("+CCLK", line, "unexpected text after the time")
        value = f"{value},{match.group(1)}"
    return parse_time_value(value, "+CCLK", line)


# --- time zone report: +CTZE (clause 8.41) ---------------------------------------------


@dataclass(frozen=True, slots=True)
class TimeZoneReport:
    """`+CTZE: "<tz>",<dst>[,"<time>"]`: the network's zone (quarter hours, DST included)
    and, when given, its universal time."""

    utc_offset: timedelta
    dst_hours: int
    time: datetime | None


def parse_ctze(text: str) -> TimeZoneReport:
    """The time zone URC (`AT+CTZR=2`). The time is UTC (the network's universal time),
    returned in the reported zone."""
    line, fields = line_fields(text, "+CTZE")
    if len(fields) < 2:
        raise ParseError("+CTZE", line, 'expected "<tz>",<dst>[,"<time>"]')
    quarters = to_int(fields[0].text.replace(" ", ""), "+CTZE", line, "<tz>")
    dst = to_int(fields[1].text, "+CTZE", line, "<dst>")
    try:
        zone = quarter_hours(quarters)
    except ValueError as exc:
        raise ParseError("+CTZE", line, str(exc)) from None
    if not 0 <= dst <= 2:
        raise ParseError("+CTZE", line, f"<dst> {dst} is outside 0..2")
    moment: datetime | None = None
    if len(fields) >= 3 and fields[2].text:
        value = ",".join(f.text for f in fields[2:])
        moment = parse_time_value(value, "+CTZE", line, utc=True).time.astimezone(zone)
    return TimeZoneReport(utc_offset=zone.utcoffset(None), dst_hours=dst, time=moment)
