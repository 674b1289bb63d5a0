"""Pure AT response parsers, ModemManager-style.

The 3GPP TS 27.007 / 27.005 responses by family: `registration` (AcT, +CREG/+CGREG/+CEREG,
MCC/MNC, +COPS), `signal` (+CSQ, +CESQ), `identity` (SIM: +CPIN, ICCID, IMSI; modem: ATI,
+CGMI...), `pdp` (+CGDCONT, +CGACT, +CGPADDR, +CGEV), `clock` (+CCLK, +CTZE), `radio`
(+CFUN, +CEER), over the shared `tokens` helpers; `quectel` and `simcom` the vendor
commands. The generic parsers never branch on vendor (`hw.modem.profiles.vendor` decides
the vendor); the +CME/+CMS codes are in `hw.modem.codes`, carriers in `hw.modem.carriers`.
"""
