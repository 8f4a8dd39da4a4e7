"""The message model every stage reads: parsed once from the bytes a client sent.

Parsing never raises: a malformed message is modelled from whatever can be read,
and what could not be read is recorded in `defects` so the policy can err to the
safe side. The model never changes the bytes; delivery sends `raw` on.
"""

from __future__ import annotations

import email
import email.policy
import html
import re
import unicodedata
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.message import Message as EmailMessage
from email.utils import getaddresses
from html.parser import HTMLParser
from typing import Callable, Iterable

BODY = "body"
SUBJECT = "subject"


@dataclass(frozen=True)
class Envelope:
    """The SMTP envelope: who the message is really from and to."""

    mail_from: str                          # "" for the null sender (bounces)
    rcpt_tos: tuple[str, ...]
    mail_options: tuple[str, ...] = ()      # e.g. BODY=8BITMIME, SMTPUTF8, SIZE=...
    client_address: str = ""
    helo: str = ""
    protocol: str = "SMTP"                  # SMTP, ESMTP, LMTP or FILE


@dataclass(frozen=True)
class TextSegment:
    """Text a person would read, with where it was found. `text` is normalised (see normalise_text)."""

    location: str                           # "subject", "body", "attachment:NAME"
    text: str


# Characters that change nothing a person sees but break patterns (zero-width space,
# non-joiner, joiner, word joiner, byte-order mark, soft hyphen), and dashes and minus
# signs, which a person reads as a hyphen.
_INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff\u00ad"
_DASHES = "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d"
_ODD = re.compile(f"[{_INVISIBLE}{_DASHES}]")
_ODD_REPLACEMENT = {**dict.fromkeys(_INVISIBLE, ""), **dict.fromkeys(_DASHES, "-")}


def _fix_odd(text: str) -> str:
    return _ODD.sub(lambda m: _ODD_REPLACEMENT[m.group()], text) if _ODD.search(text) else text


def normalise_text(text: str) -> str:
    """Text as a person reads it: NFKC (full-width digits, ligatures, non-breaking spaces),
    invisible characters removed, every dash a hyphen. Cheap for text that needs none of it."""
    if text.isascii():
        return text
    text = _fix_odd(text)
    if not unicodedata.is_normalized("NFKC", text):
        text = _fix_odd(unicodedata.normalize("NFKC", text))
    return text


@dataclass(frozen=True)
class Defect:
    """Part of the message that could not be read, and why (never its content)."""

    location: str
    reason: str


@dataclass(frozen=True)
class Attachment:
    name: str
    location: str                           # "attachment:NAME"
    declared_type: str                      # Content-Type as sent
    detected_type: str                      # from the bytes (libmagic)
    size: int
    data: bytes = field(repr=False)


@dataclass(frozen=True)
class Message:
    envelope: Envelope
    raw: bytes = field(repr=False)
    headers: tuple[tuple[str, str], ...]    # decoded, in order
    subject: str
    message_id: str
    segments: tuple[TextSegment, ...]
    attachments: tuple[Attachment, ...]
    defects: tuple[Defect, ...] = ()        # what could not be read

    def header(self, name: str) -> list[str]:
        lname = name.lower()
        return [v for k, v in self.headers if k.lower() == lname]

    def addresses(self, *names: str) -> list[tuple[str, str]]:
        """(display name, address) pairs from the named address headers."""
        values = [v for n in names for v in self.header(n)]
        return [(dn, addr) for dn, addr in getaddresses(values) if addr]

    @property
    def size(self) -> int:
        return len(self.raw)


# Extractors turn an attachment's bytes into text segments; attachment support adds
# more by detected type. Each takes (attachment) and returns text or None.
TextExtractor = Callable[[Attachment], "str | None"]
_EXTRACTORS: list[tuple[Callable[[str], bool], TextExtractor]] = []


def register_extractor(matches: Callable[[str], bool], extractor: TextExtractor) -> None:
    _EXTRACTORS.append((matches, extractor))


def decode_header_value(value: str) -> str:
    """RFC 2047 encoded words to text; anything undecodable is kept as it came."""
    if "=?" not in value:
        return value
    try:
        return str(make_header(decode_header(value)))
    except Exception:
        return value


def decode_text(data: bytes, charset: str | None) -> str:
    for candidate in (charset, "utf-8"):
        if not candidate:
            continue
        try:
            return data.decode(candidate)
        except (LookupError, UnicodeDecodeError):
            continue
    return data.decode("cp1252", errors="replace")


