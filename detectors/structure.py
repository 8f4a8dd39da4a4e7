"""Parts of a message the model could not read (damaged MIME, undecodable encodings).

Reported as content that could not be fully inspected, so the policy errs to the
safe side instead of delivering what nobody looked at.
"""

from __future__ import annotations

from detectors.base import Category, Finding, Signal
from gateway.message import Message

NAME = "message_structure"


class StructureDetector:
    name = NAME

    def detect(self, message: Message) -> list[Finding]:
        return [
            Finding(
                detector=NAME,
                category=Category.ATTACHMENT,
                kind=f"content that could not be read ({defect.reason})",
                location=defect.location,
                signal=Signal.INCOMPLETE,
            )
            for defect in message.defects
        ]
