"""Typed results of modem operations and the frozen `ModemStatus` snapshot.

Plain frozen dataclasses shared by `hw.modem.profiles` (which produce the readings) and
`hw.modem.state` (whose `ModemState` keeps them current). `ModemStatus` is not a second
modem state: it is the view of the one `ModemState`, computed by `hw.modem.state.view`.
Enum-typed fields are `StrEnum`s, so `dataclasses.asdict()` of any of them is
JSON-serialisable as is.
"""

from __future__ import annotations

from dataclasses import dataclass

from hw.modem.parsers.identity import ModemIdentity, SimState
from hw.modem.parsers.registration import AccessTechnology, RegistrationStatus

__all__ = [
    "DataStatus",
    "ModemStatus",
    "OperatorInfo",
    "RegistrationInfo",
    "SignalReading",
    "SimInfo",
]


@dataclass(frozen=True, slots=True)
class SimInfo:
    """The SIM in the selected slot. `iccid`/`imsi`/`mcc`/`mnc` are None unless `state` is
    READY (or could not be read); `slot` is None when the modem has no slot selection."""

    state: SimState
    iccid: str | None = None
    imsi: str | None = None
    mcc: str | None = None
    mnc: str | None = None
    slot: int | None = None

    @property
    def ready(self) -> bool:
        return self.state is SimState.READY

    @property
    def mcc_mnc(self) -> str | None:
        """The SIM's home network (`"45008"`), from the IMSI."""
        return None if self.mcc is None or self.mnc is None else self.mcc + self.mnc


@dataclass(frozen=True, slots=True)
class RegistrationInfo:
    """Network registration, consolidated over +CEREG (EPS), +CGREG (GPRS), +CREG (CS):
    the best of the three. `area_code` is the TAC on LTE (LAC otherwise); `source` names
    the command (`"+CEREG"`) the values come from."""

    status: RegistrationStatus
    area_code: int | None
    cell_id: int | None
    rat: AccessTechnology | None
    source: str

    @property
    def registered(self) -> bool:
        return self.status.registered

    @property
    def roaming(self) -> bool:
        return self.status.roaming


@dataclass(frozen=True, slots=True)
class OperatorInfo:
    """The serving network: long name (`"KT"`, `"SKTelecom"`) and numeric MCC/MNC; both
    None when not registered. `mode` is the +COPS selection mode (0 automatic)."""

    name: str | None
    mcc_mnc: str | None
    rat: AccessTechnology | None
    mode: int


@dataclass(frozen=True, slots=True)
class SignalReading:
    """Radio conditions in physical units; None where the modem did not report a value.

    `rssi_dbm` is the received signal strength (the "bars" figure, `signal_dbm` in the
    snapshot); `rsrp_dbm`/`rsrq_db`/`sinr_db` are LTE measurements. `source` names the
    command(s) read (`"+QCSQ"`, `"+CPSI"`, `"+CSQ/+CESQ"`)."""

    rssi_dbm: int | None
    rsrp_dbm: float | None
    rsrq_db: float | None
    sinr_db: float | None
    rat: AccessTechnology | None
    source: str


@dataclass(frozen=True, slots=True)
class DataStatus:
    """The packet-data call on context `cid`: `up`, and the addresses the network gave.

    `method` is how the call is made: `"ecm"` (Quectel `+QNETDEVCTL`, the host sees an
    Ethernet interface) or `"pdp"` (plain `+CGACT`; the host side is a QMI/PPP matter).
    `dns`: the resolvers the network gave the context (`+CGCONTRDP`, primary first); ()
    when the modem does not say (it answered ERROR, or the call is down)."""

    up: bool
    cid: int
    ip: str | None
    ipv6: str | None
    method: str
    apn: str | None = None
    dns: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ModemStatus:
    """Everything known about the modem at one moment (`Modem.snapshot()`): the view of
    its `hw.modem.state.ModemState`, never written by anyone else.

    None means "not known (yet)". Fields:

    - `present`: the modem answers AT commands (False once the recovery ladder gave up or
      the port closed; None before the first contact).
    - `identity`, `vendor`: +CGMI/+CGMM/+CGMR/+CGSN and the vendor profile in use.
    - `sim_state`, `sim_fault` (a `SimFault.reason`), `sim_slot`, `iccid`, `sim_mcc_mnc`
      (the SIM's home network, from its IMSI; the IMSI itself is not kept here).
    - `registered`, `registration`, `roaming`, `tac`, `cell_id`: consolidated registration.
    - `operator`, `mcc_mnc`: the serving network; `rat`: access technology now.
    - `signal_dbm` (RSSI), `rsrp_dbm`, `rsrq_db`, `sinr_db`.
    - `data_up`, `ip`, `ipv6`, `dns`: the data call, and the resolvers the network gave
      it (`+CGCONTRDP`; () when down or not told).
    - `same_carrier`: the SIM's carrier (or, without IMSI, the serving network's) is the
      wired ISP's carrier — one failure domain for both uplinks (None when unknown).
    - `recovery_step`: the recovery-ladder step in progress or last failed (None when
      healthy); `resets_total`: recovery actions taken; `reboots_seen`: `RDY`s received;
      `last_reset_reason`: why the last ladder rung was taken (`no_answer`,
      `error_storm`, `registration_lost`, `port_closed`; None before any).
    - `parse_errors`: answers and URCs that did not parse (the last good values were
      kept; a parse error never climbs the recovery ladder).
    - `imsi`: the SIM's IMSI masked to MCC+MNC and its last 4 digits (`45008******7890`;
      the IMSI is personal data, the full one is never kept).
    - `radio_on`: `+CFUN?` (False: radio off, CFUN 0 or 4); `reject_cause`: the network's
      EMM cause (TS 24.301) when it denied registration (`+CEREG` at `<n>` = 3);
      `error_report`: `AT+CEER`'s text, read when registration or the data call failed;
      `utc_offset_min`: the network's time zone from `+CTZE`.
    - `not_connected_reason`: why LTE is not connected, in plain language ("no SIM",
      "radio off", "SIM rejected by the network: plan expired...?"; `hw.modem.reasons`);
      None while the data call is up.
    - `updated_at`: when the state last changed (the `Modem`'s `monotonic`, in seconds).
    """

    present: bool | None = None
    identity: ModemIdentity | None = None
    vendor: str | None = None
    sim_state: SimState | None = None
    sim_fault: str | None = None
    sim_slot: int | None = None
    iccid: str | None = None
    sim_mcc_mnc: str | None = None
    registered: bool | None = None
    registration: RegistrationStatus | None = None
    roaming: bool | None = None
    tac: int | None = None
    cell_id: int | None = None
    operator: str | None = None
    mcc_mnc: str | None = None
    rat: AccessTechnology | None = None
    signal_dbm: int | None = None
    rsrp_dbm: float | None = None
    rsrq_db: float | None = None
    sinr_db: float | None = None
    data_up: bool = False
    ip: str | None = None
    ipv6: str | None = None
    dns: tuple[str, ...] = ()
    same_carrier: bool | None = None
    recovery_step: str | None = None
    resets_total: int = 0
    reboots_seen: int = 0
    last_reset_reason: str | None = None
    parse_errors: int = 0
    imsi: str | None = None
    radio_on: bool | None = None
    reject_cause: int | None = None
    error_report: str | None = None
    utc_offset_min: int | None = None
    not_connected_reason: str | None = None
    updated_at: float | None = None
