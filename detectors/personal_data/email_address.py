"""Email addresses written in the text of a message (not its headers).

An address is a local part of the characters people use in practice (letters, digits
and . _ % + - '), an @, and a domain of dot-separated labels ending in an alphabetic
top-level domain. The count is of distinct addresses, compared in lower case. The
addressing headers are the envelope's business, not this detector's: only text
segments (subject, body, attachments) are read. A weak signal: personal data only
in bulk. Never puts an address into a finding.
"""

from __future__ import annotations

import regex

from detectors.base import Finding, Strength, personal_data_findings
from gateway.message import Message

NAME = "email_address"
KIND = "email address"

# The local part is read by a lookbehind so that every match starts at the "@" (fast to find).
_PATTERN = regex.compile(
    r"(?<=(?<![\p{L}\p{N}._%+\-])"
    r"(?P<local>[\p{L}\p{N}_%+\-][\p{L}\p{N}_%+'\-]*(?:\.[\p{L}\p{N}_%+'\-]+)*))"
    r"@"
    r"(?P<domain>(?:[\p{L}\p{N}](?:[\p{L}\p{N}\-]{0,61}[\p{L}\p{N}])?\.)+\p{L}{2,24})"
    r"(?![\p{L}\p{N}\-]|\.[\p{L}\p{N}])"
)


def email_addresses(text: str) -> set[str]:
    """The distinct addresses written in `text`, lower-cased."""
    return {f"{m.group('local')}@{m.group('domain')}".lower() for m in _PATTERN.finditer(text)}


class EmailAddressDetector:
    name = NAME

    def detect(self, message: Message) -> list[Finding]:
        distinct: dict[str, set[str]] = {}
        for segment in message.segments:
            if "@" not in segment.text:
                continue
            addresses = email_addresses(segment.text)
            if addresses:
                distinct.setdefault(segment.location, set()).update(addresses)
        return personal_data_findings(NAME, KIND, distinct, Strength.WEAK, confidence=0.9)
