"""Asyncio byte transport over a pyserial port (the bottom of transport/framing/channel).

Ports are only ever opened with `serial.serial_for_url(url, baudrate=..., timeout=0,
do_not_open=True)` followed by `open()` in a worker thread, so a device path
(`/dev/ttyUSB2`), a pseudo-terminal path (the simulator), `loop://` and `spy://...`
all work, and opening a slow device never blocks the event loop.

Two ways to move bytes, chosen per port:

- **fd mode** — the port is a native `serial.Serial` and `fileno()` works (ttys, ptys):
  the descriptor is made non-blocking, reads come from `loop.add_reader`, writes are
  `os.write` with `loop.add_writer` waiting for room when the kernel buffer is full.
  No thread.
- **thread mode** — everything else: URL handlers without a descriptor (`loop://`) and
  handlers that wrap `read()`/`write()` (`spy://` logs in them, so the descriptor must not
  be used behind its back). A reader thread owned by the transport blocks in
  `port.read()` and hands bytes to the loop with `call_soon_threadsafe`; writes run in a
  one-thread executor owned by the transport. `close()` stops and joins both.

`read()` returns the next chunk of bytes (as they came, at least one byte). End of file,
hang-up (a USB modem unplugged, the simulator's pty master closed) and I/O errors are
raised as `PortClosed` by `read()` and `write()` — after the bytes received before them
have been read — and so is any call after `close()`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import serial

from hw.lifecycle import AsyncClosing
from hw.modem.errors import PortClosed, PortOpenError

__all__ = ["SerialTransport", "open_serial"]

log = logging.getLogger(__name__)

Mode = Literal["fd", "thread"]

#: How long the reader thread blocks in one `port.read()` before it looks at its stop flag
#: (`cancel_read()` wakes it sooner where the port supports it).
_THREAD_POLL_S = 0.1
_READ_SIZE = 65536


def _usable_fd(port: Any) -> int | None:
    """The port's descriptor when bytes may be moved through it directly, else None."""
    cls = type(port)
    native = serial.Serial
    if getattr(cls, "read", None) is not native.read or getattr(cls, "write", None) is not (
        native.write
    ):
        return None  # a URL handler (loop://) or a wrapper that must see every byte (spy://)
    try:
        fd = port.fileno()
    except (AttributeError, OSError, ValueError, serial.SerialException):
        return None
    return fd if isinstance(fd, int) and fd >= 0 else None


def _close_spy_log(port: Any) -> None:
    """spy://...?file=LOG opens LOG and never closes it (pyserial 3.5); close it here."""
    output = getattr(getattr(port, "formatter", None), "output", None)
    if output is not None and output not in (sys.stdout, sys.stderr, sys.__stderr__):
        with contextlib.suppress(Exception):
            output.close()


async def open_serial(
    url: str, *, baudrate: int = 115200, force_thread: bool = False, **options: Any
) -> SerialTransport:
    """Open `url` (device path or pyserial URL) and wrap it; see `SerialTransport.open`."""
    return await SerialTransport.open(
        url, baudrate=baudrate, force_thread=force_thread, **options
    )


