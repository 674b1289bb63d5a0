"""Pure card-number helpers: Luhn, brand from the IIN, expiry, blocked BINs.

Nothing here logs, stores or formats a PAN; callers must not put one in a message
either (use `Card.masked` or `Card.last4`).
"""

from __future__ import annotations

from datetime import date
from typing import Literal

Brand = Literal["visa", "mastercard", "amex", "discover", "jcb", "unionpay", "maestro",
                "unknown"]


def is_digits(value: str) -> bool:
    """True for a non-empty string of ASCII digits only (`str.isdigit` also accepts '²')."""
    return value.isascii() and value.isdigit()


def luhn_valid(pan: str) -> bool:
    """The ISO/IEC 7812-1 (Luhn mod 10) check; False for anything but 2+ ASCII digits."""
    if len(pan) < 2 or not is_digits(pan):
        return False
    total = 0
    for i, ch in enumerate(reversed(pan)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


# (prefix length, lowest prefix, highest prefix, brand). The longest matching prefix
# wins, so a specific range (Discover 6011) beats a broad one. Ranges follow the
# networks' published IIN tables as summarised by Wikipedia "Payment card number".
_IIN_RANGES: tuple[tuple[int, int, int, Brand], ...] = (
    (1, 4, 4, "visa"),
    (2, 34, 34, "amex"),
    (2, 37, 37, "amex"),
    (2, 51, 55, "mastercard"),
    (4, 2221, 2720, "mastercard"),     # the 2-series BINs, issued since 2017
    (4, 6011, 6011, "discover"),
    (3, 644, 649, "discover"),
    (2, 65, 65, "discover"),
    (4, 3528, 3589, "jcb"),
    (2, 62, 62, "unionpay"),           # incl. 622126-622925, co-branded with Discover
    (2, 81, 81, "unionpay"),
    (2, 50, 50, "maestro"),
    (2, 56, 58, "maestro"),
    (4, 6304, 6304, "maestro"),
    (4, 6759, 6759, "maestro"),
    (4, 6761, 6763, "maestro"),
)


def brand(pan: str) -> Brand:
    """The card network from the leading digits (IIN); "unknown" when none matches.

    Looks at the prefix only: it neither checks the length nor the Luhn digit.
    """
    if not is_digits(pan):
        return "unknown"
    best: tuple[int, Brand] = (0, "unknown")
    for width, low, high, name in _IIN_RANGES:
        if len(pan) >= width and width > best[0] and low <= int(pan[:width]) <= high:
            best = (width, name)
    return best[1]


def expired(exp_month: int, exp_year: int, today: date) -> bool:
    """True once the expiry month is over: a card is valid through its month's last day.

    A card expiring 03/2026 is still good on 2026-03-31 and expired on 2026-04-01.
    Raises ValueError for a month outside 1..12.
    """
    if not 1 <= exp_month <= 12:
        raise ValueError(f"exp_month {exp_month!r} is not in 1..12")
    return (today.year, today.month) > (exp_year, exp_month)


def parse_bin_entry(entry: str) -> tuple[str, str]:
    """`"411111"` -> ("411111", "411111"); `"520000-520099"` -> ("520000", "520099").

    Raises ValueError for anything that is not a digit prefix or a LOW-HIGH range
    with LOW <= HIGH.
    """
    low, sep, high = entry.strip().partition("-")
    if not sep:
        high = low
    low, high = low.strip(), high.strip()
    if not is_digits(low) or not is_digits(high):
        raise ValueError(f"blocked BIN entry {entry!r} must be a digit prefix or LOW-HIGH")
    if len(low) == len(high) and low > high:
        raise ValueError(f"blocked BIN range {entry!r} has LOW above HIGH")
    return low, high


def bin_blocked(pan: str, ranges: list[str] | tuple[str, ...]) -> bool:
    """True when the PAN falls under any entry of `ranges`.

    An entry is a prefix ("411111": every PAN starting with it) or an inclusive range
    ("520000-520099"). Ranges compare equal-length prefixes: the PAN's first
    len(LOW) digits must be >= LOW and its first len(HIGH) digits <= HIGH, so
    "520000-520099" blocks 5200001234567890 and 5200991234567890 but not
    5201001234567890. A PAN shorter than an entry never matches it. Raises
    ValueError for a malformed entry (config validation rejects those first).
    """
    for entry in ranges:
        low, high = parse_bin_entry(entry)
        if len(pan) < max(len(low), len(high)):
            continue
        if pan[:len(low)] >= low and pan[:len(high)] <= high:
            return True
    return False
