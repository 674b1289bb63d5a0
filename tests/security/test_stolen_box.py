"""The stolen box: a thief copies every file the box has and attacks it with our own code.

The run, on the real daemon (`storebox run` in a namespace) against the gateway
simulator: payments approved and declined online, declined offline, approved offline and
then forwarded (one approved, one declined by the gateway), approved offline and still
queued when the box is taken (gateway down). Older payments exist too: settled ones
past ``payments.retention_days`` (the daemon purges them at start) and a forwarded one
two days old (past the velocity window: its fingerprint is erased at start). The
daemon's clock is real, so those aged rows are written before it starts through the
`Store` API with an injected clock, on the same state directory, with the same keys
and merchant id as the daemon uses: exactly the rows a box running for 100 days has.

Then the daemon stops and the thief copies every regular file of the box: its config
directory (config, POS tokens, merchant key, seal public key, PKCS#11 PIN file, the
TPM-sealed credential), its state directory (database, WAL, SHM, KEK file if any) and
its logs (the daemon's stderr, which is what the journal holds). `thief.loot` attacks
the copy: every key on disk, the keys table, every card blob and sealed card, a
fingerprint brute force over a BIN list, a grep for every PAN and its middle digits.

What is *not* in the copy, because on a real box it is not in a file the thief can read:
* pkcs11: the token directory stands for the secure element / TPM: the KEK never
  leaves it. The PIN file is in the copy (it is in /etc/storebox); without the token
  it opens nothing;
* systemd-creds: the decrypted credential lives in ``$CREDENTIALS_DIRECTORY``, a
  tmpfs here (a ramfs under systemd) gone with the power. The copy holds the
  credential as encrypted under the TPM (here: AES-GCM under a key kept in memory,
  standing for the TPM's);
* sealed: the gateway's private key lives at the gateway.

Expected: 0 cards in sealed, pkcs11 and systemd-creds modes. With the `file` provider
(development only) the thief holds the KEK: he decrypts every queued card. The
fingerprints give him nothing: with a provider that keeps its KEK on disk they are
keyed by a key that only ever lived in the daemon's memory. Nothing of forwarded,
declined or purged payments.

The control runs at the end of the protected modes give the same tools what the thief
lacks (the token, the credential, the gateway's private key) and recover the cards:
the tools work, and the hardware is what stops them.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from lab.gateway_sim import Faults, GatewaySimulator
from payments_cache.keyproviders import KeyProvider, make_provider
from payments_cache.models import Card, GatewayResult, PaymentRequest, StandInDecision
from payments_cache.sealing import SealKey, generate_keypair
from payments_cache.store import Store
from tests.security.thief import Loot, copy_box, loot, luhn_complete
from tests.support.box import Box, eventually, payment_body, pinned_session
from tests.support.daemon import MERCHANT_KEY, DaemonProcess, write_config
from tests.support.netns import inside
from tests.support.softhsm import softhsm, write_pin_file

MERCHANT_ID = "merchant-0001"  # the config's default: the daemon binds rows to it
CREDENTIAL = "storebox-kek"
DOWN = Faults(down=True)  # 503: a definite "not taken", so the box stands in


def pan(bin6: str, middle: str, last3: str) -> str:
    return luhn_complete(bin6 + middle + last3)


# Distinctive Luhn-valid 16-digit PANs: every middle holds a 0, 1, 8 or 9 (so no base32
# payment id can contain it) and every last4 differs.
CARDS = {
    "online approved": pan("453201", "908172", "345"),
    "online declined": pan("552433", "180936", "712"),
    "forwarded approved": pan("491761", "819047", "263"),
    "forwarded declined": pan("518791", "091838", "584"),
    "declined offline": pan("453201", "738109", "926"),
    "queued 1": pan("491761", "604918", "137"),
    "queued 2": pan("552433", "981403", "658"),
    "purged online (100 days)": pan("453201", "390815", "471"),
    "purged declined offline (100 days)": pan("518791", "850917", "239"),
    "purged forwarded (100 days)": pan("491761", "019384", "806"),
    "forwarded 2 days ago": pan("552433", "108953", "592"),
}
QUEUED = {"queued 1", "queued 2"}
IN_WINDOW = {"online approved", "online declined", "forwarded approved",
             "forwarded declined", "declined offline", *QUEUED}
PURGED = {k for k in CARDS if k.startswith("purged")}
# The thief's BIN list: the true BINs and decoys of both brands (3 per brand: 3 x 10^5
# Luhn-valid guesses per fingerprint per HMAC key).
THIEF_BINS = ["453201", "491761", "476173", "552433", "518791", "535522"]


# --- the box in each mode --------------------------------------------------------------


@dataclass
class Mode:
    name: str
    box: Path                       # everything the thief copies
    payments: dict[str, Any] = field(default_factory=dict)  # [payments] config keys
    env: dict[str, str] = field(default_factory=dict)
    seal_key: SealKey | None = None
    gateway_private: list[bytes] = field(default_factory=list)  # at the gateway
    opened: list[KeyProvider] = field(default_factory=list)
    open_provider: Callable[[bool], KeyProvider] | None = None

    def keys(self, create: bool) -> KeyProvider:
        assert self.open_provider is not None
        provider = self.open_provider(create)
        self.opened.append(provider)
        return provider

    def close(self) -> None:
        for provider in self.opened:
            provider.close()
        self.opened.clear()


@contextmanager
def tmpfs(path: Path) -> Iterator[Path]:
    """A RAM filesystem (as systemd's $CREDENTIALS_DIRECTORY): not on the SD card."""
    path.mkdir(mode=0o700)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(path)],
                   check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.fixture(params=["sealed", "pkcs11", "systemd-creds", "file"])
