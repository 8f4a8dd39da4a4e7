"""What the policy decides: a class and an action for each recipient.

Values only; `gateway.policy` computes them and `gateway.actions` carries them out.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class RecipientClass(str, enum.Enum):
    INTERNAL = "internal"
    TRUSTED = "trusted"
    EXTERNAL = "external"
    PERSONAL = "personal"


class Action(str, enum.Enum):
    DELIVER = "deliver"
    DELIVER_TLS = "deliver_tls"
    QUARANTINE = "quarantine"
    REJECT = "reject"

    @property
    def strictness(self) -> int:
        return _STRICTNESS[self]

    @property
    def route(self) -> str | None:
        """The route a recipient with this action is delivered through, if any."""
        return {Action.DELIVER: "relay", Action.DELIVER_TLS: "secure"}.get(self)


_STRICTNESS = {Action.DELIVER: 0, Action.DELIVER_TLS: 1, Action.QUARANTINE: 2, Action.REJECT: 3}


def strictest(actions: "list[Action] | tuple[Action, ...]") -> Action:
    return max(actions, key=lambda a: a.strictness, default=Action.DELIVER)


@dataclass(frozen=True)
class RecipientDecision:
    address: str
    rclass: RecipientClass
    action: Action
    rules: tuple[str, ...]          # every rule that fired for this recipient, in policy order
    release_route: str              # route used if a held recipient is released: "relay" or "secure"

    def to_json(self) -> dict[str, object]:
        return {
            "address": self.address,
            "class": self.rclass.value,
            "action": self.action.value,
            "rules": list(self.rules),
        }


@dataclass(frozen=True)
class Decision:
    recipients: tuple[RecipientDecision, ...]
    disclaimer: bool                # a delivered copy goes to at least one non-internal recipient

    @property
    def verdict(self) -> Action:
        return strictest([r.action for r in self.recipients])

    @property
    def rules(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for r in self.recipients:
            for name in r.rules:
                seen.setdefault(name)
        return tuple(seen)

    def with_action(self, action: Action) -> list[RecipientDecision]:
        return [r for r in self.recipients if r.action is action]
