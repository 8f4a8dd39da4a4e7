"""Bounces: an RFC 3464 delivery status notification telling the sender what was refused and why.

The human part names the rules, the kinds, counts and locations of what was found,
and what to do instead. It never contains the matched data, the original body or
the attachments: only the original headers travel back (text/rfc822-headers).
"""

from __future__ import annotations

import email.utils
import re
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from email.charset import QP, Charset
from email.mime.text import MIMEText

from detectors.base import Finding
from gateway.config import Config, Rule
from gateway.decision import Action, RecipientClass, RecipientDecision
from gateway.pipeline import Inspection

CLASS_WORDS = {
    RecipientClass.INTERNAL: "internal address",
    RecipientClass.TRUSTED: "secure partner address",
    RecipientClass.EXTERNAL: "external address",
    RecipientClass.PERSONAL: "personal email account",
}


@dataclass(frozen=True)
class Refusal:
    """One recipient the message could not go to, and why in SMTP terms."""

    address: str
    status: str                  # enhanced status code, e.g. "5.7.1"
    diagnostic: str              # the reply, e.g. "550 5.7.1 refused by data-loss policy"
    decision: RecipientDecision | None = None   # set when the policy refused it


def should_bounce(sender: str, raw: bytes) -> bool:
    """No bounce to the null sender or to automatically submitted mail: no loops, no backscatter."""
    if not sender or sender == "<>":
        return False
    head = original_headers(raw)
    m = re.search(rb"^auto-submitted:[ \t]*([^\r\n;]+)", head, re.IGNORECASE | re.MULTILINE)
    return not (m and m.group(1).strip().lower() != b"no")


def original_headers(raw: bytes) -> bytes:
    m = re.search(rb"\r?\n\r?\n", raw)
    return raw[: m.start()] if m else raw


def location_words(location: str) -> str:
    if location == "subject":
        return "the subject line"
    if location == "body":
        return "the message text"
    if location.startswith("attachment:"):
        return f"attachment '{location.split(':', 1)[1]}'"
    if location.startswith("header:"):
        return f"the {location.split(':', 1)[1]} header"
    return location


def plural(kind: str, count: int) -> str:
    """'3 email addresses', '2 NHS numbers', '1 IBAN'; kinds already plural stay as they are."""
    if count == 1:
        return kind
    if kind.endswith("a named person"):   # "health information about a named person"
        return kind.removesuffix("a named person") + "named people"
    if kind.endswith("person"):
        return kind.removesuffix("person") + "people"
    if kind.endswith(("ss", "sh", "ch", "x")):
        return kind + "es"
    return kind if kind.endswith("s") else kind + "s"


def describe_findings(findings: Iterable[Finding]) -> list[str]:
    return [f"{location_words(f.location)}: {f.count} {plural(f.kind, f.count)}" for f in findings]


def _rules_behind(decision: RecipientDecision, rules: list[Rule], action: Action) -> list[Rule]:
    return [r for r in rules if r.name in decision.rules and r.actions.get(decision.rclass) is action]


def human_text(config: Config, inspection: Inspection, refusals: list[Refusal]) -> str:
    org = config.organisation.name
    out = [
        f"Your message was not delivered to {'this recipient' if len(refusals) == 1 else 'these recipients'}.",
        "",
    ]
    policy_refusals = [r for r in refusals if r.decision is not None]
    if policy_refusals:
        out += [
            f"The email gateway of {org} checks outgoing mail for personal and sensitive",
            "information. It stopped this message because of what it found:",
            "",
        ]
        found = describe_findings(inspection.findings)
        for line in found:
            out.append(f"  - {line}")
        if found:
            out.append("")
        out.append("(The gateway reports what kind of information it found and where, never the information itself.)")
        out.append("")
    for refusal in refusals:
        decision = refusal.decision
        if decision is None:
            out += [f"{refusal.address}", f"    {refusal.diagnostic}", ""]
            continue
        out.append(f"{refusal.address} ({CLASS_WORDS[decision.rclass]})")
        for rule in _rules_behind(decision, config.policy.rules, Action.REJECT):
            out.append(f"    Rule: {rule.title}")
            out += textwrap.wrap(f"What to do instead: {rule.guidance}", width=72,
                                 initial_indent="    ", subsequent_indent="    ")
        out.append("")
    out += [
        f"Reference: {inspection.reference}",
        "Quote this reference if you contact the service desk about this message.",
        f"Contact: {config.bounce.postmaster}",
    ]
    return "\n".join(out) + "\n"


def build_bounce(config: Config, inspection: Inspection, sender: str, raw: bytes, refusals: list[Refusal]) -> bytes:
    """The whole DSN as bytes, ready to hand to the relay route with the null sender."""
    reporting_mta = config.bounce.reporting_mta or config.hostname
    boundary = f"=_dlp_{inspection.reference}"
    charset = Charset("utf-8")
    charset.body_encoding = QP  # readable in any mail client's "view source", unlike base64
    human = MIMEText(human_text(config, inspection, refusals), "plain", charset)
    status_blocks = [f"Reporting-MTA: dns; {reporting_mta}\r\nArrival-Date: {email.utils.formatdate()}\r\n"]
    for r in refusals:
        status_blocks.append(
            f"Final-Recipient: rfc822; {r.address}\r\nAction: failed\r\nStatus: {r.status}\r\n"
            f"Diagnostic-Code: smtp; {r.diagnostic}\r\n"
        )
    headers = [
        f"From: Mail Delivery System <{config.bounce.postmaster}>",
        f"To: <{sender}>",
        "Subject: Undelivered mail: stopped by the email security policy",
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
        human.as_bytes().replace(b"\n", b"\r\n").replace(b"\r\r\n", b"\r\n"),
        f"\r\n--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n".encode(),
        "\r\n".join(status_blocks).encode("utf-8", "surrogateescape"),
        f"\r\n--{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n".encode(),
        original_headers(raw).rstrip(b"\r\n") + b"\r\n",
        f"\r\n--{boundary}--\r\n".encode(),
    ]
    return b"".join(parts)