def mode(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Mode]:
    box = tmp_path / "box"
    (box / "state").mkdir(parents=True)
    m = Mode(request.param, box)
    state = box / "state"
    if m.name in ("sealed", "file"):
        m.open_provider = lambda create: make_provider(
            "file", state_dir=state, file_path=state / "kek", create=create)
    if m.name == "sealed":
        private_pem, public_pem = generate_keypair()
        (box / "gateway-seal.pub").write_bytes(public_pem)
        m.seal_key = SealKey.from_pem(public_pem)
        m.gateway_private = [private_pem]
        m.payments = {"seal_key_file": box / "gateway-seal.pub"}
    if m.name == "pkcs11":
        with softhsm(tmp_path / "hardware" / "hsm") as hsm:  # the token: not the box's files
            pin_file = write_pin_file(box / "pkcs11-pin", hsm.pin)
            m.payments = {"key_provider": "pkcs11", "pkcs11_module": hsm.module,
                          "pkcs11_token_label": hsm.token_label, "pkcs11_pin_file": pin_file}
            m.env = {"SOFTHSM2_CONF": str(hsm.conf)}
            m.open_provider = lambda create: make_provider(
                "pkcs11", state_dir=state, pkcs11_module=hsm.module,
                pkcs11_token_label=hsm.token_label, pkcs11_pin_file=pin_file, create=create)
            try:
                yield m
            finally:
                m.close()
        return
    if m.name == "systemd-creds":
        with tmpfs(tmp_path / "credentials") as creds:
            kek = secrets.token_bytes(32)
            (creds / CREDENTIAL).write_bytes(kek)
            (creds / CREDENTIAL).chmod(0o400)
            # what rests on the SD card: the credential sealed to the TPM; the TPM's key
            # (`tpm`) exists only in this process, as it exists only in the TPM
            tpm, nonce = AESGCM.generate_key(bit_length=256), os.urandom(12)
            sealed = box / "credstore.encrypted" / CREDENTIAL
            sealed.parent.mkdir()
            sealed.write_bytes(nonce + AESGCM(tpm).encrypt(nonce, kek, CREDENTIAL.encode()))
            m.payments = {"key_provider": "systemd-creds"}
            m.env = {"CREDENTIALS_DIRECTORY": str(creds)}
            m.open_provider = lambda create: make_provider(
                "systemd-creds", state_dir=state, credential_name=CREDENTIAL,
                credentials_directory=creds, create=create)
            try:
                yield m
            finally:
                m.close()
        return
    try:
        yield m
    finally:
        m.close()


# --- the payments ----------------------------------------------------------------------


def request_for(label: str, amount: int) -> PaymentRequest:
    return PaymentRequest(amount, "KRW", Card(CARDS[label], 12, 2030), "pos-1",
                          f"aged-{amount}")


