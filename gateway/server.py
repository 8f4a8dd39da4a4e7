"""The SMTP and LMTP listeners. They speak the protocol and nothing else.

A message's bytes and envelope go to the inspection pool and then to the
dispatcher; their per-recipient results become reply codes. No policy here.
What the listeners add to aiosmtpd: only allowed client networks, strict CRLF
command lines, a recipient limit and a time limit on each whole transaction.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import signal
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope as SmtpEnvelope, Session

from gateway.actions import Dispatcher, build_routes
from gateway.actions.delivery import RecipientResult, all_recipients
from gateway.actions.quarantine import Quarantine
from gateway.audit import AuditLog, decision_record
from gateway.config import Config, parse_listen
from gateway.admin import AdminServer
from gateway.web.views import ReviewUI
from gateway.history import Delivered, RecipientHistory
from gateway.metrics import Metrics, QuarantineCollector, held_in_quarantine
from gateway.store import database_answers
from gateway.message import NO_HISTORY, Envelope, SenderHistory
from gateway.pipeline import Inspection, gave_up, new_reference
from gateway.policy import Policy
from gateway.workers import InspectionGaveUp, InspectionPool, InspectionUnavailable

log = logging.getLogger(__name__)

IDENT = "dlp-gateway"


CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f]")


class BareLineEnding(Exception):
    """A command line ended in a bare LF or held a bare CR."""


class _StrictCommandReader:
    """Wraps aiosmtpd's StreamReader so command lines must end in CRLF and hold no other CR or LF.

    Bare line endings are how SMTP smuggling and command injection get through; DATA
    is read with an explicit CRLF separator and passes straight through.
    """

    def __init__(self, inner: asyncio.StreamReader):
        object.__setattr__(self, "_inner", inner)

    async def readuntil(self, separator: bytes = b"\n") -> bytes:
        line = await self._inner.readuntil(separator)
        if separator == b"\n" and (not line.endswith(b"\r\n") or b"\r" in line[:-2]):
            raise BareLineEnding()
        return line

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._inner, name, value)


class GatewaySMTP(SMTP):
    def __init__(
        self,
        handler: "GatewayHandler",
        *,
        networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network],
        transaction_timeout: float,
        **kwargs: Any,
    ):
        super().__init__(handler, **kwargs)
        self._networks = list(networks)
        self._transaction_timeout = transaction_timeout
        self._transaction_timer: asyncio.TimerHandle | None = None

    def _cb_client_connected(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super()._cb_client_connected(reader, writer)
        self._reader = _StrictCommandReader(reader)  # type: ignore[assignment]

    def _client_allowed(self) -> bool:
        peer = self.session.peer if self.session else None
        if not isinstance(peer, tuple):
            return True  # a Unix socket: only local processes can reach it
        try:
            address = ipaddress.ip_address(peer[0].split("%")[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in net for net in self._networks)

    async def _handle_client(self) -> None:
        connections = self.event_handler.connections
        if connections.open > connections.limit:
            log.warning("refused a connection from %s: %d open, server.max_connections is %d", self.session.peer,
                        connections.open - 1, connections.limit)
            await self.push(f"421 4.7.0 {self.hostname} has too many connections open; try again later")
            assert self.transport is not None
            self.transport.close()
            return
        if not self._client_allowed():
            log.warning("refused connection from %s: not in server.allowed_networks", self.session.peer)
            await self.push(f"554 5.7.1 {self.hostname} does not relay for your address; "
                            "ask the mail administrator to add it to server.allowed_networks")
            assert self.transport is not None
            self.transport.close()
            return
        await super()._handle_client()

    def _transaction_expired(self) -> None:
        log.info("%r transaction took longer than %ss; closing", self.session.peer, self._transaction_timeout)
        if self._writer is not None and self.transport is not None:
            self._writer.write(b"421 4.4.2 transaction time limit exceeded; closing connection\r\n")
            self.transport.close()

    def _stop_transaction_timer(self) -> None:
        if self._transaction_timer is not None:
            self._transaction_timer.cancel()
            self._transaction_timer = None

    async def smtp_MAIL(self, arg: str) -> None:
        await super().smtp_MAIL(arg)
        if self.envelope is not None and self.envelope.mail_from is not None and self._transaction_timer is None:
            self._transaction_timer = self.loop.call_later(self._transaction_timeout, self._transaction_expired)

    async def smtp_RSET(self, arg: str) -> None:
        self._stop_transaction_timer()
        await super().smtp_RSET(arg)

    async def smtp_DATA(self, arg: str) -> None:
        try:
            await super().smtp_DATA(arg)
        finally:
            self._stop_transaction_timer()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._sessions = self.event_handler.metrics.sessions.labels(self.event_handler.listener)
        self._sessions.inc()
        self.event_handler.connections.open += 1
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self._stop_transaction_timer()
        self._sessions.dec()
        self.event_handler.connections.open -= 1
        super().connection_lost(error)


class GatewayLMTP(GatewaySMTP, LMTP):
    """LMTP: LHLO instead of EHLO, and one reply per recipient after DATA."""


@dataclass
class Connections:
    """Client connections open on all listeners, against server.max_connections."""

    limit: int
    open: int = 0


class GatewayHandler:
    """aiosmtpd handler hooks: envelope checks, then hand the message over and turn results into replies."""

    def __init__(
        self,
        config: Config,
        pool: InspectionPool,
        dispatcher: Dispatcher,
        audit: AuditLog,
        lmtp: bool,
        history: RecipientHistory | None = None,
        metrics: Metrics | None = None,
        connections: Connections | None = None,
    ):
        self.config = config
        self.pool = pool
        self.dispatcher = dispatcher
        self.audit = audit
        self.lmtp = lmtp
        self.history = history
        self.metrics = metrics or Metrics()
        self.listener = "lmtp" if lmtp else "smtp"
        self.connections = connections or Connections(config.server.max_connections)
        self.policy = Policy(config.organisation, config.policy)  # decides messages whose inspection gave up
        self.in_flight: set[asyncio.Task[Any]] = set()

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: SmtpEnvelope, address: str, mail_options: list[str]
    ) -> str:
        if CONTROL_CHARACTER.search(address):
            # It would end up in the headers of bounces and deliveries: refuse it now, not on every retry.
            return "553 5.1.7 The sender address holds a control character and cannot be used"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: SmtpEnvelope, address: str, rcpt_options: list[str]
    ) -> str:
        if CONTROL_CHARACTER.search(address):
            return "553 5.1.3 The recipient address holds a control character and cannot be used"
        if len(envelope.rcpt_tos) >= self.config.server.max_recipients:
            return f"452 4.5.3 Too many recipients (at most {self.config.server.max_recipients} per message)"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_exception(self, error: Exception) -> str:
        if isinstance(error, BareLineEnding):
            return "500 5.5.2 Bare CR or LF in a command; end each command line with CRLF"
        self.metrics.errors.labels("session").inc()
        log.exception("error in an SMTP session")
        return "451 4.3.0 Internal error; try again later"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: SmtpEnvelope) -> str:
        mail_from = envelope.mail_from or ""
        message_envelope = Envelope(
            mail_from="" if mail_from == "<>" else mail_from,
            rcpt_tos=tuple(envelope.rcpt_tos),
            mail_options=tuple(envelope.mail_options),
            client_address=str(session.peer[0]) if isinstance(session.peer, tuple) else "local",
            helo=session.host_name or "",
            protocol="LMTP" if self.lmtp else ("ESMTP" if session.extended_smtp else "SMTP"),
        )
        raw = envelope.original_content or b""
        # Shielded: once a message is being carried out it is finished even if the
        # client goes away, so nothing is left half-done; the client's retry is a duplicate at worst.
        task = asyncio.ensure_future(self.process(raw, message_envelope))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)
        results = await asyncio.shield(task)
        if self.lmtp:
            return "\r\n".join(results[r].reply for r in message_envelope.rcpt_tos)
        return smtp_reply(list(results.values()))

    async def process(self, raw: bytes, envelope: Envelope) -> dict[str, RecipientResult]:
        started = time.perf_counter()
        reference = new_reference()
        outgoing: bytes | None = None
        try:
            inspected = await self.pool.inspect(raw, envelope, reference, await self._history_of(envelope.mail_from))
            inspection, outgoing = inspected.inspection, inspected.outgoing
        except InspectionUnavailable as e:
            self.metrics.errors.labels("inspection").inc()
            return all_recipients(list(envelope.rcpt_tos), 451, f"4.3.0 message could not be inspected now ({e}); "
                                  "try again later")
        except InspectionGaveUp as e:
            self.metrics.inspection_gave_up.inc()
            inspection = gave_up(self.policy, raw, envelope, reference, str(e))
        try:
            results = await self.dispatcher.carry_out(inspection, raw, envelope, per_recipient=self.lmtp,
                                                      outgoing=outgoing)
        except Exception:
            self.metrics.errors.labels("delivery").inc()
            log.exception("carrying out the decision for %s failed", reference)
            return all_recipients(list(envelope.rcpt_tos), 451, "4.3.0 internal error; try again later")
        self._remember_delivered(inspection, envelope, results)
        self.metrics.observe_message(inspection, results, time.perf_counter() - started)
        try:
            self.audit.write(decision_record(inspection, envelope, results))
        except Exception:
            self.metrics.errors.labels("audit").inc()
            log.exception("audit line for %s could not be written", reference)
        log.info("%s %s from=<%s> rcpts=%d verdict=%s rules=%s", reference, envelope.protocol, envelope.mail_from,
                 len(envelope.rcpt_tos), inspection.decision.verdict.value, ",".join(inspection.decision.rules) or "-")
        return results


    async def _history_of(self, sender: str) -> SenderHistory:
        if self.history is None or not sender:
            return NO_HISTORY
        try:
            return await asyncio.wait_for(asyncio.to_thread(self.history.lookup, sender),
                                          timeout=self.config.storage.timeout)
        except Exception as e:
            # The history only sharpens recipient checks; without it the message is still inspected.
            self.metrics.errors.labels("history").inc()
            log.warning("recipient history unavailable, inspecting without it: %s", e)
            return NO_HISTORY

    def _remember_delivered(self, inspection: Inspection, envelope: Envelope,
                            results: dict[str, RecipientResult]) -> None:
        """Record, after the reply, whom the sender's mail was delivered to (held or refused mail is not)."""
        if self.history is None or not envelope.mail_from:
            return
        names = dict(inspection.shown_names)
        delivered = [
            Delivered(r.address, names.get(r.address.lower(), ""))
            for r in inspection.decision.recipients
            if r.action.route is not None and r.address in results and results[r.address].ok
        ]
        if delivered:
            task = asyncio.ensure_future(asyncio.to_thread(self._record, envelope.mail_from, delivered))
            self.in_flight.add(task)
            task.add_done_callback(self.in_flight.discard)

    def _record(self, sender: str, delivered: list[Delivered]) -> None:
        assert self.history is not None
        try:
            self.history.record(sender, delivered)
        except Exception as e:
            self.metrics.errors.labels("history").inc()
            log.warning("recipient history not updated: %s", e)


