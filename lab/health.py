"""A web server that answers `GET /health` with 200 "ok": what an HTTP(S) probe target is
in the shop's internet (tests and benchmarks)."""

from __future__ import annotations

import socket
import ssl

from aiohttp import web

__all__ = ["serve_health"]


async def serve_health(sock: socket.socket, ssl_context: ssl.SSLContext | None = None
                       ) -> web.AppRunner:
    """Serve `/health` on `sock` (listening, made in the namespace it serves); the caller
    cleans the returned runner up."""
    async def health(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/health", health)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    await web.SockSite(runner, sock, ssl_context=ssl_context).start()
    return runner