def write_aged_rows(m: Mode) -> dict[str, str]:
    """A box that has been running: rows 100 days and 2 days old, written through the
    `Store` API with an injected clock (the keys themselves are made now, as on a box
    whose keys were rotated recently). Returns label -> payment id."""
    now = time.time()
    clock = [now]
    store = Store.open(m.box / "state", m.keys, wall=lambda: clock[0], seal_key=m.seal_key,
                       merchant_id=MERCHANT_ID)
    approve = StandInDecision(True)
    ids: dict[str, str] = {}

    def since() -> datetime:
        return datetime.fromtimestamp(clock[0], UTC) - timedelta(hours=1)
    try:
        clock[0] = now - 100 * 86400
        p = store.begin_online("aged-1", request_for("purged online (100 days)", 4100))
        ids["purged online (100 days)"] = store.settle_online(
            p.id, GatewayResult("approved", "A00001")).id
        p = store.take_offline("aged-2", request_for("purged declined offline (100 days)",
                                                     4200),
                               lambda *_: StandInDecision(False, "amount_over_limit"), since())
        ids["purged declined offline (100 days)"] = p.id
        for key, label, amount in (("aged-3", "purged forwarded (100 days)", 4300),
                                   ("aged-4", "forwarded 2 days ago", 4400)):
            if label == "forwarded 2 days ago":
                clock[0] = now - 2 * 86400
            p = store.take_offline(key, request_for(label, amount), lambda *_: approve, since())
            assert p.forward_state == "queued"
            done = store.record_forward_result(p.id, GatewayResult("approved", "A00002"),
                                               expect=p)
            assert done is not None and done.forward_state == "forwarded"
            ids[label] = p.id
    finally:
        store.close()
        m.close()
    return ids


@asynccontextmanager
async def running_box(netns: str, m: Mode, faults: Faults | None = None
                      ) -> AsyncIterator[Box]:
    """`tests.support.box.store_box`, with the mode's config, daemon environment and the
    gateway's private seal key (kept out of the box's directory)."""
    (m.box / "notify.sock").unlink(missing_ok=True)  # left by the previous start
    with inside(netns):
        sim = GatewaySimulator(MERCHANT_KEY, seed=7, faults=faults,
                               seal_private_keys=m.gateway_private)
        url = await sim.start()
        daemon = DaemonProcess(netns, write_config(m.box, gateway_url=url, payments=m.payments),
                               env=m.env)
        try:
            await asyncio.to_thread(daemon.notify.wait_for, "READY", "1")
            async with pinned_session(daemon.pin) as session:
                yield Box(daemon, sim, session)
        finally:
            code = await asyncio.to_thread(daemon.stop)
            await sim.stop()
        assert code == 0, daemon.log()[-3000:]


async def pay_as(box: Box, ids: dict[str, str], label: str, amount: int, expect: str) -> None:
    answer = await box.pay(payment_body(amount, pan=CARDS[label]), key=label.replace(" ", "-"))
    assert answer.status == 200 and answer.body["status"] == expect, (label, answer)
    ids[label] = answer.body["id"]


async def forwarding(box: Box, pid: str) -> dict[str, Any]:
    return (await box.get(f"/v1/payments/{pid}")).body["forwarding"]  # type: ignore[no-any-return]


async def morning(box: Box) -> dict[str, str]:
    """The gateway is up: one payment approved online, one declined online."""
    ids: dict[str, str] = {}

    async def purged() -> bool:
        return "settled payments purged" in box.daemon.log()
    await eventually(purged, what="the upkeep at start to purge the aged rows")
    box.sim.set_rules(decline_pans=[CARDS["online declined"]])
    await pay_as(box, ids, "online approved", 1100, "approved")
    await pay_as(box, ids, "online declined", 1200, "declined")
    return ids


async def afternoon(box: Box) -> dict[str, str]:
    """The daemon restarted with the gateway refusing connections (so the box knows
    nothing was sent): three payments offline, two forwarded once it is back (one
    declined by the gateway); then it goes down again and two more stay queued."""
    ids: dict[str, str] = {}
    box.sim.set_rules(decline_pans=[CARDS["forwarded declined"]])
    await pay_as(box, ids, "forwarded approved", 1300, "approved_offline")
    await pay_as(box, ids, "forwarded declined", 1400, "approved_offline")
    await pay_as(box, ids, "declined offline", 60000, "declined_offline")  # over the limit

    await box.sim.set_faults(down=False)
    await box.drain()

    async def forwarded() -> bool:
        states = [(await forwarding(box, ids[label]))["state"]
                  for label in ("forwarded approved", "forwarded declined")]
        return states == ["forwarded", "forwarded"]
    await eventually(forwarded, what="the offline payments to be forwarded")
    assert (await forwarding(box, ids["forwarded declined"]))["final_status"] == "declined"

    await box.sim.set_faults(DOWN)  # and the box is taken before it comes back
    await pay_as(box, ids, "queued 1", 1500, "approved_offline")
    await pay_as(box, ids, "queued 2", 1600, "approved_offline")
    for label in QUEUED:
        assert (await forwarding(box, ids[label]))["state"] == "queued"
    return ids


# --- the test --------------------------------------------------------------------------


def labels(got: dict[str, str], ids: dict[str, str]) -> set[str]:
    """The labels of the cards recovered, checked to be the right PAN for the row."""
    by_id = {pid: label for label, pid in ids.items()}
    assert all(CARDS[by_id[pid]] == p for pid, p in got.items()), "a wrong PAN recovered"
    return {by_id[pid] for pid in got}