def smtp_reply(results: list[RecipientResult]) -> str:
    """One SMTP reply for all recipients: retry if anything is temporary, refuse if everything was refused."""
    temporary = [r for r in results if r.temporary]
    if temporary:
        return temporary[0].reply
    if results and all(r.code >= 500 for r in results):
        return results[0].reply
    ok = [r for r in results if r.ok]
    if len(ok) == 1:
        return ok[0].reply
    return f"250 2.0.0 OK: {len(ok)} recipients done ({'; '.join(sorted({r.text.split(',')[0] for r in ok}))})"


def _tls_context(config: Config) -> ssl.SSLContext | None:
    if not config.server.tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(config.server.tls_cert, config.server.tls_key)
    return context


class Gateway:
    """The running relay: the worker pool, the listeners, and their orderly shutdown."""

    def __init__(self, config: Config):
        self.config = config
        self.pool = InspectionPool(config)
        self.audit = AuditLog(config.audit.path)
        self.history = (RecipientHistory(config.storage.database_url, config.history.max_per_sender,
                                         config.history.expiry_days) if config.history.enabled else None)
        routes = build_routes(config)
        self.quarantine = Quarantine.from_config(config, routes)
        self.metrics = Metrics()
        self.dispatcher = Dispatcher(config, routes, self.quarantine, self.metrics)
        self.retention: asyncio.Task[None] | None = None
        self.metrics.registry.register(QuarantineCollector(held_in_quarantine(config.storage.database_url)))
        self.admin = AdminServer(self.metrics, self.not_ready, ReviewUI(config, self.quarantine, routes))
        self.connections = Connections(config.server.max_connections)
        self.servers: list[asyncio.base_events.Server] = []
        self.handlers: list[GatewayHandler] = []

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.pool.start)
        if self.quarantine.keys.current is None:
            log.warning("held mail is stored unencrypted in %s: no quarantine.keys configured",
                        self.config.storage.quarantine_dir)
        self.retention = asyncio.create_task(self.quarantine.run_retention(self.config.quarantine.expire_interval))
        tls = _tls_context(self.config)
        server = self.config.server
        for listen, cls in ((server.smtp_listen, GatewaySMTP), (server.lmtp_listen, GatewayLMTP)):
            address = parse_listen(listen)
            if address is None:
                continue
            handler = GatewayHandler(self.config, self.pool, self.dispatcher, self.audit, lmtp=cls is GatewayLMTP,
                                     history=self.history, metrics=self.metrics, connections=self.connections)
            self.handlers.append(handler)

            def factory(cls: type[GatewaySMTP] = cls, handler: GatewayHandler = handler) -> GatewaySMTP:
                return cls(
                    handler,
                    networks=server.networks,
                    transaction_timeout=server.transaction_timeout,
                    data_size_limit=server.max_message_size,
                    enable_SMTPUTF8=True,
                    decode_data=False,
                    hostname=self.config.hostname,
                    ident=IDENT,
                    tls_context=tls,
                    require_starttls=server.require_tls,
                    timeout=server.idle_timeout,
                    loop=loop,
                )

            self.servers.append(await loop.create_server(factory, host=address[0], port=address[1]))
            log.info("%s listening on %s", "LMTP" if cls is GatewayLMTP else "SMTP", listen)
        admin = parse_listen(self.config.admin.listen)
        if admin is not None:
            await self.admin.start(*admin)

    async def not_ready(self) -> str | None:
        """Why the gateway cannot take mail now (for /readyz), or None when it can."""
        if not self.servers or not all(s.is_serving() for s in self.servers):
            return "listeners are not serving"
        if not self.pool.started:
            return "inspection workers are not running"
        try:
            await asyncio.to_thread(database_answers, self.config.storage.database_url)
        except Exception as e:
            return f"the database does not answer ({type(e).__name__})"
        return None

    async def stop(self, grace: float = 30.0) -> None:
        for srv in self.servers:
            srv.close()
        in_flight = [t for h in self.handlers for t in h.in_flight]
        if in_flight:
            log.info("waiting for %d message(s) in progress", len(in_flight))
            await asyncio.wait(in_flight, timeout=grace)
        if self.retention is not None:
            self.retention.cancel()
            await asyncio.gather(self.retention, return_exceptions=True)
        await asyncio.get_running_loop().run_in_executor(None, self.pool.close)
        await self.admin.stop()
        self.audit.close()


async def serve(config: Config) -> None:
    gateway = Gateway(config)
    await gateway.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    log.info("dlp-gateway ready (relay route %s, secure route %s)", config.routes.relay, config.routes.secure)
    await stop.wait()
    log.info("shutting down")
    await gateway.stop()
