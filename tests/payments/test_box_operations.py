"""Operating the payment side of a running box: queue CLI, key rotation, a full disk."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware.cli.main import main
from lab.gateway_sim import Faults
from tests.support.box import VISA, eventually, payment_body, store_box

OFFLINE = Faults(down=True, down_mode="refuse")


async def test_queue_cli_and_key_rotation_keep_every_payment(
        netns: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    async with store_box(netns, tmp_path, faults=OFFLINE) as box:
        ids = [(await box.pay(payment_body(1000 + i), key=f"rot-{i}")).body["id"]
               for i in range(3)]
        config = str(box.daemon.config)

        assert main(["queue", "stats", "--json", "--config", config]) == 0
        stats = json.loads(capsys.readouterr().out)
        assert stats["count"] == 3 and stats["amount"] == 3003

        assert main(["queue", "list", "--config", config]) == 0
        listing = capsys.readouterr().out
        assert all(pid in listing for pid in ids)
        assert "…1111" in listing and VISA[:6] not in listing

        assert main(["keys", "rotate", "--config", config]) == 0
        out = capsys.readouterr().out
        assert "3 stored cards re-encrypted" in out

        await box.sim.set_faults(down=False)
        assert main(["queue", "drain", "--config", config]) == 0

        async def drained() -> bool:
            return (await box.get("/v1/queue")).body["stats"]["count"] == 0  # type: ignore[no-any-return]

        await eventually(drained, what="the queue to drain after rotation")
        assert sorted(a.payment_id for a in box.sim.authorizations()) == sorted(ids)
        assert all(box.sim.processed_count(pid) == 1 for pid in ids)
        stored = box.sim.stored(ids[0])
        assert stored is not None and stored.last4 == "1111"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs as the box's state directory."""
    state = tmp_path / "state"
    state.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m,mode=0700", "tmpfs", str(state)],
                   check=True)
    try:
        yield state
    finally:
        subprocess.run(["umount", "-l", str(state)], check=False)


def fill(directory: Path) -> Path:
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:  # unbuffered: nothing is left to flush (and fail) at close
        while True:
            os.write(fd, b"\0" * 65536)
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


async def test_disk_full_answers_503_and_recovers(netns: str, tmp_path: Path,
                                                  small_disk: Path) -> None:
    async with store_box(netns, tmp_path, faults=OFFLINE) as box:
        before = await box.pay(payment_body(1500), key="full-0")
        assert before.body["status"] == "approved_offline"
        filler = fill(small_disk)
        body = payment_body(2500)
        refused = await box.pay(body, key="full-1")
        assert refused.status == 503, refused.body
        assert refused.body["error"]["code"] == "storage_unavailable"
        queue = (await box.get("/v1/queue")).body  # the box keeps answering
        assert queue["stats"]["count"] == 1
        filler.unlink()
        accepted = await box.pay(body, key="full-1")
        assert accepted.status == 200
        assert accepted.body["status"] == "approved_offline"
        assert (await box.pay(body, key="full-1")).body == accepted.body
        queue = (await box.get("/v1/queue")).body
        assert queue["stats"]["count"] == 2
        assert "storage" in box.daemon.log()
    conn = sqlite3.connect(f"file:{small_disk / 'payments.sqlite3'}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = conn.execute("SELECT idempotency_key, status FROM payments ORDER BY created_at")
        assert rows.fetchall() == [("full-0", "approved_offline"), ("full-1", "approved_offline")]
    finally:
        conn.close()