def attack(copy: Path, **control: Any) -> Loot:
    files = sorted(p for p in copy.rglob("*") if p.is_file())
    return loot(copy, files, THIEF_BINS, {p: label for label, p in CARDS.items()}, **control)


async def test_a_stolen_box_gives_the_thief_nothing_but_what_its_mode_admits(
        netns: str, tmp_path: Path, mode: Mode) -> None:
    ids = write_aged_rows(mode)
    async with running_box(netns, mode) as box:
        ids.update(await morning(box))
        # the box's own upkeep erased these, not the test
        assert "fingerprints erased" in box.daemon.log()
    async with running_box(netns, mode, Faults(down=True, down_mode="refuse")) as box:
        ids.update(await afternoon(box))
        # the SD card imaged while the box runs: database, WAL and SHM as they are
        copy_box(mode.box, tmp_path / "thief-running")
    copy_box(mode.box, tmp_path / "thief-stopped")  # and after it was switched off

    for when in ("running", "stopped"):
        copy = tmp_path / f"thief-{when}"
        started = time.monotonic()
        got = attack(copy)
        took = time.monotonic() - started
        report = (f"{mode.name}, box {when}: files {got.files}, {got.raw_keys} 32-byte "
                  f"candidates, KEK files {got.kek_files}, data keys {got.data_keys}, HMAC "
                  f"keys {got.hmac_keys}, {got.blobs} card blobs, {got.sealed} sealed cards, "
                  f"{got.fingerprints} fingerprints, {got.hmacs} guesses: decrypted "
                  f"{sorted(labels(got.decrypted, ids))}, unsealed "
                  f"{sorted(labels(got.unsealed, ids))}, brute-forced "
                  f"{sorted(labels(got.brute_forced, ids))} in {took:.1f} s")
        print(report)
        check_loot(mode, got, ids, report)

    # control: the same tools given what the thief lacks recover the cards
    copy = tmp_path / "thief-stopped"
    if mode.name == "sealed":
        control = attack(copy, extra_private_pems=mode.gateway_private)  # the gateway can
        assert labels(control.unsealed, ids) == QUEUED
        assert control.brute_forced == {}  # the fingerprint key died with the daemon
    elif mode.name in ("pkcs11", "systemd-creds"):
        control = attack(copy, extra_providers=[mode.keys(False)])  # the token / credential
        assert labels(control.decrypted, ids) == QUEUED
        assert labels(control.brute_forced, ids) == IN_WINDOW


def check_loot(mode: Mode, got: Loot, ids: dict[str, str], report: str) -> None:
    # in every mode: what the box itself erased is gone for good
    names = {Path(f).name for f in got.files}
    assert {"payments.sqlite3", "storebox.toml", "daemon.log"} <= names, got.files
    present = {r.id for r in got.rows}
    assert not {ids[label] for label in PURGED} & present, "purged rows are still there"
    assert ids["forwarded 2 days ago"] in present
    fingerprinted = {r.id for r in got.rows if r.fingerprint is not None}
    assert fingerprinted == {ids[label] for label in IN_WINDOW}, report
    assert got.first6 == [], "first6 is stored"
    assert got.grep_hits == [], got.grep_hits
    assert {r.id for r in got.rows if r.card_blob or r.card_sealed} == {
        ids[label] for label in QUEUED}

    if mode.name == "file":
        # development only: the KEK is on the disk he copied. He decrypts the queued
        # cards; the fingerprints were keyed in the daemon's memory only: nothing more.
        assert got.kek_files == ["state/kek"]
        assert labels(got.decrypted, ids) == QUEUED, report
        assert got.brute_forced == {}, report
        assert got.hmac_keys and got.hmacs > 0  # he did try, with every key he had
        assert got.pans == {CARDS[label] for label in QUEUED}
        return

    assert got.pans == set(), report  # 0 cards recovered
    assert got.private_keys == []     # nothing opens a sealed card
    if mode.name == "sealed":
        # the file KEK opens the stored keys, but the cards are sealed to the gateway and
        # the fingerprints were made with a key that only ever lived in the daemon's memory
        assert got.kek_files == ["state/kek"] and got.sealed == 2 and got.blobs == 0
        assert got.hmac_keys and got.hmacs > 0
        return
    # pkcs11 / systemd-creds: nothing on disk unwraps a key; nothing to guess with
    assert got.kek_files == [] and got.data_keys == [] and got.hmac_keys == []
    assert got.blobs == 2 and got.sealed == 0 and got.hmacs == 0
