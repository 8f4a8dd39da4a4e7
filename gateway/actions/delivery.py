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
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    final = directory / name
    os.replace(tmp, final)
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


class SmtpRoute:
    """A next hop that speaks SMTP: Postfix's reinjection port, a smarthost, a test sink."""

    def __init__(self, name: str, spec: RouteSpec, timeout: float, helo_name: str):
        self.name = name
        self.spec = spec
        self.timeout = timeout
        self.helo_name = helo_name

    async def deliver(
        self, sender: str, recipients: list[str], data: bytes, mail_options: tuple[str, ...]
    ) -> dict[str, RecipientResult]:
        return await deliver_smtp(
            self.spec, self.spec.host, self.spec.port, sender, recipients, data, mail_options,
            timeout=self.timeout, helo_name=self.helo_name,
        )


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
    """One SMTP conversation with per-recipient results; never raises."""
    where = f"{host}:{port}"
    utf8 = any(o.upper() == "SMTPUTF8" for o in mail_options)
    encoding = "utf-8" if utf8 else "ascii"
    client = aiosmtplib.SMTP(
        hostname=host, port=port, timeout=timeout, start_tls=False, local_hostname=helo_name or None
    )
    try:
        await client.connect()
    except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as e:
        log.warning("route %s: next hop %s unavailable: %s", spec.url, where, e)
        return all_recipients(recipients, 451, f"4.4.1 next hop {where} is not answering; will retry")
    try:
        await client.ehlo()
        if spec.tls is not TlsMode.NONE:
            if client.supports_extension("starttls"):
                try:
                    await client.starttls(tls_context=tls_context(spec), server_hostname=tls_name or host)
                    await client.ehlo()  # the extensions offered over TLS are the ones that count
                except (aiosmtplib.SMTPException, ssl.SSLError, OSError) as e:
                    if spec.tls is TlsMode.VERIFY:
                        log.warning("route %s: TLS with %s failed: %s", spec.url, where, e)
                        return all_recipients(
                            recipients, 454,
                            f"4.7.5 TLS with the next hop {where} failed or its certificate did not verify; "
                            "held back for retry, never sent in plaintext",
                        )
                    raise
            elif spec.tls is TlsMode.VERIFY:
                log.warning("route %s: next hop %s offers no STARTTLS", spec.url, where)
                return all_recipients(
                    recipients, 451,
                    f"4.7.10 the next hop {where} does not offer TLS, which these recipients require; "
                    "held back for retry, never sent in plaintext",
                )
        options = _mail_options(client, mail_options, len(data))
        if isinstance(options, RecipientResult):
            return all_recipients(recipients, options.code, options.text)
        if spec.tls is TlsMode.VERIFY and client.supports_extension("requiretls"):
            options.append("REQUIRETLS")
        try:
            await client.mail(sender, options=options, encoding=encoding)
        except aiosmtplib.SMTPResponseException as e:
            return all_recipients(recipients, e.code, f"next hop refused the sender: {e.message}")
        results: dict[str, RecipientResult] = {}
        accepted: list[str] = []
        for rcpt in recipients:
            try:
                await client.rcpt(rcpt, encoding=encoding)
                accepted.append(rcpt)
            except aiosmtplib.SMTPResponseException as e:
                results[rcpt] = RecipientResult(rcpt, e.code, f"next hop refused the recipient: {e.message}")
        if not accepted:
            await _quit(client)
            return results
        try:
            response = await client.data(data)
        except aiosmtplib.SMTPResponseException as e:
            results.update(all_recipients(accepted, e.code, f"next hop refused the message: {e.message}"))
            return results
        results.update(all_recipients(accepted, 250, f"2.0.0 delivered via {where}: {response.message[:120]}"))
        await _quit(client)
        return results
    except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError, ssl.SSLError) as e:
        log.warning("route %s: conversation with %s failed: %s", spec.url, where, e)
        return {
            **all_recipients(recipients, 451, f"4.4.2 connection to the next hop {where} failed; will retry"),
        }
    finally:
        client.close()


async def _quit(client: aiosmtplib.SMTP) -> None:
    try:
        await client.quit()
    except Exception:
        pass


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


def build_route(name: str, spec: RouteSpec, timeout: float, helo_name: str) -> Route:
    if spec.kind == "maildir":
        return MaildirRoute(name, spec)
    if spec.kind == "smtp":
        return SmtpRoute(name, spec, timeout, helo_name)
    return MxRoute(name, spec, timeout, helo_name)
