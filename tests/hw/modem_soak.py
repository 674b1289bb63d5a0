"""The modem soak (issue #10 part 6): the supervisor, the modem and the data call kept up
as the daemon does, against the EC25 simulator on a real pty, on a virtual clock, with
quirks injected at random (seeded): URCs inside answers, noise bytes, odd and broken
layouts, NR5G answers, busy answers, and a modem reboot every `reboot_every_s`.

Used by `tests/hw/test_modem_soak.py` (1 h of virtual time, in `make test`) and
`benchmarks/bench_modem_soak.py` (24 h, in `make bench`). The verdict: no recovery rung
(`modem_reset`) for a quirk, and every reboot recovered: registered with data up again.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections import Counter
from dataclasses import dataclass, field

from hw.modem.health import ModemSupervisor, SupervisorPolicy
from hw.modem.simulator import RecordingDataHook
from tests.hw.modem_harness import TIMEOUTS, Events, FakeSleep, modem_on

#: URCs a real EC25/RM5xx sends at any moment; put inside the next answer.
URCS = [
    '+QIND: "csq",20,99',
    '+CTZE: "+36",0,"2024/05/01,03:00:00"',
    '+QIND: "act","LTE"',
    '+QIND: "FOTA","HTTPEND",0',
    "+CGEV: NW MODIFY 1,0,0",
    '+CEREG: 1,"1A2B","1A2D001",7',
    '+QIND: "csq",99,99',
    "+CTZV: 36",
    "+CMTI: \"SM\",1",
    "+CUSD: 0,\"balance 1000\",15",
]

#: (command, raw answer) in layouts seen in the field, all with a final result code.
ODD_ANSWERS = [
    # NR5G-SA and EN-DC (RM520N/RM500Q) where an EC25 answers LTE
    ("AT+QCSQ", b'\r\n+QCSQ: "NR5G",-75,4,-11\r\n\r\nOK\r\n'),
    ("AT+QCSQ", b'\r\n+QCSQ: "LTE",-61,-89,180,-9\r\n+QCSQ: "NR5G",-80,20,-12\r\n\r\nOK\r\n'),
    ("AT+QCSQ", b'\r\n+QCSQ: "NR5G",-68,38,-11,-\r\n\r\nOK\r\n'),
    # glued and lowercase finals
    ("AT+QCSQ", b'\r\n+QCSQ: "LTE",-61,-89,180,-9OK\r\n'),
    ("AT+QCSQ", b'\r\n+QCSQ: "LTE",-61,-89,180,-9\r\n\r\nok\r\n'),
    # broken: unparseable (a degraded reading, the last good value kept)
    ("AT+QCSQ", b'\r\n+QCSQ: "NR6G",-75,4,-11\r\n\r\nOK\r\n'),
    ("AT+QCSQ", b'\r\n+QCSQ: "LTE",-6\x00\xff5,-95\r\n\r\nOK\r\n'),
    ("AT+QCSQ", b'\r\n+QCSQ: "LTE",x,y\r\nOK\r\n'),
    # registration layouts: <tac>,<rac>,<ci>,<AcT>, n=3 empty causes, garbled, impossible
    ("AT+CEREG?", b"\r\n+CEREG: 2,1, 1A2B, 20 ,1A2D001 ,7\r\n\r\nOK\r\n"),
    ("AT+CEREG?", b'\r\n+CEREG: 3,1,"1A2B","1A2D001",7,,\r\n\r\nOK\r\n'),
    ("AT+CEREG?", b'\r\n+CEREG: 2,1,"2B5C",0A,0 5,X,7\r\n\r\nOK\r\n'),
    ("AT+CEREG?", b"\r\n+CEREG: 9,99\r\n\r\nOK\r\n"),
    ("AT+CEREG?", b"\r\n+CEREG: \r\n\r\nOK\r\n"),
    # busy: retried with backoff, never a reset
    ("AT+QCSQ", b"\r\n+CME ERROR: 515\r\n"),
    ("AT+CEREG?", b"\r\n+CME ERROR: 14\r\n"),
]

#: Line noise between answers (power glitches, a UART at the wrong speed).
NOISE = [b"\x00\x00\xff", b"\xfe\xfe\r\n", b"\r\n\x1b[0m\r\n", b"\x00" * 32, b"~~~~\r\n"]


@dataclass
class SoakResult:
    virtual_s: float = 0.0
    wall_s: float = 0.0
    ticks: int = 0
    commands: int = 0
    quirks: Counter[str] = field(default_factory=Counter)
    reboots_injected: int = 0
    reboots_recovered: int = 0
    reboots_seen: int = 0
    recovery_ticks_max: int = 0
    resets: int = 0
    reset_reasons: Counter[str] = field(default_factory=Counter)
    parse_errors: int = 0
    busy_retries: int = 0
    garbage_bytes: int = 0
    data_up_at_end: bool = False

    @property
    def quirky_answers(self) -> int:
        return sum(self.quirks.values())

    def as_dict(self) -> dict[str, object]:
        doc = dataclasses.asdict(self)
        doc["quirks"] = dict(self.quirks)
        doc["reset_reasons"] = dict(self.reset_reasons)
        doc["quirky_answers"] = self.quirky_answers
        return doc


async def run_soak(
    virtual_s: float,
    *,
    seed: int = 10,
    poll_interval_s: float = 10.0,
    reboot_every_s: float | None = 1800.0,
    quirk_probability: float = 0.3,
    max_quirks: int | None = None,
) -> SoakResult:
    """Soak for `virtual_s` seconds of virtual time (or until `max_quirks` quirky answers
    were injected). Each tick: maybe a raced URC, an odd answer, noise; a reboot when due;
    one supervisor tick; the data call brought up again when registered without it."""
    rng = random.Random(seed)
    result = SoakResult()
    fake = FakeSleep()
    events = Events()
    started = time.perf_counter()
    timeouts = dataclasses.replace(TIMEOUTS, boot_urcs=2.0)
    async with modem_on(data_hook=RecordingDataHook(),
                        channel_options={"default_timeout": 1.0},
                        modem_options={"timeouts": timeouts, "monotonic": fake.monotonic,
                                       "sleep": fake, "apn": "internet"}) as (sim, modem):
        sup = ModemSupervisor(modem, SupervisorPolicy(poll_interval_s=poll_interval_s,
                                                      boot_timeout_s=5.0),
                              on_event=events, monotonic=fake.monotonic, sleep=fake)
        assert await sup.start()
        await modem.connect_data()  # the first one switches the EC25 to ECM: a reboot
        boots_before = modem.snapshot().reboots_seen
        next_reboot = reboot_every_s
        rebooted_at_tick: int | None = None
        while fake.monotonic() < virtual_s:
            if max_quirks is not None and result.quirky_answers >= max_quirks:
                break
            fake.advance(poll_interval_s)
            result.ticks += 1
            if rng.random() < quirk_probability:
                sim.race_urc(rng.choice(URCS))
                result.quirks["raced_urc"] += 1
            if rng.random() < quirk_probability:
                command, raw = rng.choice(ODD_ANSWERS)
                sim.answer_raw(command, raw, times=1)
                result.quirks["odd_answer"] += 1
            if rng.random() < quirk_probability / 3:
                sim.send_raw(rng.choice(NOISE))
                result.quirks["noise"] += 1
            if next_reboot is not None and fake.monotonic() >= next_reboot:
                sim.reboot()
                result.reboots_injected += 1
                assert reboot_every_s is not None
                next_reboot += reboot_every_s
                if rebooted_at_tick is None:
                    rebooted_at_tick = result.ticks
            await sup.tick()
            status = modem.snapshot()
            if status.present and status.registered and not status.data_up:
                await modem.connect_data()  # the daemon's hot standby (`_keep_data_up`)
                status = modem.snapshot()
            if rebooted_at_tick is not None and status.data_up and status.registered:
                result.reboots_recovered = result.reboots_injected
                result.recovery_ticks_max = max(result.recovery_ticks_max,
                                                result.ticks - rebooted_at_tick + 1)
                rebooted_at_tick = None
        status = modem.snapshot()
        result.virtual_s = fake.monotonic()
        result.wall_s = time.perf_counter() - started
        result.commands = sum(1 for line in sim.received)
        result.reboots_seen = status.reboots_seen - boots_before
        result.resets = sup.resets_total
        result.reset_reasons = Counter(e["reason"] for e in events.of("modem_reset"))
        result.parse_errors = status.parse_errors
        result.busy_retries = modem.busy_retries
        result.garbage_bytes = modem.channel.stats.garbage_bytes
        result.data_up_at_end = status.data_up
    return result
