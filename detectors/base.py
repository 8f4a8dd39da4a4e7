"""The detector interface: a pure function from one message model to findings.

A detector never does I/O, never decides what happens to the message and never
puts the matched text into a finding: findings carry kind, count and location.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from gateway.message import Message


class Category(str, enum.Enum):
    PERSONAL_DATA = "personal_data"
    PROTECTIVE_MARKING = "protective_marking"
    ATTACHMENT = "attachment"
    MISADDRESSED = "misaddressed"
    PERSONAL_FORWARDING = "personal_forwarding"


class Strength(str, enum.Enum):
    STRONG = "strong"   # a validated identifier: personal data on its own
    WEAK = "weak"       # names, phones, postcodes: personal data only in bulk


class MarkingLevel(str, enum.Enum):
    """UK Government Security Classifications, lowest first."""

    OFFICIAL = "OFFICIAL"
    OFFICIAL_SENSITIVE = "OFFICIAL-SENSITIVE"
    SECRET = "SECRET"
    TOP_SECRET = "TOP SECRET"


class Signal(str, enum.Enum):
    """Machine-readable facts a finding establishes, which rule conditions test."""

    MARKING = "marking"                    # with `level`
    ENCRYPTED = "encrypted"                # encrypted attachment or whole message
    INCOMPLETE = "incomplete"              # content that could not be fully inspected
    AUTO_FORWARDED = "auto_forwarded"
    NAME_LIKENESS = "name_likeness"        # personal-domain recipient resembles the sender
    LOOKALIKE = "lookalike"                # recipient domain resembles a listed one
    EXPOSED_RECIPIENTS = "exposed_recipients"
    GREETING_MISMATCH = "greeting_mismatch"    # the greeting names someone other than this recipient
    AUTOCOMPLETE = "autocomplete"              # a new address close to one the sender writes to often
    FIRST_TIME = "first_time"                  # the sender has never had mail delivered to this address


@dataclass(frozen=True)
class Finding:
    """Something a detector found. Never holds the matched value itself."""

    detector: str                          # e.g. "uk_nino"
    category: Category
    kind: str                              # what was found, in words: "National Insurance number"
    location: str                          # "subject", "body", "header:X", "attachment:NAME"
    count: int = 1                         # distinct values found at this location
    confidence: float = 1.0
    strength: Strength | None = None       # for personal data
    signal: Signal | None = None
    level: MarkingLevel | None = None      # for protective markings
    recipients: tuple[str, ...] = ()       # recipients this finding is about; () = the whole message
    detail: str = ""                       # non-sensitive explanation, e.g. "resembles nhs.net"

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "detector": self.detector,
            "category": self.category.value,
            "kind": self.kind,
            "location": self.location,
            "count": self.count,
        }
        if self.level is not None:
            out["level"] = self.level.value
        if self.signal is not None:
            out["signal"] = self.signal.value
        if self.recipients:
            out["recipients"] = list(self.recipients)
        if self.detail:
            out["detail"] = self.detail
        return out


def personal_data_findings(
    detector: str,
    kind: str,
    distinct: Mapping[str, Collection[object]],
    strength: Strength,
    confidence: float = 1.0,
    detail: str = "",
) -> list[Finding]:
    """One finding per location, counting the distinct values found there (never holding them)."""
    return [
        Finding(detector=detector, category=Category.PERSONAL_DATA, kind=kind, location=location,
                count=len(values), confidence=confidence, strength=strength, detail=detail)
        for location, values in distinct.items()
    ]


class Detector(Protocol):
    """What every detector provides. Construct once; `detect` is called per message."""

    name: str

    def detect(self, message: "Message") -> list[Finding]: ...
