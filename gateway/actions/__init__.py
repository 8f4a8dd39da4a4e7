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

from gateway.actions.bounce import Refusal, build_bounce, should_bounce
from gateway.actions.delivery import RecipientResult, Route, all_recipients, build_route
from gateway.actions.quarantine import Quarantine
from gateway.config import Config
from gateway.decision import Action, RecipientDecision
from gateway.message import Envelope
from gateway.pipeline import Inspection

log = logging.getLogger(__name__)


def enhanced_status(text: str, default: str) -> str:
    m = re.match(r"[245]\.\d{1,3}\.\d{1,3}\b", text)
    return m.group(0) if m else default


def build_routes(config: Config) -> dict[str, Route]:
    helo = config.delivery.helo_name or config.hostname
    return {
        name: build_route(name, config.routes.spec(name), config.delivery.timeout, helo,
                          config.delivery.connection_reuse_time)
        for name in ("relay", "secure")
    }


class Dispatcher:
    def __init__(self, config: Config, routes: dict[str, Route], quarantine: Quarantine):
        self.config = config
        self.routes = routes
        self.quarantine = quarantine

    def outgoing(self, raw: bytes, inspection: Inspection, envelope: Envelope, action: Action) -> bytes:
        """The bytes handed to the next hop: a trace header and the gateway's verdict in front."""
        received = (
            f"Received: from {envelope.helo or 'unknown'} ([{envelope.client_address}])\r\n"
            f"\tby {self.config.hostname} (dlp-gateway) with {envelope.protocol} id {inspection.reference};\r\n"
            f"\t{email.utils.formatdate()}\r\n"
        )
        verdict = f"X-DLP-Gateway: reference={inspection.reference}; action={action.value}\r\n"
        return (received + verdict).encode("ascii", "replace") + raw

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
        rejected = decision.with_action(Action.REJECT)
        if rejected:
            results.update(await self._refuse(inspection, raw, envelope, rejected))

        deliveries = [
            (action, [r.address for r in decision.with_action(action)])
            for action in (Action.DELIVER, Action.DELIVER_TLS)
        ]
        if not per_recipient and any(r.temporary for r in results.values()):
            for _, group in deliveries:
                results.update(all_recipients(group, 451, "4.3.0 not attempted after a temporary failure; will retry"))
            return results
        outcomes = await asyncio.gather(
            *(
                self.routes[action.route].deliver(
                    envelope.mail_from, group, self.outgoing(outgoing if outgoing is not None else raw, inspection,
                                                             envelope, action),
                    envelope.mail_options,
                )
                for action, group in deliveries
                if group and action.route
            )
        )
        for outcome in outcomes:
            results.update(outcome)

        if not per_recipient:
            await self._bounce_next_hop_refusals(inspection, raw, envelope, results)
        return results

    async def _hold(
        self, inspection: Inspection, raw: bytes, envelope: Envelope, held: list[RecipientDecision]
    ) -> dict[str, RecipientResult]:
        addresses = [r.address for r in held]
        try:
            ref = await asyncio.to_thread(self.quarantine.hold, inspection, raw, envelope, held)
        except Exception as e:
            log.error("quarantine unavailable for %s: %s", inspection.reference, e)
            return all_recipients(addresses, 451, "4.3.0 the quarantine is unavailable; will retry")
        return all_recipients(addresses, 250, f"2.6.0 held for review by the security team, reference {ref}")

    async def _refuse(
        self, inspection: Inspection, raw: bytes, envelope: Envelope, rejected: list[RecipientDecision]
    ) -> dict[str, RecipientResult]:
        addresses = [r.address for r in rejected]
        rules = ", ".join(dict.fromkeys(name for r in rejected for name in r.rules))
        diagnostic = f"550 5.7.1 refused by the email security policy ({rules}), reference {inspection.reference}"
        if not should_bounce(envelope.mail_from, raw):
            # Nobody to tell: the refusal goes back to the upstream, which records it.
            return all_recipients(addresses, 550, diagnostic.removeprefix("550 "))
        refusals = [Refusal(r.address, "5.7.1", diagnostic, r) for r in rejected]
        sent = await self._send_bounce(inspection, raw, envelope, refusals)
        if not sent:
            return all_recipients(addresses, 451, "4.3.0 could not notify the sender of a refusal yet; will retry")
        return all_recipients(
            addresses, 250, f"2.7.1 not delivered: refused by policy ({rules}); sender notified, "
            f"reference {inspection.reference}"
        )

    async def _send_bounce(
        self, inspection: Inspection, raw: bytes, envelope: Envelope, refusals: list[Refusal]
    ) -> bool:
        bounce = build_bounce(self.config, inspection, envelope.mail_from, raw, refusals)
        outcome = await self.routes["relay"].deliver("", [envelope.mail_from], bounce, ())
        ok = all(r.ok for r in outcome.values())
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
