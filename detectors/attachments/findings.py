"""Findings about attachments themselves: encrypted, not inspectable, or disguised.

Rule 5 acts on encrypted content, rule 10 on content that could not be fully
inspected; a disguised file (an .xlsx named .txt) is reported so people can see it.
"""

from __future__ import annotations

from detectors.attachments.core import Status
from detectors.base import Category, Finding, Signal
from gateway.message import Message

NAME = "attachments"


class AttachmentDetector:
    name = NAME

    def detect(self, message: Message) -> list[Finding]:
        findings = []
        for r in message.attachment_reports:
            if r.status is Status.ENCRYPTED:
                kind = "encrypted message" if r.location == "message" else "encrypted content"
                findings.append(Finding(NAME, Category.ATTACHMENT, kind, r.location, signal=Signal.ENCRYPTED,
                                        detail=r.reason))
            elif r.status is Status.INCOMPLETE:
                findings.append(Finding(NAME, Category.ATTACHMENT, "content that could not be inspected", r.location,
                                        signal=Signal.INCOMPLETE, detail=r.reason))
            if r.disguised:
                findings.append(Finding(NAME, Category.ATTACHMENT, "attachment whose name hides its real type",
                                        r.location, detail=f"really {r.detected_type}"))
        return findings
