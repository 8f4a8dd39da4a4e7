"""Delivery to the next hop: a Maildir, an SMTP server, or the recipients' MX hosts.

Every route answers per recipient with a real SMTP-style result, so the server can
acknowledge only what is durable. A `verify` route never falls back to plaintext:
no STARTTLS or a certificate that does not verify is a temporary failure (4xx).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiosmtplib

from gateway.routes import RouteSpec, TlsMode

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RecipientResult:
    address: str
    code: int
    text: str                       # enhanced status code and words, e.g. "4.4.1 next hop unavailable"

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    @property
    def temporary(self) -> bool:
        return 400 <= self.code < 500

    @property
    def reply(self) -> str:
        return f"{self.code} {self.text}"


def all_recipients(recipients: list[str], code: int, text: str) -> dict[str, RecipientResult]:
    return {r: RecipientResult(r, code, text) for r in recipients}


class Route(Protocol):
    name: str
    spec: RouteSpec

    async def deliver(
        self, sender: str, recipients: list[str], data: bytes, mail_options: tuple[str, ...]
    ) -> dict[str, RecipientResult]: ...


def fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_durably(directory: Path, name: str, data: bytes, tmp_directory: Path | None = None) -> Path:
    """Write `data` so that it survives a crash once this returns: tmp file, fsync, rename, fsync dir."""
    tmp_dir = tmp_directory or directory
    tmp = tmp_dir / f".{name}.tmp"
    final = directory / name
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a partial file would stay for ever and keep the space taken
        raise
    fsync_directory(directory)
    return final


class MaildirRoute:
    """A local Maildir: the embedded default sink for trying the gateway on one machine."""

    _counter = 0

    def __init__(self, name: str, spec: RouteSpec):
        self.name = name
        self.spec = spec
        self.root = Path(spec.path)

    def _ensure(self) -> None:
        for sub in ("tmp", "new", "cur"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    def _write(self, sender: str, recipients: list[str], data: bytes) -> None:
        self._ensure()
        MaildirRoute._counter += 1
        unique = f"{time.time_ns()}.P{os.getpid()}Q{MaildirRoute._counter}.{socket.gethostname()}"
        prefix = f"Return-Path: <{sender}>\r\n".encode() + b"".join(
            f"Delivered-To: {r}\r\n".encode("utf-8", "surrogateescape") for r in recipients
        )
        write_durably(self.root / "new", unique, prefix + data, tmp_directory=self.root / "tmp")

    async def deliver(
        self, sender: str, recipients: list[str], data: bytes, mail_options: tuple[str, ...]
    ) -> dict[str, RecipientResult]:
        try:
            await asyncio.to_thread(self._write, sender, recipients, data)
        except OSError as e:
            log.error("maildir %s: cannot write: %s", self.root, e.strerror)
            return all_recipients(recipients, 451, f"4.3.0 local mailbox unavailable ({e.strerror}); try again later")
        return all_recipients(recipients, 250, f"2.0.0 delivered to maildir ({self.name} route)")


def tls_context(spec: RouteSpec) -> ssl.SSLContext:
    if spec.tls is TlsMode.VERIFY:
        context = ssl.create_default_context(cafile=spec.ca_file or None)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


_PASSED_OPTIONS = {"BODY": "8BITMIME", "SMTPUTF8": "SMTPUTF8", "RET": "DSN", "ENVID": "DSN"}


def _mail_options(client: aiosmtplib.SMTP, options: tuple[str, ...], size: int) -> list[str] | RecipientResult:
    out: list[str] = []
    for option in options:
        keyword = option.split("=", 1)[0].upper()
        extension = _PASSED_OPTIONS.get(keyword)
        if keyword == "SMTPUTF8" and not client.supports_extension("smtputf8"):
            return RecipientResult("", 550, "5.6.7 the next hop cannot accept internationalised (SMTPUTF8) mail")
        if extension and client.supports_extension(extension.lower()):
            out.append(option)
    if client.supports_extension("size"):
        out.append(f"SIZE={size}")
    return out


class _Deferred(Exception):
    """The next hop cannot take the message now: every recipient gets this temporary result."""

    def __init__(self, code: int, text: str):
        super().__init__(text)
        self.code = code
        self.text = text


_CONVERSATION_ERRORS = (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError, ssl.SSLError)


async def open_session(
    spec: RouteSpec, host: str, port: int, *, timeout: float, helo_name: str, tls_name: str | None = None
) -> aiosmtplib.SMTP:
    """A connected, greeted client with TLS as the route requires; raises _Deferred otherwise."""
    where = f"{host}:{port}"
    client = aiosmtplib.SMTP(
        hostname=host, port=port, timeout=timeout, start_tls=False, local_hostname=helo_name or None
    )
    try:
        await client.connect()
    except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as e:
        log.warning("route %s: next hop %s unavailable: %s", spec.url, where, e)
        raise _Deferred(451, f"4.4.1 next hop {where} is not answering; will retry") from None
    try:
        await client.ehlo()
        if spec.tls is TlsMode.NONE:
            return client
        if client.supports_extension("starttls"):
            try:
                await client.starttls(tls_context=tls_context(spec), server_hostname=tls_name or host)
                await client.ehlo()  # the extensions offered over TLS are the ones that count
            except (aiosmtplib.SMTPException, ssl.SSLError, OSError) as e:
                if spec.tls is TlsMode.VERIFY:
                    log.warning("route %s: TLS with %s failed: %s", spec.url, where, e)
                    raise _Deferred(
                        454, f"4.7.5 TLS with the next hop {where} failed or its certificate did not verify; "
                        "held back for retry, never sent in plaintext",
                    ) from None
                raise
        elif spec.tls is TlsMode.VERIFY:
            log.warning("route %s: next hop %s offers no STARTTLS", spec.url, where)
            raise _Deferred(
                451, f"4.7.10 the next hop {where} does not offer TLS, which these recipients require; "
                "held back for retry, never sent in plaintext",
            )
        return client
    except _Deferred:
        client.close()
        raise
    except _CONVERSATION_ERRORS as e:
        client.close()
        log.warning("route %s: greeting %s failed: %s", spec.url, where, e)
        raise _Deferred(451, f"4.4.2 connection to the next hop {where} failed; will retry") from None


class _DataSent(Exception):
    """The conversation broke after DATA began: the next hop may have the message."""


async def transact(
    client: aiosmtplib.SMTP, spec: RouteSpec, where: str, sender: str, recipients: list[str], data: bytes,
    mail_options: tuple[str, ...],
) -> tuple[dict[str, RecipientResult], bool]:
    """MAIL, RCPT, DATA on an open session: (results, whether the session is clean for another message).
    Conversation errors before DATA propagate as they are; after DATA began, as _DataSent."""
    encoding = "utf-8" if any(o.upper() == "SMTPUTF8" for o in mail_options) else "ascii"
    options = _mail_options(client, mail_options, len(data))
    if isinstance(options, RecipientResult):
        return all_recipients(recipients, options.code, options.text), True
    if spec.tls is TlsMode.VERIFY and client.supports_extension("requiretls"):
        options.append("REQUIRETLS")
    try:
        await client.mail(sender, options=options, encoding=encoding)
    except aiosmtplib.SMTPResponseException as e:
        return all_recipients(recipients, e.code, f"next hop refused the sender: {e.message}"), False
    results: dict[str, RecipientResult] = {}
    accepted: list[str] = []
    for rcpt in recipients:
        try:
            await client.rcpt(rcpt, encoding=encoding)
            accepted.append(rcpt)
        except aiosmtplib.SMTPResponseException as e:
            results[rcpt] = RecipientResult(rcpt, e.code, f"next hop refused the recipient: {e.message}")
    if not accepted:
        return results, False
    try:
        response = await client.data(data)
    except aiosmtplib.SMTPResponseException as e:
        results.update(all_recipients(accepted, e.code, f"next hop refused the message: {e.message}"))
        # A refused DATA command leaves the transaction open at the next hop (MAIL would get
        # "503 nested MAIL command"): the session is not clean for another message.
        return results, False
    except _CONVERSATION_ERRORS as e:
        raise _DataSent(str(e)) from e
    results.update(all_recipients(accepted, 250, f"2.0.0 delivered via {where}: {response.message[:120]}"))
    return results, True


async def deliver_smtp(
    spec: RouteSpec,
    host: str,
    port: int,
    sender: str,
    recipients: list[str],
    data: bytes,
    mail_options: tuple[str, ...],
    *,
    timeout: float,
    helo_name: str,
    tls_name: str | None = None,
) -> dict[str, RecipientResult]:
    """One SMTP conversation on a new connection, with per-recipient results; never raises."""
    where = f"{host}:{port}"
    try:
        client = await open_session(spec, host, port, timeout=timeout, helo_name=helo_name, tls_name=tls_name)
    except _Deferred as d:
        return all_recipients(recipients, d.code, d.text)
    try:
        results, _ = await transact(client, spec, where, sender, recipients, data, mail_options)
        await _quit(client)
        return results
    except (_DataSent, *_CONVERSATION_ERRORS) as e:
        log.warning("route %s: conversation with %s failed: %s", spec.url, where, e)
        return all_recipients(recipients, 451, f"4.4.2 connection to the next hop {where} failed; will retry")
    finally:
        client.close()


class SmtpRoute:
    """A next hop that speaks SMTP: Postfix's reinjection port, a smarthost, a test sink.

    Like Postfix's connection cache, sessions are kept open between messages for
    `reuse_time` seconds, saving the connect, greeting and TLS handshake per message.
    A cached session that turns out to be dead before DATA is replaced transparently.
    """

    def __init__(self, name: str, spec: RouteSpec, timeout: float, helo_name: str,
                 reuse_time: float = 5.0, max_idle: int = 32):
        self.name = name
        self.spec = spec
        self.timeout = timeout
        self.helo_name = helo_name
        self.reuse_time = reuse_time
        self.max_idle = max_idle
        self._idle: list[tuple[aiosmtplib.SMTP, float, asyncio.AbstractEventLoop]] = []
        self._closing: set[asyncio.Task[None]] = set()

    def _close_politely(self, client: aiosmtplib.SMTP) -> None:
        task = asyncio.ensure_future(_quit(client))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    def _take_idle(self) -> aiosmtplib.SMTP | None:
        now = time.monotonic()
        loop = asyncio.get_running_loop()
        while self._idle:
            client, since, owner = self._idle.pop()
            if now - since <= self.reuse_time and owner is loop and client.is_connected:
                return client
            if not owner.is_closed():
                client.close()
        return None

    def _keep(self, client: aiosmtplib.SMTP) -> None:
        if self.reuse_time > 0 and len(self._idle) < self.max_idle and client.is_connected:
            self._idle.append((client, time.monotonic(), asyncio.get_running_loop()))
        else:
            self._close_politely(client)

    async def deliver(
        self, sender: str, recipients: list[str], data: bytes, mail_options: tuple[str, ...]
    ) -> dict[str, RecipientResult]:
        where = f"{self.spec.host}:{self.spec.port}"
        for attempt in range(2):
            client = self._take_idle() if attempt == 0 else None
            reused = client is not None
            if client is None:
                try:
                    client = await open_session(self.spec, self.spec.host, self.spec.port,
                                                timeout=self.timeout, helo_name=self.helo_name)
                except _Deferred as d:
                    return all_recipients(recipients, d.code, d.text)
            try:
                results, clean = await transact(client, self.spec, where, sender, recipients, data, mail_options)
            except _CONVERSATION_ERRORS as e:
                client.close()
                if reused:
                    continue  # the cached session had gone stale before DATA: nothing was sent
                log.warning("route %s: conversation with %s failed: %s", self.spec.url, where, e)
                break
            except _DataSent as e:
                client.close()
                log.warning("route %s: connection to %s lost during DATA: %s", self.spec.url, where, e)
                break
            if clean:
                self._keep(client)
            else:
                self._close_politely(client)
            return results
        return all_recipients(recipients, 451, f"4.4.2 connection to the next hop {where} failed; will retry")


async def _quit(client: aiosmtplib.SMTP) -> None:
    try:
        await client.quit()
    except Exception:
        pass
    finally:
        client.close()


class MxRoute:
    """Direct delivery to each recipient domain's MX hosts, STARTTLS required and verified
    against the MX name. Needs public DNS, so the tests exercise SmtpRoute instead."""

    def __init__(self, name: str, spec: RouteSpec, timeout: float, helo_name: str):
        self.name = name
        self.spec = spec
        self.timeout = timeout
        self.helo_name = helo_name

    async def _mx_hosts(self, domain: str) -> list[str]:
        import dns.asyncresolver
        import dns.exception

        try:
            answer = await dns.asyncresolver.resolve(domain, "MX", lifetime=self.timeout)
        except dns.resolver.NXDOMAIN:
            return []
        except dns.resolver.NoAnswer:
            return [domain]  # RFC 5321 5.1: no MX, use the domain itself
        except dns.exception.DNSException:
            raise
        return [str(r.exchange).rstrip(".") for r in sorted(answer, key=lambda r: r.preference)]

    async def deliver(
        self, sender: str, recipients: list[str], data: bytes, mail_options: tuple[str, ...]
    ) -> dict[str, RecipientResult]:
        by_domain: dict[str, list[str]] = {}
        for rcpt in recipients:
            by_domain.setdefault(rcpt.rpartition("@")[2].lower(), []).append(rcpt)
        results: dict[str, RecipientResult] = {}
        for domain, rcpts in by_domain.items():
            try:
                hosts = await self._mx_hosts(domain)
            except Exception:
                results.update(all_recipients(rcpts, 451, f"4.4.3 DNS lookup for {domain} failed; will retry"))
                continue
            if not hosts:
                results.update(all_recipients(rcpts, 550, f"5.1.2 the domain {domain} does not exist"))
                continue
            outcome: dict[str, RecipientResult] = {}
            for host in hosts:
                outcome = await deliver_smtp(
                    self.spec, host, 25, sender, rcpts, data, mail_options,
                    timeout=self.timeout, helo_name=self.helo_name, tls_name=host,
                )
                if not all(r.temporary for r in outcome.values()):
                    break
            results.update(outcome)
        return results


def build_route(name: str, spec: RouteSpec, timeout: float, helo_name: str, reuse_time: float = 5.0) -> Route:
    if spec.kind == "maildir":
        return MaildirRoute(name, spec)
    if spec.kind == "smtp":
        return SmtpRoute(name, spec, timeout, helo_name, reuse_time)
    return MxRoute(name, spec, timeout, helo_name)
