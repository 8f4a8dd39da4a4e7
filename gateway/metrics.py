"""Prometheus metrics: what the gateway decided, found, delivered and held, and how fast.

Every label has a bounded set of values (verdicts, classes, actions, detector and
rule names from the configuration, route names, stages): never an address, a
message id, a reference or anything from a message.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from gateway.actions.delivery import RecipientResult
from gateway.decision import Action
from gateway.pipeline import Inspection

log = logging.getLogger(__name__)

# The *_created series double every counter's output for no use on a scrape.
disable_created_metrics()

PREFIX = "dlp_gateway"

# Stages errors are counted by; a fixed list so the label stays bounded.
STAGES = ("inspection", "delivery", "quarantine", "bounce", "audit", "history", "session")


class Metrics:
    """The gateway's metrics in a registry of its own (one per Gateway, so tests can run several)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.messages = Counter(f"{PREFIX}_messages", "Messages decided, by verdict (the strictest recipient action)",
                                ["verdict"], registry=r)
        self.recipients = Counter(f"{PREFIX}_recipients", "Recipients decided, by class and action",
                                  ["class", "action"], registry=r)
        self.findings = Counter(f"{PREFIX}_findings", "Findings, by detector and category", ["detector", "category"],
                                registry=r)
        self.rule_hits = Counter(f"{PREFIX}_rule_hits", "Recipients for whom a rule fired, by rule", ["rule"],
                                 registry=r)
        self.inspection_seconds = Histogram(
            f"{PREFIX}_inspection_seconds", "Time to inspect one message (parse, attachments, detectors, policy)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=r)
        self.processing_seconds = Histogram(
            f"{PREFIX}_processing_seconds", "Time from the end of DATA to the reply: inspection and carrying out",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300), registry=r)
        self.message_size = Histogram(
            f"{PREFIX}_message_size_bytes", "Size of messages received",
            buckets=(1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 52428800), registry=r)
        self.deliveries = Counter(
            f"{PREFIX}_deliveries", "Recipients handed to a route, by route and result "
            "(delivered, deferred, refused, tls_failed)", ["route", "result"], registry=r)
        self.replies = Counter(f"{PREFIX}_replies", "Per-recipient outcomes given to clients, by class of reply code",
                               ["code"], registry=r)
        self.bounces = Counter(f"{PREFIX}_bounces", "Bounces and notices sent to senders, by kind and result",
                               ["kind", "result"], registry=r)
        self.sessions = Gauge(f"{PREFIX}_smtp_sessions", "Open client sessions, by listener", ["listener"],
                              registry=r)
        self.errors = Counter(f"{PREFIX}_errors", "Errors, by the stage they happened in", ["stage"], registry=r)
        self.inspection_gave_up = Counter(
            f"{PREFIX}_inspection_gave_up", "Messages decided without a full inspection (time limit or crash)",
            registry=r)
        self.ready = Gauge(f"{PREFIX}_ready", "1 when the gateway can take mail (what /readyz answers), else 0",
                           registry=r)
        for stage in STAGES:
            self.errors.labels(stage)
        for listener in ("smtp", "lmtp"):
            self.sessions.labels(listener)

    def observe_message(self, inspection: Inspection, results: dict[str, RecipientResult],
                        processing_seconds: float) -> None:
        decision = inspection.decision
        self.messages.labels(decision.verdict.value).inc()
        self.message_size.observe(inspection.size)
        if inspection.seconds:
            self.inspection_seconds.observe(inspection.seconds)
        self.processing_seconds.observe(processing_seconds)
        for f in inspection.findings:
            self.findings.labels(f.detector, f.category.value).inc()
        for r in decision.recipients:
            self.recipients.labels(r.rclass.value, r.action.value).inc()
            for rule in r.rules:
                self.rule_hits.labels(rule).inc()
            result = results.get(r.address)
            if result is None:
                continue
            self.replies.labels(f"{result.code // 100}xx").inc()
            if r.action.route is not None:
                self.deliveries.labels(r.action.route, delivery_result(r.action, result)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


def delivery_result(action: Action, result: RecipientResult) -> str:
    if result.ok:
        return "delivered"
    if result.temporary and result.text.startswith("4.7."):
        return "tls_failed"     # no STARTTLS, or a certificate that does not verify (see delivery.py)
    return "deferred" if result.temporary else "refused"


class QuarantineCollector(Collector):
    """Held messages and the age of the oldest, read from the index at most every `ttl` seconds
    (a scrape must not hammer a shared database)."""

    def __init__(self, read: Callable[[], tuple[int, float | None]], ttl: float = 15.0):
        self.read = read
        self.ttl = ttl
        self._cached: tuple[float, tuple[int, float | None]] | None = None

    def describe(self) -> Iterable[GaugeMetricFamily]:
        # Names only: registering must not query the database (nor cache a reading).
        yield GaugeMetricFamily(f"{PREFIX}_quarantine_messages", "")
        yield GaugeMetricFamily(f"{PREFIX}_quarantine_oldest_age_seconds", "")

    def collect(self) -> Iterable[GaugeMetricFamily]:
        now = time.time()
        if self._cached is None or now - self._cached[0] > self.ttl:
            try:
                self._cached = (now, self.read())
            except Exception as e:
                log.warning("quarantine metrics not read: %s", e)
                self._cached = None
        held, oldest = self._cached[1] if self._cached else (float("nan"), None)
        yield GaugeMetricFamily(f"{PREFIX}_quarantine_messages", "Messages held in quarantine now", value=held)
        yield GaugeMetricFamily(f"{PREFIX}_quarantine_oldest_age_seconds",
                                "Age of the oldest held message (0 when none is held)",
                                value=(now - oldest) if oldest is not None else 0.0)


def held_in_quarantine(database_url: str) -> Callable[[], tuple[int, float | None]]:
    """How many messages are held and when the oldest arrived, from the quarantine index."""
    import sqlalchemy as sa

    from gateway.store import engine_for, quarantine_items

    def read() -> tuple[int, float | None]:
        q = quarantine_items
        with engine_for(database_url).connect() as conn:
            count, oldest = conn.execute(
                sa.select(sa.func.count(), sa.func.min(q.c.created_at)).where(q.c.status == "held")
            ).one()
        return int(count), oldest

    return read
