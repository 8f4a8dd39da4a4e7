"""UK Government protective markings where senders put them: the subject line,
and the first and last lines of a body part.

OFFICIAL-SENSITIVE is recognised in any case with hyphen, en dash, space or colon
between the words. SECRET and TOP SECRET are ordinary English words, so they count
only written in capitals or in the marking position (opening the subject, or in
brackets), never in prose such as "the secret to a good referral". Plain OFFICIAL
is the baseline for public-sector mail and is not reported.
"""

from __future__ import annotations

import regex

from detectors.base import Category, Finding, MarkingLevel, Signal
from gateway.message import BODY, SUBJECT, Message

NAME = "protective_marking"

_SEP = r"[\s\-\u2010-\u2015:_]*"
_OFFICIAL_SENSITIVE = regex.compile(rf"(?<![\p{{L}}])OFFICIAL{_SEP}SENSITIVE(?![\p{{L}}])", regex.IGNORECASE)
_SECRET_CAPS = regex.compile(r"(?<![\p{L}\-])(TOP[\s\-]+SECRET|SECRET)(?![\p{L}])")
_SECRET_MARKING_POSITION = regex.compile(
    r"(?:^\s*[\[\(]?\s*|[\[\(]\s*)(top[\s\-]+secret|secret)\s*(?:[\]\):\-\u2013]|$)",
    regex.IGNORECASE | regex.MULTILINE,
)
# How many lines at each end of a body part count as the marking position.
_EDGE_LINES = 3


def marking_level(text: str) -> MarkingLevel | None:
    """The highest marking written in `text` as a marking, if any."""
    found: list[MarkingLevel] = []
    for m in _SECRET_CAPS.finditer(text):
        found.append(MarkingLevel.TOP_SECRET if m.group(1).upper().startswith("TOP") else MarkingLevel.SECRET)
    for m in _SECRET_MARKING_POSITION.finditer(text):
        found.append(MarkingLevel.TOP_SECRET if m.group(1).lower().startswith("top") else MarkingLevel.SECRET)
    if _OFFICIAL_SENSITIVE.search(text):
        found.append(MarkingLevel.OFFICIAL_SENSITIVE)
    order = list(MarkingLevel)
    return max(found, key=order.index, default=None)


def _edges(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) <= 2 * _EDGE_LINES:
        return "\n".join(lines)
    return "\n".join(lines[:_EDGE_LINES] + lines[-_EDGE_LINES:])


class ProtectiveMarkingDetector:
    name = NAME

    def detect(self, message: Message) -> list[Finding]:
        findings: list[Finding] = []
        for location, text in self._marking_positions(message):
            level = marking_level(text)
            if level is not None:
                findings.append(
                    Finding(
                        detector=NAME,
                        category=Category.PROTECTIVE_MARKING,
                        kind=f"{level.value} protective marking",
                        location=location,
                        signal=Signal.MARKING,
                        level=level,
                    )
                )
        return findings

    @staticmethod
    def _marking_positions(message: Message) -> list[tuple[str, str]]:
        positions: list[tuple[str, str]] = []
        body_edges: list[str] = []
        for segment in message.segments:
            if segment.location == SUBJECT:
                positions.append((SUBJECT, segment.text))
            elif segment.location == BODY:
                body_edges.append(_edges(segment.text))
        if body_edges:
            positions.append((BODY, "\n".join(body_edges)))
        return positions
