"""Outside addresses every recipient can see: rule 9 (`bcc_threshold` or more non-internal
addresses in To/Cc should have gone in Bcc).

Counts distinct addresses (case folded) in every To and Cc header, whatever their number;
group syntax (`undisclosed-recipients:;`, `Team: a@x, b@y;`) counts the members listed. A
header the address parser cannot make sense of is read again for anything shaped like an
address, so a malformed header never hides the addresses a person would see. Addresses in Bcc
and envelope-only recipients are nobody else's to see and do not count. The finding holds
the count, never the addresses. Never does I/O.
"""

from __future__ import annotations

import re
from email.utils import getaddresses

from detectors.base import Category, Finding, Signal
from gateway.message import Message
from gateway.policy import DomainList, domain_of

NAME = "exposed_recipients"
KIND = "outside addresses visible to every recipient"

_ADDR_SPEC = re.compile(r"^[^\s@<>()\[\],;:\"]+@[^\s@<>()\[\],;:\"]+\.[^\s@<>()\[\],;:\"]+$")
_ADDRESS_IN_TEXT = re.compile(r"[^\s@<>()\[\],;:\"']+@[^\s@<>()\[\],;:\"']+\.[^\s@<>()\[\],;:\"']+")


def visible_addresses(message: Message, names: tuple[str, ...] = ("To", "Cc")) -> set[str]:
    """Every distinct address (lower case) a recipient sees in the named headers."""
    found: set[str] = set()
    for value in (v for name in names for v in message.header(name)):
        try:
            parsed = getaddresses([value])
        except Exception:
            parsed = []
        good = {addr.strip().lower() for _, addr in parsed if _ADDR_SPEC.match(addr.strip())}
        ats_understood = sum(addr.count("@") + dn.count("@") for dn, addr in parsed if _ADDR_SPEC.match(addr.strip()))
        if ats_understood < value.count("@"):
            # The parser lost or mangled something ("a@x b@y", an unclosed quote): read it as text.
            good.update(m.group().strip(".").lower() for m in _ADDRESS_IN_TEXT.finditer(value))
        found.update(good)
    return found


class ExposedRecipientsDetector:
    """`bcc_threshold` or more non-internal addresses visible in To/Cc: one message-level finding."""

    name = NAME

    def __init__(self, internal_domains: list[str], bcc_threshold: int):
        self.internal = DomainList([d.strip().lower() for d in internal_domains])
        self.threshold = bcc_threshold

    def detect(self, message: Message) -> list[Finding]:
        outside = [a for a in visible_addresses(message) if domain_of(a) not in self.internal]
        if len(outside) < self.threshold:
            return []
        return [Finding(detector=NAME, category=Category.MISADDRESSED, kind=KIND, location="header:To/Cc",
                        count=len(outside), signal=Signal.EXPOSED_RECIPIENTS)]
