"""A Quectel EC25 simulator on a pseudo-terminal, shipped with the driver (cf. gpiozero's
MockFactory): the same driver code runs against it off-target, in tests and on a
technician's laptop.

It speaks AT byte for byte like an EC25 with `ATV1` (verbose results): echo on until
`ATE0` (the echo is every received byte, sent back as it arrives), information responses
framed `\\r\\n<line>[\\r\\n<line>...]\\r\\n`, final result codes `\\r\\nOK\\r\\n`,
`\\r\\nERROR\\r\\n`, `\\r\\n+CME ERROR: <n>\\r\\n` (`AT+CMEE=1`, the default; `=2` gives
texts, `=0` plain `ERROR`), URCs `\\r\\n<urc>\\r\\n`. After power-on: `RDY`, `+CFUN: 1`,
`+CPIN: READY`, `+QUSIM: 1`, `+QIND: SMS DONE`, `+QIND: PB DONE`.

The simulator holds the pty master (`os.openpty()`); the driver opens `slave_path` with
`serial_for_url`. It runs as asyncio tasks in the caller's loop (`start()`/`stop()` or
`async with`), and standalone for people without hardware:

    python -m hw.modem.simulator --link /tmp/ttyMODEM [--operator KT|SKT|LGU] ...

Commands: `AT`, `ATE0/ATE1`, `ATI`, `ATZ`, `AT&F`, `ATV1`, `ATQ0`, `AT&W`,
`AT+CGMI/CGMM/CGMR/CGSN/GSN`, `AT+CMEE`, `AT+CSCS`, `AT+CPIN?` / `=<pin>[,<newpin>]`
(3 wrong PINs -> SIM PUK; 10 wrong PUKs -> blocked), `AT+QPINC`, `AT+QCCID`, `AT+CIMI`,
`AT+CREG/CGREG/CEREG` `?` and `=n`, `AT+COPS?` / `=?` / `=mode[,format]`, `AT+CSQ`,
`AT+QCSQ`, `AT+CESQ`, `AT+QNWINFO`, `AT+QENG="servingcell"`, `AT+CGDCONT`, `AT+CGATT`,
`AT+CGACT`, `AT+CGPADDR`, `AT+CGEREP`, `AT+QCFG="usbnet"[,n]`, `AT+QNETDEVCTL`,
`AT+CCLK?`, `AT+QLTS[=0|1|2]`, `AT+CFUN?` / `=0|1|4` / `=1,1` (reboot), `AT+QDSIM`,
`AT+QPOWD`, `AT+CEER`, `AT+QSIMSTAT` (`+QSIMSTAT: 1,0|1` on a SIM swap), `AT+CTZR`;
`;`-concatenated commands; anything else -> `ERROR`. Without a SIM the
SIM-dependent ones give `+CME ERROR: 10`.

Scenario knobs (plain attributes and methods, settable at run time):

- SIM: `sims[slot]` (`SimCard`: present, PIN/PUK, operator, MCC/MNC, IMSI, ICCID; presets
  `SimCard.kt()`, `.skt()`, `.lgu()`, `.absent()`), `insert_sim(slot, card)`,
  `remove_sim(slot)`, `slot` (what `AT+QDSIM` selects).
- radio: `signal` (`Signal`: RSSI/RSRP/RSRQ/SINR in dBm/dB), `lose_registration(stat,
  cause=)` (emits `+CREG/+CGREG/+CEREG: <stat>` URCs as enabled with `=1|2|3`, drops
  data; at `+CEREG` n=3 a denied one carries `0,<cause>`), `restore_registration()`
  (`+CEREG: 1,"<tac>","<ci>",7` at n=2), `network_deactivate()` (`+QIURC: "pdpdeact"`,
  `+CGEV: NW PDN DEACT`), `time_zone_report()` (`+CTZE`, with `AT+CTZR=2`).
- timing: `cops_delay_s` (slow `AT+COPS?`), `boot_delay_s` (power-on to `RDY`),
  `chunk_size` + `chunk_gap_s` (every write split into chunks with gaps), `hold(cmd)`
  (answer only once the returned event is set), `command_seen(cmd)` (a future resolved
  when the command arrives).
- quirks: `answer_raw(cmd, data, times=)` (answer `cmd` with exactly `data`, e.g. a glued
  `+CSQ: 18,99OK`, a lowercase `ok`, NUL noise, a Wavecom `+CPIN: READY` without `OK`;
  `times` answers, None: until `clear_raw()`), `reboot_on(cmd)` (reboot when `cmd`
  arrives, leaving it unanswered, as a firmware crash does).
- faults: `reboot()` (unexpected: current command abandoned, silence, boot URCs again),
  `mute()` (hung: no echo, no answers, no URCs until `power_cycle()`), `race_urc(line)`
  (the URC is put in the middle of the next answer), `send_raw(data)` (garbage),
  `emit_urc(line)`.
- power: `power_cycle()` (the power hook a GPIO mock or a test calls), `power_off()`.

Data interface: a `DataHook` (`async (up: bool) -> None`) is awaited when the data call
goes up (`AT+CGACT=1,<cid>`, `AT+QNETDEVCTL=1,<cid>,...`) — before the `OK` — and when it
goes down (`AT+CGACT=0`, `AT+QNETDEVCTL=0`, registration loss, `AT+CFUN=0`, SIM switch,
power-off, reboot — before `RDY`). Default when `data_interface` is given: `IpLinkHook`,
which runs `ip [-n NETNS] link set dev IFACE up|down` (and assigns `data_address`); tests
use `RecordingDataHook`.

Time: `wall` (a callable returning wall seconds, `time.time` by default) is what
`AT+CCLK?`, `AT+QLTS` and `+CTZE` report, shifted by `tz_quarters`.

Layout: `scenario` (SIM cards, signal), `hooks` (data hooks), `pty` (the wire: pty
master, epochs, chunked writes), `device` (state machine and execution), `commands/`
(one module per command family, each with its scenario knobs), `ec25` (`ModemSimulator`,
the composition), `cli` (`python -m hw.modem.simulator`).
"""

from __future__ import annotations

from hw.modem.simulator.cli import main
from hw.modem.simulator.ec25 import ModemSimulator
from hw.modem.simulator.hooks import DataHook, IpLinkHook, RecordingDataHook
from hw.modem.simulator.scenario import Signal, SimCard

__all__ = [
    "DataHook",
    "IpLinkHook",
    "ModemSimulator",
    "RecordingDataHook",
    "Signal",
    "SimCard",
    "main",
]