class _HtmlText(HTMLParser):
    _BLOCK = {"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "td", "th", "hr", "title"}
    _SKIP = {"script", "style", "head"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._skipping = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in self._SKIP and self._skipping:
            self._skipping -= 1
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._skipping:
            self.parts.append(data)


def html_to_text(markup: str) -> str:
    parser = _HtmlText()
    try:
        parser.feed(markup)
        parser.close()
    except Exception:
        return html.unescape(re.sub(r"<[^>]*>", " ", markup))
    return re.sub(r"\n[ \t]*\n+", "\n\n", "".join(parser.parts)).strip()


def detect_type(data: bytes) -> str:
    """The content type from the bytes themselves (libmagic), never from the name."""
    if not data:
        return "application/x-empty"
    try:
        import magic

        return magic.from_buffer(data[:65536], mime=True) or "application/octet-stream"
    except Exception:
        return "application/octet-stream"


def _payload(part: EmailMessage, defects: list[Defect], where: str) -> bytes:
    try:
        data = part.get_payload(decode=True)
    except Exception:
        defects.append(Defect(where, "transfer encoding could not be decoded"))
        return b""
    if data is None:
        return b""
    for defect in part.defects:
        name = type(defect).__name__
        if name in ("InvalidBase64PaddingDefect", "InvalidBase64CharactersDefect", "InvalidBase64LengthDefect"):
            defects.append(Defect(where, "damaged base64"))
    return data if isinstance(data, bytes) else str(data).encode("utf-8", "surrogateescape")


def _attachment_name(part: EmailMessage, index: int) -> str:
    try:
        name = part.get_filename()
    except Exception:
        name = None
    if name:
        name = decode_header_value(name)
        # Keep only the last path component: names are shown to people and used as locations.
        name = re.split(r"[\\/]", name)[-1].strip() or None
    return name or f"part-{index}"


def _iter_parts(msg: EmailMessage) -> Iterable[EmailMessage]:
    try:
        yield from msg.walk()
    except Exception:
        yield msg


def parse(raw: bytes, envelope: Envelope) -> Message:
    """Model `raw`; never raises."""
    defects: list[Defect] = []
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    except Exception:
        text = normalise_text(raw.decode("utf-8", errors="replace"))
        return Message(envelope, raw, (), "", "", (TextSegment(BODY, text),), (), (Defect("message", "could not be parsed"),))

    headers: list[tuple[str, str]] = []
    for name, value in msg.items():
        headers.append((name, decode_header_value(str(value))))
    subject = next((v for k, v in headers if k.lower() == "subject"), "")
    message_id = next((v.strip() for k, v in headers if k.lower() == "message-id"), "")

    segments: list[TextSegment] = []
    if subject:
        segments.append(TextSegment(SUBJECT, normalise_text(subject)))
    attachments: list[Attachment] = []
    index = 0
    for part in _iter_parts(msg):
        index += 1
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        disposition = (part.get("Content-Disposition") or "").split(";")[0].strip().lower()
        is_attachment = disposition == "attachment" or bool(part.get_param("name")) or bool(part.get_filename(None))
        if ctype in ("text/plain", "text/html") and not is_attachment:
            data = _payload(part, defects, BODY)
            text = decode_text(data, part.get_content_charset())
            if ctype == "text/html":
                text = html_to_text(text)
            if text.strip():
                segments.append(TextSegment(BODY, normalise_text(text)))
            continue
        if ctype == "message/rfc822" or part.get_content_maintype() == "multipart":
            continue
        name = _attachment_name(part, index)
        data = _payload(part, defects, f"attachment:{name}")
        att = Attachment(
            name=name,
            location=f"attachment:{name}",
            declared_type=ctype,
            detected_type=detect_type(data),
            size=len(data),
            data=data,
        )
        attachments.append(att)
        segments.extend(_extract(att, part.get_content_charset(), defects))

    for defect in getattr(msg, "defects", []):
        name = type(defect).__name__
        if name in ("StartBoundaryNotFoundDefect", "MultipartInvariantViolationDefect"):
            defects.append(Defect("message", "damaged MIME structure"))
    if not segments and not attachments and raw.strip():
        # Nothing came out of the MIME structure: inspect the raw bytes rather than nothing.
        segments.append(TextSegment(BODY, normalise_text(raw.decode("utf-8", errors="replace"))))
    return Message(
        envelope=envelope,
        raw=raw,
        headers=tuple(headers),
        subject=subject,
        message_id=message_id,
        segments=tuple(segments),
        attachments=tuple(attachments),
        defects=tuple(dict.fromkeys(defects)),
    )


def _extract(att: Attachment, charset: str | None, defects: list[Defect]) -> list[TextSegment]:
    for matches, extractor in _EXTRACTORS:
        if matches(att.detected_type):
            try:
                text = extractor(att)
            except Exception:
                defects.append(Defect(att.location, "could not be read"))
                return []
            return [TextSegment(att.location, normalise_text(text))] if text else []
    plain_declared = att.declared_type.startswith("text/") and att.detected_type in ("application/octet-stream", "application/csv")
    if att.detected_type.startswith("text/") or plain_declared:
        text = decode_text(att.data, charset)
        if att.detected_type == "text/html" or att.declared_type == "text/html":
            text = html_to_text(text)
        return [TextSegment(att.location, normalise_text(text))] if text.strip() else []
    return []
