"""Recipients judged against the sender's history: autocomplete mistakes and first-time addresses.

An autocomplete mistake is an address the sender has never written to that is very
like one they write to often: the same display name at another address, a local part
one or two keystrokes away at the same domain, or the same distinctive local part at
another domain. A first-time recipient is simply a new outside address for a sender
the gateway already knows. Pure: the history arrives in the message model.
"""

from __future__ import annotations

import regex

from detectors.base import Category, Finding, Signal
from detectors.recipients.domains import osa_distance
from detectors.recipients.forwarding import ROLE_WORDS, fold
from gateway.message import Correspondent, Message
from gateway.policy import DomainList, domain_of

AUTOCOMPLETE = "autocomplete_mistake"
FIRST_TIME = "first_time_recipient"

_NAME_TOKEN = regex.compile(r"\p{L}+")


def name_tokens(display_name: str) -> frozenset[str]:
    """'Smith, John' and 'john SMITH' alike: case and accents folded, order ignored."""
    return frozenset(t for t in _NAME_TOKEN.findall(fold(display_name)) if len(t) > 1)


def _close_local_parts(a: str, b: str) -> bool:
    shorter = min(len(a), len(b))
    if shorter < 4:
        return False
    return osa_distance(a, b, 2) <= (2 if shorter >= 8 else 1)


class RecipientHistoryDetector:
    name = AUTOCOMPLETE

    def __init__(self, internal_domains: list[str], frequent_min: int = 3):
        self.internal = DomainList(internal_domains)
        self.frequent_min = frequent_min

    def detect(self, message: Message) -> list[Finding]:
        history = message.history
        if not history.correspondents:
            return []   # a sender the gateway has no history for: nothing to compare with
        shown = {addr.lower(): name for name, addr in message.addresses("To", "Cc")}
        frequent = [c for c in history.correspondents if c.count >= self.frequent_min]
        findings: list[Finding] = []
        for address in dict.fromkeys(a.lower() for a in message.envelope.rcpt_tos):
            if history.get(address) is not None or domain_of(address) in self.internal:
                continue
            usual = self._usual_address_like(address, shown.get(address, ""), frequent)
            if usual is not None:
                findings.append(Finding(
                    detector=AUTOCOMPLETE, category=Category.MISADDRESSED,
                    kind="new address very like one the sender writes to often", location="envelope",
                    signal=Signal.AUTOCOMPLETE, recipients=(address,), detail=usual.address,
                ))
            findings.append(Finding(
                detector=FIRST_TIME, category=Category.MISADDRESSED,
                kind="outside address the sender has not written to before", location="envelope",
                signal=Signal.FIRST_TIME, recipients=(address,),
            ))
        return findings

    @staticmethod
    def _usual_address_like(address: str, display_name: str, frequent: list[Correspondent]) -> Correspondent | None:
        local, _, domain = address.rpartition("@")
        tokens = name_tokens(display_name)
        for usual in frequent:
            usual_local, _, usual_domain = usual.address.rpartition("@")
            if len(tokens) >= 2 and tokens == name_tokens(usual.display_name):
                return usual        # the same person's name, another address
            if domain == usual_domain and _close_local_parts(local, usual_local):
                return usual        # j.smyth@ for j.smith@
            if (local == usual_local and domain != usual_domain and len(local) >= 5
                    and local not in ROLE_WORDS):
                return usual        # jane.doe@nhs.com for jane.doe@nhs.net
        return None
