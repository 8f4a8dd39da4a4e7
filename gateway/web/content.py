"""A held message made safe to show a reviewer: its header fields and text as text, its attachments by name.

Nothing of the message is ever rendered as HTML: an HTML part is shown as its source,
escaped by the template like everything else. Attachments are listed, not served.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from email import policy as email_policy
from email.message import EmailMessage
from email.parser import BytesParser

MAX_PART_CHARS = 200_000
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


@dataclass(frozen=True)
class TextPart:
    content_type: str
    text: str
    truncated: bool


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    size: int


@dataclass(frozen=True)
class MessageView:
    headers: tuple[tuple[str, str], ...]
    parts: tuple[TextPart, ...]
    attachments: tuple[Attachment, ...]


def _clean(text: str) -> str:
    """Text without control and direction-changing characters, which could disguise what is shown."""
    return _CONTROL.sub("\N{REPLACEMENT CHARACTER}", text)


def _text_of(part: EmailMessage) -> str:
    try:
        return str(part.get_content())
    except Exception:  # an unknown charset or broken encoding: show what can be read
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else str(payload or "")


def view_of(raw: bytes) -> MessageView:
    message = BytesParser(policy=email_policy.default).parsebytes(raw)
    headers = []
    for name, value in message.items():
        try:
            shown = str(value)
        except Exception:
            shown = str(message.get_all(name, [""])[0])
        headers.append((_clean(name), _clean(" ".join(shown.split()))))
    parts: list[TextPart] = []
    attachments: list[Attachment] = []
    for part in message.walk():
        if part.is_multipart():
            continue
        filename = part.get_filename()
        if part.get_content_disposition() == "attachment" or filename or part.get_content_maintype() != "text":
            payload = part.get_payload(decode=True)
            attachments.append(Attachment(_clean(filename or "(no name)"), part.get_content_type(),
                                          len(payload) if isinstance(payload, bytes) else 0))
            continue
        text = _text_of(part)  # type: ignore[arg-type]
        parts.append(TextPart(part.get_content_type(), _clean(text[:MAX_PART_CHARS]), len(text) > MAX_PART_CHARS))
    return MessageView(tuple(headers), tuple(parts), tuple(attachments))
