"""The admin listener: /metrics for Prometheus, /healthz and /readyz for orchestrators, and the review UI.

Bound to loopback by default (`admin.listen`). This module only routes: metrics and
health answer anyone who can reach the listener (Prometheus, kubelet) and never carry
message data; the review UI (gateway/web) mounts its own pages, each behind sign-in.
No access log: request lines could carry what a person typed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aiohttp import web

from gateway.metrics import Metrics

if TYPE_CHECKING:
    from gateway.web.views import ReviewUI

log = logging.getLogger(__name__)

READY_CACHE_SECONDS = 2.0


class AdminServer:
    def __init__(self, metrics: Metrics, ready: Callable[[], Awaitable[str | None]], review: "ReviewUI | None" = None):
        """`ready` returns None when the gateway can take mail, else why not; `review` adds the review UI."""
        self.metrics = metrics
        self.ready = ready
        self._runner: web.AppRunner | None = None
        self._ready_at = 0.0
        self._ready_reason: str | None = "not checked yet"
        self.app = web.Application()
        self.app.router.add_get("/metrics", self._metrics)
        self.app.router.add_get("/healthz", self._healthz)
        self.app.router.add_get("/readyz", self._readyz)
        self.review = review
        if review is not None:
            review.mount(self.app)

    async def start(self, host: str, port: int) -> None:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        log.info("admin listening on %s:%d (/metrics, /healthz, /readyz%s)", host, port,
                 ", review UI at /login" if self.review is not None else "")

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        self.metrics.ready.set(1 if await self._not_ready() is None else 0)
        body = await asyncio.to_thread(self.metrics.render)   # the quarantine gauge may query the database
        return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    async def _healthz(self, request: web.Request) -> web.Response:
        # Answering at all shows the event loop is alive.
        return web.Response(text="ok\n")

    async def _not_ready(self) -> str | None:
        now = time.monotonic()
        if now - self._ready_at > READY_CACHE_SECONDS:
            try:
                self._ready_reason = await asyncio.wait_for(self.ready(), timeout=5)
            except Exception as e:
                self._ready_reason = f"readiness check failed: {type(e).__name__}"
            self._ready_at = now
        return self._ready_reason

    async def _readyz(self, request: web.Request) -> web.Response:
        reason = await self._not_ready()
        if reason is None:
            return web.Response(text="ready\n")
        return web.Response(status=503, text=f"not ready: {reason}\n")
