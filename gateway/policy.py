"""The policy: put each recipient in a class, apply the configured rules, pick the strictest action.

Pure: findings and configuration in, a Decision out. Rules are data
(config/default.yaml); this module only knows what each condition key means.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from detectors.base import Category, Finding, MarkingLevel, Signal, Strength
from gateway.config import Condition, OrganisationSettings, PolicySettings, Rule
from gateway.decision import Action, Decision, RecipientClass, RecipientDecision, strictest
from gateway.message import Message

_MARKING_ORDER = list(MarkingLevel)


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].strip().rstrip(".").lower()


class DomainList:
    """Domains as configured: exact names, and '*.x' / '.x' for x and every subdomain of x."""

    def __init__(self, entries: list[str]):
        self.exact: set[str] = set()
        self.suffixes: set[str] = set()
        for entry in entries:
            if entry.startswith("*."):
                self.suffixes.add(entry[2:])
            elif entry.startswith("."):
                self.suffixes.add(entry[1:])
            else:
                self.exact.add(entry)

    def __contains__(self, domain: str) -> bool:
        if domain in self.exact:
            return True
        labels = domain.split(".")
        return any(".".join(labels[i:]) in self.suffixes for i in range(len(labels)))


class Classifier:
    def __init__(self, org: OrganisationSettings):
        self._lists = [
            (RecipientClass.INTERNAL, DomainList(org.internal_domains)),
            (RecipientClass.TRUSTED, DomainList(org.trusted_domains)),
            (RecipientClass.PERSONAL, DomainList(org.personal_domains)),
        ]

    def classify(self, address: str) -> RecipientClass:
        domain = domain_of(address)
        for rclass, domains in self._lists:
            if domain in domains:
                return rclass
        return RecipientClass.EXTERNAL


@dataclass(frozen=True)
class MessageFacts:
    """What the findings establish about the message as a whole."""

    markings: frozenset[MarkingLevel]
    personal_data: bool
    records: int                      # distinct people/records carrying personal data
    bulk_personal_data: bool
    encrypted_content: bool
    auto_forwarded: bool
    exposed_recipients: bool
    incomplete_inspection: bool
    has_attachment: bool

    @property
    def sensitive(self) -> bool:
        high = any(_MARKING_ORDER.index(m) >= _MARKING_ORDER.index(MarkingLevel.OFFICIAL_SENSITIVE) for m in self.markings)
        return high or self.personal_data or self.bulk_personal_data

    @classmethod
    def of(cls, message: Message, findings: list[Finding], bulk_threshold: int) -> "MessageFacts":
        signals = {f.signal for f in findings if f.signal is not None and not f.recipients}
        personal = [f for f in findings if f.category is Category.PERSONAL_DATA]
        per_detector: dict[str, int] = {}
        for f in personal:
            per_detector[f.detector] = per_detector.get(f.detector, 0) + f.count
        records = max(per_detector.values(), default=0)
        return cls(
            markings=frozenset(f.level for f in findings if f.level is not None),
            personal_data=any(f.strength is not Strength.WEAK for f in personal) or records >= bulk_threshold,
            records=records,
            bulk_personal_data=records >= bulk_threshold,
            encrypted_content=Signal.ENCRYPTED in signals,
            auto_forwarded=Signal.AUTO_FORWARDED in signals,
            exposed_recipients=Signal.EXPOSED_RECIPIENTS in signals,
            incomplete_inspection=Signal.INCOMPLETE in signals,
            # Logos and pictures shown in an HTML body are not what a person calls an attachment.
            has_attachment=any(not a.inline_image for a in message.attachments),
        )


def _recipient_facts(address: str, findings: list[Finding]) -> dict[str, bool]:
    key = address.lower()

    def about(f: Finding) -> bool:
        return not f.recipients or key in (r.lower() for r in f.recipients)

    def signalled(signal: Signal) -> bool:
        return any(f.signal is signal and f.recipients and about(f) for f in findings)

    return {
        "personal_forwarding": any(f.category is Category.PERSONAL_FORWARDING and about(f) for f in findings),
        "lookalike_domain": signalled(Signal.LOOKALIKE),
        "greeting_mismatch": signalled(Signal.GREETING_MISMATCH),
        "autocomplete_mistake": signalled(Signal.AUTOCOMPLETE),
        "first_time_recipient": signalled(Signal.FIRST_TIME),
    }


def deciding_rules(rules: Sequence[Rule], rclass: RecipientClass | None, fired: Sequence[str],
                   action: Action) -> list[str]:
    """Of the rules that fired for a recipient, those that gave it `action` (the others fired with
    a milder one, such as first-time-recipient's deliver). All of them when none can be told apart:
    a rule renamed or removed since, or no class known."""
    by_name = {rule.name: rule for rule in rules}
    deciding = [name for name in fired
                if rclass is not None and name in by_name and by_name[name].actions.get(rclass) is action]
    return deciding or list(fired)


def holds(condition: Condition, facts: MessageFacts, recipient_facts: dict[str, bool]) -> bool:
    def fact(name: str) -> bool:
        if name in recipient_facts:
            return recipient_facts[name]
        return bool(getattr(facts, name))

    if condition.marking is not None and not facts.markings.intersection(condition.marking):
        return False
    if condition.any_of is not None and not any(fact(name) for name in condition.any_of):
        return False
    return all(fact(name) == wanted for name, wanted in condition.facts().items())


class Policy:
    def __init__(self, org: OrganisationSettings, settings: PolicySettings):
        self.classifier = Classifier(org)
        self.settings = settings

    def decide(self, message: Message, findings: list[Finding]) -> Decision:
        facts = MessageFacts.of(message, findings, self.settings.bulk_threshold)
        decisions = []
        for address in message.envelope.rcpt_tos:
            rclass = self.classifier.classify(address)
            rfacts = _recipient_facts(address, findings)
            fired: list[str] = []
            actions: list[Action] = []
            for rule in self.settings.rules:
                action = rule.actions.get(rclass)
                if action is not None and holds(rule.when, facts, rfacts):
                    fired.append(rule.name)
                    actions.append(action)
            decisions.append(
                RecipientDecision(
                    address=address,
                    rclass=rclass,
                    action=strictest(actions),
                    rules=tuple(fired),
                    release_route="secure" if Action.DELIVER_TLS in actions else "relay",
                )
            )
        disclaimer = any(
            d.action.route is not None and d.rclass is not RecipientClass.INTERNAL for d in decisions
        )
        return Decision(recipients=tuple(decisions), disclaimer=disclaimer)
