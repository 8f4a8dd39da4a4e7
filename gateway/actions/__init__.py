"""Carrying out a Decision: deliver, deliver over verified TLS, hold, or refuse with a bounce.

Each recipient ends with a result that is either durable (250: the next hop took it,
it is fsync'd in quarantine, or the bounce was handed to the relay) or an honest
failure (4xx: the upstream keeps the message and retries; 5xx: it bounces).
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
from typing import TYPE_CHECKING

from gateway.actions.bounce import Refusal, bounce_mail_options, build_bounce, should_bounce
from gateway.actions.delivery import RecipientResult, Route, all_recipients, build_route
from gateway.actions.notices import TemplateError, build_held_notice, mail_options_for, templates_in
from gateway.actions.quarantine import Quarantine
from gateway.config import Config, ConfigError
from gateway.decision import Action, RecipientClass, RecipientDecision
from gateway.message import Envelope
from gateway.pipeline import Inspection
from gateway.policy import deciding_rules

if TYPE_CHECKING:
    from gateway.metrics import Metrics

log = logging.getLogger(__name__)


def enhanced_status(text: str, default: str) -> str:
    m = re.match(r"[245]\.\d{1,3}\.\d{1,3}\b", text)
    return m.group(0) if m else default


_DLP_FIELD = re.compile(rb"x-dlp-[!-9;-~]*[ \t]*:", re.IGNORECASE)


def without_dlp_headers(raw: bytes) -> bytes:
    """`raw` without any X-DLP-* field in its header, every other byte as it was. Only the
    gateway writes those: from a client they would be a forged verdict, reference or
    disclaimer marker. Done before the message is DKIM-signed, so the signature holds."""
    pos, kept, skipping, removed = 0, [], False, False
    while pos < len(raw):
        nl = raw.find(b"\n", pos)
        end = len(raw) if nl < 0 else nl + 1
        line = raw[pos:end]
        if line in (b"\r\n", b"\n"):
            break  # the end of the header
        if line[:1] in (b" ", b"\t"):
            skip = skipping  # a continuation belongs to the field before it
        else:
            skip = skipping = bool(_DLP_FIELD.match(line))
        if skip:
            removed = True
        else:
            kept.append(line)
        pos = end
    return b"".join(kept) + raw[pos:] if removed else raw


def build_routes(config: Config) -> dict[str, Route]:
    helo = config.delivery.helo_name or config.hostname
    return {
        name: build_route(name, config.routes.spec(name), config.delivery.timeout, helo,
                          config.delivery.connection_reuse_time)
        for name in ("relay", "secure")
    }


class Dispatcher:
    def __init__(self, config: Config, routes: dict[str, Route], quarantine: Quarantine,
                 metrics: "Metrics | None" = None):
        self.config = config
        self.routes = routes
        self.quarantine = quarantine
        self.metrics = metrics
        try:  # checked when the configuration was read; a file changed since is caught here, not per message
            templates_in(config.bounce.templates)
        except TemplateError as e:
            raise ConfigError([f"bounce.templates: {e}"]) from None

    def outgoing(self, raw: bytes, inspection: Inspection, envelope: Envelope, action: Action,
                 dlp_headers: bool = True) -> bytes:
        """The bytes handed to the next hop: a trace header and, unless `dlp_headers` is False,
        the gateway's verdict and reference in front. Prepended after DKIM signing and not
        signed, so they break no signature."""
        received = (
            f"Received: from {re.sub(r'[^!-~]', '?', envelope.helo) or 'unknown'} ([{envelope.client_address}])\r\n"
            f"\tby {self.config.hostname} (dlp-gateway) with {envelope.protocol} id {inspection.reference};\r\n"
            f"\t{email.utils.formatdate()}\r\n"
        )
        notes = ""
        if dlp_headers and self.config.headers.verdict:
            notes += f"X-DLP-Verdict: {action.value}\r\n"
        if dlp_headers and self.config.headers.reference:
            notes += f"X-DLP-Reference: {inspection.reference}\r\n"
        return (received + notes).encode("ascii", "replace") + raw

    def delivery_groups(self, inspection: Inspection) -> list[tuple[Action, list[str], bool]]:
        """(action, recipients, with X-DLP headers) per copy to send. With headers.strip_for_external
        a group is split: internal recipients get a copy with the headers, the others one without."""
        headers = self.config.headers
        split = headers.strip_for_external and (headers.verdict or headers.reference)
        groups = []
        for action in (Action.DELIVER, Action.DELIVER_TLS):
            recipients = inspection.decision.with_action(action)
            if not split:
                groups.append((action, [r.address for r in recipients], True))
                continue
            inside = [r.address for r in recipients if r.rclass is RecipientClass.INTERNAL]
            outside = [r.address for r in recipients if r.rclass is not RecipientClass.INTERNAL]
            groups += [(action, inside, True), (action, outside, False)]
        return [(action, group, with_headers) for action, group, with_headers in groups if group]

    async def carry_out(
        self, inspection: Inspection, raw: bytes, envelope: Envelope, per_recipient: bool,
        outgoing: bytes | None = None,
    ) -> dict[str, RecipientResult]:
        """Results for every envelope recipient. `per_recipient` is True for LMTP; over SMTP
        one reply covers all, so a temporary failure stops further work (the retry redoes it)
        and permanent next-hop failures beside successes are bounced here. `outgoing` is
        what delivered recipients get (disclaimer and signature added); held and bounced
        mail always keeps the original bytes."""
        decision = inspection.decision
        results: dict[str, RecipientResult] = {}

        held = decision.with_action(Action.QUARANTINE)
        if held:
            results.update(await self._hold(inspection, raw, envelope, held))
        held_ok = [r for r in held if results[r.address].ok]
        rejected = decision.with_action(Action.REJECT)
        told = False
        if rejected and not per_recipient and any(r.temporary for r in results.values()):
            # The whole message comes back; refusing now would bounce it twice.
            results.update(all_recipients([r.address for r in rejected], 451,
                                          "4.3.0 not attempted after a temporary failure; will retry"))
        elif rejected:
            refused, told = await self._refuse(inspection, raw, envelope, rejected, held_ok)
            results.update(refused)

        deliveries = self.delivery_groups(inspection)
        if not per_recipient and any(r.temporary for r in results.values()):
            for _, group, _ in deliveries:
                results.update(all_recipients(group, 451, "4.3.0 not attempted after a temporary failure; will retry"))
            return results
        # What a client sent of our own headers goes: the workers removed it before signing
        # (`outgoing`); the raw bytes, used when inspection gave up, have it removed here.
        body = outgoing if outgoing is not None else without_dlp_headers(raw)
        outcomes = await asyncio.gather(
            *(
                self.routes[action.route].deliver(
                    envelope.mail_from, group, self.outgoing(body, inspection, envelope, action, with_headers),
                    envelope.mail_options,
                )
                for action, group, with_headers in deliveries
                if action.route
            )
        )
        for outcome in outcomes:
            results.update(outcome)

        if not per_recipient:
            await self._bounce_next_hop_refusals(inspection, raw, envelope, results)
        if held_ok and not told and (per_recipient or not any(r.temporary for r in results.values())):
            # Over SMTP a temporary reply brings the whole message back, held again and notified then.
            await self._notify_held(inspection, raw, envelope, held_ok)
        return results

    async def _hold(
        self, inspection: Inspection, raw: bytes, envelope: Envelope, held: list[RecipientDecision]
    ) -> dict[str, RecipientResult]:
        addresses = [r.address for r in held]
        try:
            ref = await asyncio.wait_for(asyncio.to_thread(self.quarantine.hold, inspection, raw, envelope, held),
                                         timeout=self.config.storage.timeout)
        except Exception as e:
            log.error("quarantine unavailable for %s: %s", inspection.reference, e)
            return all_recipients(addresses, 451, "4.3.0 the quarantine is unavailable; will retry")
        return all_recipients(addresses, 250, f"2.6.0 held for review by the security team, reference {ref}")

    def _count(self, kind: str, ok: bool) -> None:
        if self.metrics is not None:
            self.metrics.bounces.labels(kind, "sent" if ok else "failed").inc()
            if not ok:
                self.metrics.errors.labels("bounce").inc()

    async def _notify_held(
        self, inspection: Inspection, raw: bytes, envelope: Envelope, held: list[RecipientDecision]
    ) -> None:
        """Tell the sender the message is held. The hold is already durable: a notice that cannot
        be sent is logged and changes nothing."""
        if not self.config.bounce.notify_held or not should_bounce(envelope.mail_from, raw):
            return
        try:
            notice = build_held_notice(self.config, inspection, envelope.mail_from, raw, held)
            outcome = await self.routes["relay"].deliver("", [envelope.mail_from], notice,
                                                         mail_options_for(envelope.mail_from))
            refused = [r.reply for r in outcome.values() if not r.ok]
            self._count("held_notice", not refused)
            if refused:
                log.warning("held notice for %s not accepted by the relay: %s", inspection.reference,
                            "; ".join(refused))
        except Exception as e:
            self._count("held_notice", False)
            log.warning("held notice for %s not sent: %s: %s", inspection.reference, type(e).__name__, e)

    async def _refuse(
        self, inspection: Inspection, raw: bytes, envelope: Envelope, rejected: list[RecipientDecision],
        held: list[RecipientDecision],
    ) -> tuple[dict[str, RecipientResult], bool]:
        """Results for the refused recipients, and whether the sender was told (a bounce that also
        tells of the `held` recipients)."""
        addresses = [r.address for r in rejected]
        rules = ", ".join(dict.fromkeys(
            name for r in rejected for name in deciding_rules(self.config.policy.rules, r.rclass, r.rules, r.action)))
        diagnostic = f"550 5.7.1 refused by the email security policy ({rules}), reference {inspection.reference}"
        if not should_bounce(envelope.mail_from, raw):
            # Nobody to tell: the refusal goes back to the upstream, which records it.
            return all_recipients(addresses, 550, diagnostic.removeprefix("550 ")), False
        refusals = [Refusal(r.address, "5.7.1", diagnostic, r) for r in rejected]
        sent = await self._send_bounce(inspection, raw, envelope, refusals, held)
        if not sent:
            return all_recipients(addresses, 451, "4.3.0 could not notify the sender of a refusal yet; will retry"), False
        return all_recipients(
            addresses, 250, f"2.7.1 not delivered: refused by policy ({rules}); sender notified, "
            f"reference {inspection.reference}"
        ), True

    async def _send_bounce(
        self, inspection: Inspection, raw: bytes, envelope: Envelope, refusals: list[Refusal],
        held: list[RecipientDecision] | None = None,
    ) -> bool:
        bounce = build_bounce(self.config, inspection, envelope.mail_from, raw, refusals, held or ())
        outcome = await self.routes["relay"].deliver("", [envelope.mail_from], bounce,
                                                     bounce_mail_options(envelope.mail_from, bounce))
        ok = all(r.ok for r in outcome.values())
        self._count("bounce", ok)
        if not ok:
            log.warning("bounce for %s not accepted by the relay: %s", inspection.reference,
                        "; ".join(r.reply for r in outcome.values()))
        return ok

    async def _bounce_next_hop_refusals(
        self, inspection: Inspection, raw: bytes, envelope: Envelope, results: dict[str, RecipientResult]
    ) -> None:
        refused = [r for r in results.values() if r.code >= 500]
        if not refused or not any(r.ok for r in results.values()):
            return  # all refused: one 5xx reply lets the upstream bounce
        if not should_bounce(envelope.mail_from, raw):
            for r in refused:
                results[r.address] = RecipientResult(r.address, 250, f"2.0.0 refused by the next hop ({r.reply}); "
                                                     "no bounce to a null or automatic sender")
            return
        refusals = [Refusal(r.address, enhanced_status(r.text, "5.0.0"), r.reply) for r in refused]
        if await self._send_bounce(inspection, raw, envelope, refusals):
            for r in refused:
                results[r.address] = RecipientResult(r.address, 250, "2.0.0 refused by the next hop; sender notified")
        else:
            for r in refused:
                results[r.address] = RecipientResult(r.address, 451, "4.3.0 could not notify the sender yet; will retry")
