"""Inspection off the event loop: a pool of worker processes, each with its own Pipeline.

Inspection is CPU-bound; the SMTP sessions are I/O-bound. Worker processes give both
cores to inspection and keep one large message from stalling every other session.
A worker that dies or overruns the time limit makes the message fail temporarily
(4xx, the client retries) and the pool is rebuilt; it never costs a message.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from gateway.actions.outgoing import OutgoingPreparer
from gateway.config import Config
from gateway.message import NO_HISTORY, Envelope, SenderHistory
from gateway.pipeline import Inspection, Pipeline

log = logging.getLogger(__name__)

_pipeline: Pipeline | None = None
_preparer: OutgoingPreparer | None = None


@dataclass(frozen=True)
class Inspected:
    inspection: Inspection
    outgoing: bytes | None          # what delivered recipients get (disclaimer, DKIM); None if nobody is delivered


def _init_worker(config: Config) -> None:
    global _pipeline, _preparer
    # Ctrl-C reaches the whole process group; the server decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _pipeline = Pipeline(config)
    _preparer = OutgoingPreparer(config)


def _inspect_in_worker(raw: bytes, envelope: Envelope, reference: str, history: SenderHistory) -> Inspected:
    assert _pipeline is not None and _preparer is not None
    inspection = _pipeline.inspect(raw, envelope, reference, history)
    delivered = any(r.action.route for r in inspection.decision.recipients)
    return Inspected(inspection, _preparer.prepare(raw, inspection) if delivered else None)


def available_cpus(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: its affinity, capped by a cgroup v2 CPU quota (a container's
    limit), rounded up. os.cpu_count() would count the whole node's cores."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()[:2]
        if quota != "max":
            count = min(count, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, count)


class InspectionUnavailable(Exception):
    """Inspection could not finish now; the message must be retried later."""


class InspectionGaveUp(Exception):
    """This message cannot be inspected (it overran the time limit, or crashed the inspector
    twice): retrying would only repeat that, so it is decided as not fully inspected."""


class InspectionPool:
    def __init__(self, config: Config):
        self.config = config
        self.size = config.server.workers or available_cpus()
        self._executor: ProcessPoolExecutor | None = None
        self._crashed: dict[bytes, None] = {}   # fingerprints of messages in flight when a worker died

    def start(self) -> None:
        # spawn: workers must not inherit the event loop, sockets or threads of the server.
        self._executor = ProcessPoolExecutor(
            max_workers=self.size,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(self.config,),
        )
        # Start every worker now so the first messages do not pay for imports.
        for future in [self._executor.submit(os.getpid) for _ in range(self.size)]:
            future.result()

    def _restart(self, failed: ProcessPoolExecutor) -> None:
        if self._executor is not failed:
            return  # another session already replaced the pool that failed
        old, self._executor = self._executor, None
        if old is not None:
            for process in list(getattr(old, "_processes", {}).values()):
                process.kill()
            old.shutdown(wait=False, cancel_futures=True)
        self.start()

    async def inspect(self, raw: bytes, envelope: Envelope, reference: str,
                      history: SenderHistory = NO_HISTORY) -> Inspected:
        executor = self._executor
        assert executor is not None, "start() the pool first"
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(executor, _inspect_in_worker, raw, envelope, reference, history)
        try:
            return await asyncio.wait_for(future, timeout=self.config.server.inspection_timeout)
        except asyncio.TimeoutError:
            log.error("inspection of %s took longer than %ss; restarting workers", reference,
                      self.config.server.inspection_timeout)
            await loop.run_in_executor(None, self._restart, executor)
            raise InspectionGaveUp(f"inspection took longer than {self.config.server.inspection_timeout:g} s") from None
        except BrokenProcessPool:
            log.error("an inspection worker died while inspecting %s; restarting workers", reference)
            await loop.run_in_executor(None, self._restart, executor)
            # Every message in flight sees the pool break; only one that breaks it twice is the cause.
            fingerprint = hashlib.sha256(raw).digest()
            if fingerprint in self._crashed:
                raise InspectionGaveUp("the message crashed the inspector twice") from None
            self._crashed[fingerprint] = None
            while len(self._crashed) > 256:
                self._crashed.pop(next(iter(self._crashed)))
            raise InspectionUnavailable("an inspection worker failed") from None

    @property
    def started(self) -> bool:
        return self._executor is not None

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
