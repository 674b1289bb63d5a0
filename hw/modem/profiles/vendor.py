"""Which vendor profile applies to an identified modem: `vendor_profile` reads the +CGMI /
+CGMM (or ATI) answers (the one place a vendor is decided; the parsers never branch on
vendor, `hw.modem.profiles.profile_for` picks the profile class from it).
"""

from __future__ import annotations

import re
from typing import Final, Literal

VendorProfile = Literal["quectel", "simcom", "generic"]

_QUECTEL_MODELS: Final = re.compile(r"(EC2\d|EG2\d|EG9\d|EG1\d|EM0\d|EM1\d|EP0\d|BG\d\d|"
                                    r"RM5\d\d|RG5\d\d|EC200|EG91|EG95)", re.IGNORECASE)
_SIMCOM_MODELS: Final = re.compile(r"(SIMCOM_|SIM7\d{3}|SIM8\d{3}|A76\d\d)", re.IGNORECASE)


def vendor_profile(manufacturer: str | None, model: str | None) -> VendorProfile:
    """"quectel", "simcom" or "generic" from +CGMI / +CGMM (or ATI) answers.

    The manufacturer decides when it names a vendor (`Quectel`, `SIMCOM INCORPORATED`,
    SIMCom's older `SIMTECH`); otherwise the model's family prefix does (`EC25`, `EG25`,
    `SIMCOM_SIM7600E-H`, `SIM7600G`)."""
    maker = (manufacturer or "").lower()
    if "quectel" in maker:
        return "quectel"
    if "simcom" in maker or "simtech" in maker:
        return "simcom"
    name = (model or "").strip()
    if _QUECTEL_MODELS.match(name):
        return "quectel"
    if _SIMCOM_MODELS.match(name):
        return "simcom"
    return "generic"
