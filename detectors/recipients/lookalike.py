"""Recipient domains that look like one of ours, a trusted partner's, or one the sender writes to
often, without being it: rule 8 of POLICY.md (category `misaddressed`, `Signal.LOOKALIKE`).

Judged per envelope recipient, on its domain only. A domain is a lookalike of a reference when
it looks the same (homoglyphs, by UTS #39 skeleton: nhs.nеt, carnden.gov.uk, xn--... labels),
spells it with dots and hyphens moved (nhs-net.com, nhsnet.com, camden-gov.uk,
camden.gov.uk.com, nhs.net.example.com), has a short label slipped into its suffix
(camden.gov.co.uk), keeps the name under a suffix anyone can register or a mistyped one
(nhs.com, gov.co.uk, camden.uk, nhs.ne), or has a name a keystroke or two away under the same
suffix (camdem.gov.uk; in names under five letters only a swap of neighbours: bt.com and
ft.com are both real). See `domains` for how.

The references are the internal and trusted domains (a wildcard `*.police.uk` by its base,
`police.uk`) and the domains the sender has had `frequent_min` or more messages delivered to.
Never a lookalike: a domain listed as internal, trusted or personal (so listed domains never
flag each other), a subdomain of a listed domain (mail.nhs.net is NHSmail's own), and, against
the sender's history, a domain the sender itself writes to often.

A finding names the domain the sender probably meant (`detail`), never anything from the
message. Everything about the configured domains is worked out once, in the constructor;
verdicts are cached per recipient domain. Pure: no I/O.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterable
from dataclasses import dataclass

from detectors.base import Category, Finding, Signal
from detectors.recipients.domains import (
    DomainForm, How, Reference, domain_key, dns_name, resemblance, skeleton,
)
from gateway.message import Message, SenderHistory
from gateway.policy import DomainList

NAME = "lookalike_domain"

# Suffixes a lookalike registered under another suffix is believed in: open to anyone, and where
# typists and impostors go. Restricted and national registries (ac.uk, nhs.uk, gov.scot, .scot)
# are left out on purpose: the same name there is another real organisation (nhs.scot).
SWAP_SUFFIXES = (
    "com", "net", "org", "co", "info", "biz", "io", "me", "eu", "email", "online", "site", "xyz", "top",
    "uk", "co.uk", "org.uk", "me.uk", "ltd.uk", "plc.uk", "net.uk",
)


class Source(enum.Enum):
    """Where the resembled domain comes from, in the order a finding prefers them."""

    INTERNAL = "internal"
    TRUSTED = "trusted"
    FREQUENT = "frequent"


KINDS = {
    Source.INTERNAL: "recipient domain that looks like one of our own domains",
    Source.TRUSTED: "recipient domain that looks like a trusted domain",
    Source.FREQUENT: "recipient domain that looks like one the sender writes to often",
}
_ORDER = {source: i for i, source in enumerate(Source)}


@dataclass(frozen=True)
class Lookalike:
    """Why one recipient domain is a lookalike: the domain it resembles, from where, and how."""

    resembles: str
    source: Source
    how: How
    slips: int = 0

    @property
    def rank(self) -> tuple[int, int, int]:
        return (self.how, self.slips, _ORDER[self.source])


def _entries(domains: Iterable[str]) -> list[str]:
    return [e for e in (str(d).strip().rstrip(".").lower() for d in domains) if e.lstrip("*.")]


def _base(entry: str) -> tuple[str, bool]:
    """A configured entry as (domain, wildcard): '*.x' and '.x' are x and every subdomain of it."""
    if entry.startswith("*."):
        return entry[2:], True
    if entry.startswith("."):
        return entry[1:], True
    return entry, False


class LookalikeDetector:
    name = NAME

    def __init__(self, internal_domains: list[str], trusted_domains: list[str], personal_domains: list[str],
                 frequent_min: int = 3, swap_suffixes: Iterable[str] = SWAP_SUFFIXES, max_frequent: int = 200,
                 cache_size: int = 4096):
        self.frequent_min = frequent_min
        self.max_frequent = max_frequent        # most-used history domains compared; history is bounded anyway
        lists = {Source.INTERNAL: _entries(internal_domains), Source.TRUSTED: _entries(trusted_domains)}
        personal = _entries(personal_domains)
        everything = [*lists[Source.INTERNAL], *lists[Source.TRUSTED], *personal]

        # Listed, as the classifier sees it (the address's domain, lower-cased) and by DNS name, so an
        # xn-- spelling of a listed Unicode domain (or the reverse) is that domain, not a lookalike of it.
        self._listed = DomainList(everything)
        self._listed_dns = DomainList([("*." if wild else "") + dns_name(base)
                                       for base, wild in map(_base, everything)])
        # A listed exact domain owns its subdomains (mail.nhs.net); a listed internal or trusted
        # domain is already a reference, so the sender's history need not repeat it.
        self._owned = {dns_name(base) for base, wild in map(_base, everything) if not wild}
        self._known_suffixes = frozenset(
            form.labels for base, wild in map(_base, everything) if wild
            for form in [DomainForm.of(base)] if form is not None and len(form.labels) > 1
        )
        self._swap = frozenset(".".join(map(skeleton, s.strip(".").lower().split("."))) for s in swap_suffixes)

        seen: set[tuple[str, bool]] = set()
        self._references: list[tuple[Source, Reference]] = []
        for source, entries in lists.items():
            for entry in entries:
                base, wild = _base(entry)
                form = DomainForm.of(base, self._known_suffixes)
                if form is None or (form.dns, wild) in seen:
                    continue
                seen.add((form.dns, wild))
                self._references.append((source, Reference(base, form, wild)))
        self._referenced = DomainList([("*." if r.wildcard else "") + r.form.dns for _, r in self._references])

        # Bounded caches: recipient domains repeat from message to message, and a sender's history
        # from one message to the next. They hold verdicts and references, never a message.
        self._form = functools.lru_cache(maxsize=cache_size)(self._form_uncached)
        self._judge = functools.lru_cache(maxsize=cache_size)(self._judge_uncached)
        self._history_references = functools.lru_cache(maxsize=256)(self._history_references_uncached)
        self._history_match = functools.lru_cache(maxsize=cache_size)(self._history_match_uncached)

    # --- per message ------------------------------------------------------------------------

    def detect(self, message: Message) -> list[Finding]:
        findings: list[Finding] = []
        seen: set[str] = set()
        frequent: tuple[str, ...] | None = None
        for address in message.envelope.rcpt_tos:
            key = domain_key(address)
            if not key or address.lower() in seen:
                continue
            seen.add(address.lower())
            comparable, found = self._judge(key)
            if not comparable:
                continue
            if message.history.correspondents:
                if frequent is None:
                    frequent = self._frequent_domains(message.history)
                from_history = self._history_match(key, frequent)
                if from_history is not None and (found is None or from_history.rank < found.rank):
                    found = from_history
            if found is not None:
                findings.append(Finding(
                    detector=NAME,
                    category=Category.MISADDRESSED,
                    kind=KINDS[found.source],
                    location="envelope",
                    signal=Signal.LOOKALIKE,
                    recipients=(address,),
                    detail=found.resembles,
                ))
        return findings

    # --- against the configuration (cached per recipient domain) ------------------------------

    def _judge_uncached(self, key: str) -> tuple[bool, Lookalike | None]:
        """(whether the domain is compared at all, the configured domain it resembles most)."""
        form = self._form(key)
        if form is None or key in self._listed or form.dns in self._listed_dns or self._is_owned(form.dns):
            return False, None
        return True, self._best(form, self._references)

    def _best(self, form: DomainForm, references: Iterable[tuple[Source, Reference]]) -> Lookalike | None:
        spellings = form.spellings()
        best: Lookalike | None = None
        for source, reference in references:
            how = resemblance(form, reference, self._swap, spellings)
            if how is not None:
                candidate = Lookalike(how.resembles, source, how.how, how.slips)
                if best is None or candidate.rank < best.rank:
                    best = candidate
                    if best.how is How.HOMOGLYPH:
                        break
        return best

    def _form_uncached(self, key: str) -> DomainForm | None:
        return DomainForm.of(key, self._known_suffixes)

    def _is_owned(self, dns: str) -> bool:
        labels = dns.split(".")
        return any(".".join(labels[i:]) in self._owned for i in range(1, len(labels)))

    # --- against the sender's history (a few domains per sender) ---------------------------------

    def _frequent_domains(self, history: SenderHistory) -> tuple[str, ...]:
        counts: dict[str, int] = {}
        for c in history.correspondents:
            key = domain_key(c.address)
            if key:
                counts[key] = counts.get(key, 0) + max(int(c.count), 0)
        often = sorted((k for k, n in counts.items() if n >= self.frequent_min), key=lambda k: (-counts[k], k))
        return tuple(often[: self.max_frequent])

    def _history_references_uncached(self, frequent: tuple[str, ...]) -> tuple[frozenset[str], tuple[Reference, ...]]:
        """(the DNS names the sender writes to often, those not already internal or trusted as references)."""
        forms = [(domain, self._form(domain)) for domain in frequent]
        names = frozenset(dns_name(domain) for domain in frequent)
        return names, tuple(Reference(domain, form) for domain, form in forms
                            if form is not None and form.dns not in self._referenced)

    def _history_match_uncached(self, key: str, frequent: tuple[str, ...]) -> Lookalike | None:
        if not frequent:
            return None
        names, references = self._history_references(frequent)
        labels = dns_name(key).split(".")
        if any(".".join(labels[i:]) in names for i in range(len(labels))):
            return None  # the sender writes to this domain often: not a slip for another one
        form = self._form(key)
        if form is None or not references:
            return None
        return self._best(form, ((Source.FREQUENT, r) for r in references))
