"""The simulator's wire: the master end of a pseudo-terminal, read and written from the
event loop without ever blocking it.

The simulator holds the pty master (`os.openpty()`); the driver opens `slave_path` with
`serial_for_url`. Input is handed to the device as it arrives. Output is queued, each
piece tagged with the *epoch* it was sent in: a reboot, hang or power-off starts a new
epoch (`drop_unsent()`), and what the old one had not yet written is dropped, as a modem
that lost power never finishes its sentence. `chunk_size` + `chunk_gap_s` split every
write into chunks with gaps (a UART that trickles bytes); `flush()` waits until
everything queued so far is on the wire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tty
from collections.abc import Callable

__all__ = ["PtyPort"]

log = logging.getLogger(__name__)

_Item = tuple[int, bytes] | asyncio.Future[None]


class PtyPort:
    """The master end of a pty: `open(on_input)`, `send()`, `flush()`, `close()`."""

    def __init__(self) -> None:
        self.chunk_size: int | None = None
        self.chunk_gap_s = 0.0
        #: bumped by `drop_unsent()`: output queued in an older epoch is not written
        self.epoch = 0
        self._master: int | None = None
        self._slave: int | None = None
        self._slave_path: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._out: asyncio.Queue[_Item] = asyncio.Queue()
        self._writer_task: asyncio.Task[None] | None = None
        self._wrote_chunk = False

    @property
    def slave_path(self) -> str:
        """The pty slave the driver opens (`/dev/pts/N`)."""
        if self._slave_path is None:
            raise RuntimeError("simulator not started")
        return self._slave_path

    @property
    def is_open(self) -> bool:
        return self._master is not None

    def open(self, on_input: Callable[[bytes], None]) -> None:
        """Create the pty and start reading (`on_input(data)`) and writing, in the
        running loop."""
        self._loop = asyncio.get_running_loop()
        master, slave = os.openpty()
        tty.setraw(slave)  # no echo/line discipline before the driver configures it
        os.set_blocking(master, False)
        self._master, self._slave = master, slave
        self._slave_path = os.ttyname(slave)
        self._loop.add_reader(master, self._on_readable, on_input)
        self._writer_task = self._loop.create_task(self._writer(), name="sim-writer")

    async def close(self) -> None:
        """Stop reading and writing and close the pty (the driver sees a hang-up)."""
        if self._master is None:
            return
        assert self._loop is not None
        self._loop.remove_reader(self._master)
        self._loop.remove_writer(self._master)
        if self._writer_task is not None:
            self._writer_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._writer_task
        for fd in (self._master, self._slave):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = None

    def send(self, data: bytes) -> None:
        """Queue `data` for the wire, in the current epoch."""
        self._out.put_nowait((self.epoch, data))

    def drop_unsent(self) -> None:
        """Start a new epoch: output queued before it is dropped, not written."""
        self.epoch += 1

    async def flush(self) -> None:
        """Wait until everything queued so far has been written to the pty."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._out.put_nowait(done)
        await done

    def _on_readable(self, on_input: Callable[[bytes], None]) -> None:
        assert self._master is not None
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            log.debug("simulator pty read: %s", exc)
            return
        if data:
            on_input(data)

    async def _writer(self) -> None:
        while True:
            item = await self._out.get()
            if isinstance(item, asyncio.Future):
                if not item.done():
                    item.set_result(None)
                continue
            epoch, data = item
            size = self.chunk_size or len(data) or 1
            for start in range(0, len(data), size):
                if epoch != self.epoch:
                    break
                if self.chunk_gap_s and self.chunk_size and self._wrote_chunk:
                    await asyncio.sleep(self.chunk_gap_s)
                await self._write_all(data[start : start + size])
                self._wrote_chunk = True

    async def _write_all(self, data: bytes) -> None:
        assert self._master is not None and self._loop is not None
        view = memoryview(data)
        while view:
            try:
                written = os.write(self._master, view)
            except BlockingIOError:
                written = 0
            view = view[written:]
            if view:
                room: asyncio.Future[None] = self._loop.create_future()
                self._loop.add_writer(self._master, room.set_result, None)
                try:
                    await room
                finally:
                    self._loop.remove_writer(self._master)