class SerialTransport(AsyncClosing):
    """An open serial port as an asyncio byte stream; create with `SerialTransport.open()`.

    The transport owns the port (and, in thread mode, its reader thread and writer
    executor): `close()` — or leaving `async with` — releases all of them. One reader at a
    time; concurrent writers are serialised in call order.
    """

    def __init__(self, port: Any, url: str, *, force_thread: bool = False) -> None:
        self._port = port
        self._url = url
        self._loop = asyncio.get_running_loop()
        self._buffer = bytearray()
        self._error: PortClosed | None = None
        self._closed = False
        self._read_waiter: asyncio.Future[None] | None = None
        self._write_waiter: asyncio.Future[None] | None = None
        self._write_lock = asyncio.Lock()
        self._fd = None if force_thread else _usable_fd(port)
        self._thread: threading.Thread | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._stop = threading.Event()
        if self._fd is not None:
            os.set_blocking(self._fd, False)
            self._loop.add_reader(self._fd, self._on_readable)
        else:
            # the reader thread blocks in read(); short polls let it notice close()
            port.timeout = _THREAD_POLL_S
            self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"serial-write {url}")
            self._thread = threading.Thread(
                target=self._reader_thread, name=f"serial-read {url}", daemon=True
            )
            self._thread.start()

    @classmethod
    async def open(
        cls, url: str, *, baudrate: int = 115200, force_thread: bool = False, **options: Any
    ) -> SerialTransport:
        """Open `url` via `serial_for_url(..., timeout=0, do_not_open=True)` + `open()`.

        `force_thread` uses the reader thread even where a descriptor is usable; other
        keyword `options` go to `serial_for_url` (bytesize, parity, rtscts...).
        Raises `PortOpenError`.
        """
        try:
            port = serial.serial_for_url(
                url, baudrate=baudrate, timeout=0, do_not_open=True, **options
            )
            await asyncio.to_thread(port.open)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise PortOpenError(url, str(exc)) from exc
        try:
            return cls(port, url, force_thread=force_thread)
        except BaseException:
            await asyncio.to_thread(port.close)
            raise

    # -- properties --------------------------------------------------------------------
    @property
    def url(self) -> str:
        return self._url

    @property
    def mode(self) -> Mode:
        """`"fd"` (add_reader/add_writer) or `"thread"` (reader thread fallback)."""
        return "fd" if self._fd is not None else "thread"

    @property
    def port(self) -> Any:
        """The underlying pyserial object (for modem-control lines; never read/write it)."""
        return self._port

    @property
    def is_closed(self) -> bool:
        return self._closed or self._error is not None

    # -- reading -----------------------------------------------------------------------
    async def read(self) -> bytes:
        """The bytes received since the last call, waiting for at least one."""
        if self._read_waiter is not None:
            raise RuntimeError(f"concurrent read() on AT port {self._url!r}")
        while not self._buffer:
            if self._error is not None:
                raise self._error
            if self._closed:
                raise PortClosed(self._url, "closed")
            waiter: asyncio.Future[None] = self._loop.create_future()
            self._read_waiter = waiter
            try:
                await waiter
            finally:
                self._read_waiter = None
        data = bytes(self._buffer)
        self._buffer.clear()
        return data

    def _wake_waiters(self) -> None:
        for waiter in (self._read_waiter, self._write_waiter):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def _on_data(self, data: bytes) -> None:
        self._buffer += data
        self._wake_waiters()

    def _fail(self, error: PortClosed) -> None:
        if self._error is None and not self._closed:
            log.info("%s", error)
            self._error = error
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
        self._wake_waiters()

    def _on_readable(self) -> None:
        assert self._fd is not None
        try:
            data = os.read(self._fd, _READ_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._fail(PortClosed(self._url, f"read failed: {exc}"))
            return
        if not data:
            self._fail(PortClosed(self._url, "end of file (hang-up)"))
            return
        self._on_data(data)

    def _reader_thread(self) -> None:
        port = self._port
        while not self._stop.is_set():
            try:
                data = port.read(1)
                if data:
                    waiting = port.in_waiting
                    if waiting:
                        data += port.read(waiting)
            except Exception as exc:  # SerialException, OSError, or the port closed under us
                if not self._stop.is_set():
                    self._call_soon(self._fail, PortClosed(self._url, f"read failed: {exc}"))
                return
            if data and not self._stop.is_set():
                self._call_soon(self._on_data, data)

    def _call_soon(self, callback: Any, arg: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            self._loop.call_soon_threadsafe(callback, arg)

    # -- writing -----------------------------------------------------------------------
    async def write(self, data: bytes) -> None:
        """Send all of `data`; returns once the kernel (or the port object) has it all."""
        async with self._write_lock:
            self._check_open()
            if self._fd is not None:
                await self._write_fd(memoryview(data))
            else:
                assert self._executor is not None
                try:
                    await self._loop.run_in_executor(self._executor, self._write_blocking, data)
                except (serial.SerialException, OSError) as exc:
                    error = PortClosed(self._url, f"write failed: {exc}")
                    self._fail(error)
                    raise error from exc

    def _check_open(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closed:
            raise PortClosed(self._url, "closed")

    def _write_blocking(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = self._port.write(view)
            view = view[written or 0 :]

    async def _write_fd(self, view: memoryview) -> None:
        fd = self._fd
        assert fd is not None
        while view:
            try:
                written = os.write(fd, view)
            except (BlockingIOError, InterruptedError):
                written = 0
            except OSError as exc:
                reason = "hang-up" if exc.errno in (errno.EIO, errno.ENXIO) else "write failed"
                error = PortClosed(self._url, f"{reason}: {exc}")
                self._fail(error)
                raise error from exc
            view = view[written:]
            if view:
                await self._writable(fd)

    async def _writable(self, fd: int) -> None:
        """Back-pressure: wait until the descriptor can take more bytes."""
        room: asyncio.Future[None] = self._loop.create_future()

        def ready() -> None:
            if not room.done():
                room.set_result(None)

        self._write_waiter = room
        self._loop.add_writer(fd, ready)
        try:
            await room
        finally:
            self._write_waiter = None
            if not self.is_closed:
                self._loop.remove_writer(fd)
        self._check_open()

    # -- closing -----------------------------------------------------------------------
    async def close(self) -> None:
        """Release the port (and the reader thread/executor). Idempotent."""
        if self._closed:
            return
        self._closed = True
        port = self._port
        if self._fd is not None:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
            self._wake_waiters()
            port.close()
            return
        self._stop.set()
        if hasattr(port, "cancel_read"):
            with contextlib.suppress(Exception):
                port.cancel_read()
        self._wake_waiters()
        thread, executor = self._thread, self._executor
        assert thread is not None and executor is not None
        await self._loop.run_in_executor(executor, thread.join)
        await self._loop.run_in_executor(executor, port.close)
        executor.shutdown(wait=False)
        _close_spy_log(port)

    def __repr__(self) -> str:
        state = "closed" if self.is_closed else "open"
        return f"<SerialTransport {self._url!r} {self.mode} {state}>"
