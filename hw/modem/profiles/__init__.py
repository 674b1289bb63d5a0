"""Vendor profiles (ModemManager-style): vendor quirks in one small class per vendor.

`profile_for(manufacturer, model)` picks the profile from the modem's identity through
`hw.modem.profiles.vendor.vendor_profile` — the one place a vendor is decided.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from hw.modem.profiles.generic import AtPort, GenericProfile, InitCommand, Timeouts
from hw.modem.profiles.quectel import QuectelProfile
from hw.modem.profiles.simcom import SimcomProfile
from hw.modem.profiles.vendor import VendorProfile, vendor_profile

__all__ = [
    "PROFILES",
    "AtPort",
    "GenericProfile",
    "InitCommand",
    "QuectelProfile",
    "SimcomProfile",
    "Timeouts",
    "profile_for",
    "vendor_profile",
]

PROFILES: Final[Mapping[VendorProfile, type[GenericProfile]]] = {
    "generic": GenericProfile,
    "quectel": QuectelProfile,
    "simcom": SimcomProfile,
}


def profile_for(
    manufacturer: str | None,
    model: str | None,
    timeouts: Timeouts | None = None,
    **options: Any,
) -> GenericProfile:
    """The profile for a modem identified by +CGMI/+CGMM. `options` go to the profile
    class when it takes them (`usbnet=` for Quectel) and are ignored otherwise."""
    cls = PROFILES[vendor_profile(manufacturer, model)]
    if cls is QuectelProfile and "usbnet" in options:
        return QuectelProfile(timeouts, model=model, usbnet=options["usbnet"])
    return cls(timeouts, model=model)
