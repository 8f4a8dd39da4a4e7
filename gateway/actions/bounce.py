"""Bounces: an RFC 3464 delivery status notification telling the sender what was refused and why.

The human part (text and HTML, from the bounce templates) names the rules, the kinds,
counts and locations of what was found, and what to do instead; when some recipients
of the same message are held, it says so too. It never contains the matched data,
the original body or the attachments: only the original headers travel back
(text/rfc822-headers).
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

from gateway.actions.notices import (
    alternative,
    base_notice,
    explain,
    grouped,
    original_headers,
    subject_of,
    templates_in,
)
from gateway.config import Config
from gateway.decision import Action, RecipientDecision
from gateway.pipeline import Inspection

__all__ = ["Refusal", "build_bounce", "original_headers", "should_bounce"]


@dataclass(frozen=True)
class Refusal:
    """One recipient the message could not go to, and why in SMTP terms."""

    address: str
    status: str                  # enhanced status code, e.g. "5.7.1"
    diagnostic: str              # the reply, e.g. "550 5.7.1 refused by data-loss policy"
    decision: RecipientDecision | None = None   # set when the policy refused it


def should_bounce(sender: str, raw: bytes) -> bool:
    """No bounce or notice to the null sender or about automatically submitted mail: no loops, no backscatter."""
    if not sender or sender == "<>":
        return False
    head = original_headers(raw)
    m = re.search(rb"^auto-submitted:[ \t]*([^\r\n;]+)", head, re.IGNORECASE | re.MULTILINE)
    return not (m and m.group(1).strip().lower() != b"no")


def build_bounce(
    config: Config, inspection: Inspection, sender: str, raw: bytes, refusals: list[Refusal],
    held: Sequence[RecipientDecision] = (),
) -> bytes:
    """The whole DSN as bytes, ready to hand to the relay route with the null sender.
    `held` are recipients of the same message now in quarantine: the human part tells of
    them too, so the sender gets one message about it, not two."""
    findings = inspection.findings
    blocked = [explain(config, r.address, r.decision.rclass, r.decision.rules, Action.REJECT, findings)
               for r in refusals if r.decision is not None]
    failed = [explain(config, r.address, None, (), Action.REJECT, findings, diagnostic=r.diagnostic)
              for r in refusals if r.decision is None]
    kept = [explain(config, r.address, r.rclass, r.rules, Action.QUARANTINE, findings) for r in held]
    notice = replace(
        base_notice(config, inspection.reference, subject_of(raw, findings), inspection.message_id,
                    time.time()),
        blocked=grouped(blocked), held=grouped(kept), failed=grouped(failed),
    )
    human = alternative(templates_in(config.bounce.templates).render("bounce", notice))

    reporting_mta = config.bounce.reporting_mta or config.hostname
    boundary = f"=_dlp_{inspection.reference}"
    status_blocks = [f"Reporting-MTA: dns; {reporting_mta}\r\nArrival-Date: {email.utils.formatdate()}\r\n"]
    for r in refusals:
        status_blocks.append(
            f"Final-Recipient: rfc822; {r.address}\r\nAction: failed\r\nStatus: {r.status}\r\n"
            f"Diagnostic-Code: smtp; {r.diagnostic}\r\n"
        )
    subject = ("Undelivered mail: stopped by the email security policy" if blocked
               else "Undelivered mail: returned to sender")
    headers = [
        f"From: Mail Delivery System <{config.bounce.postmaster}>",
        f"To: <{sender}>",
        f"Subject: {subject}",
        f"Date: {email.utils.formatdate(localtime=False)}",
        f"Message-ID: {email.utils.make_msgid(domain=reporting_mta)}",
        "Auto-Submitted: auto-replied",
        f"X-DLP-Reference: {inspection.reference}",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
    ]
    parts = [
        "\r\n".join(headers).encode("utf-8", "surrogateescape") + b"\r\n\r\n",
        b"This is a MIME-encapsulated delivery status notification.\r\n",
        f"\r\n--{boundary}\r\n".encode(),
        human.as_bytes(),
        f"\r\n--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n".encode(),
        "\r\n".join(status_blocks).encode("utf-8", "surrogateescape"),
        f"\r\n--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n".encode(),
        original_headers(raw).rstrip(b"\r\n") + b"\r\n",
        f"\r\n--{boundary}--\r\n".encode(),
    ]
    return b"".join(parts)


def bounce_mail_options(sender: str, bounce: bytes) -> tuple[str, ...]:
    """What the relay must be told to carry the bounce as it is."""
    options = []
    if not bounce.isascii():
        options.append("BODY=8BITMIME")   # 8-bit original headers in the text/rfc822-headers part
    if not sender.isascii():
        options.append("SMTPUTF8")
    return tuple(options)
