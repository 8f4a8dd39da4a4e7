"""The message model every stage reads: parsed once from the bytes a client sent.

Parsing never raises: a malformed message is modelled from whatever can be read,
and what could not be read is recorded in `defects` so the policy can err to the
safe side. The model never changes the bytes; delivery sends `raw` on.
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass, field
from email.header import decode_header, make_header
from email.utils import collapse_rfc2231_value, getaddresses
from html.parser import HTMLParser

from detectors.attachments import AttachmentReport, Limits, ReadFile, Status, read_attachments
from gateway import mime

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
class Correspondent:
    """Someone a sender has had mail delivered to, as the recipient history remembers it."""

    address: str                            # lower-case
    display_name: str                       # the name last shown for it in To/Cc; "" if none
    count: int                              # messages delivered to it
    first_seen: float                       # Unix time
    last_seen: float


@dataclass(frozen=True)
class SenderHistory:
    """What the gateway knows of a sender before inspecting their message: whom they
    write to (most often first, bounded) and the personal accounts registered as theirs.
    Looked up by the server; detectors only read it."""

    correspondents: tuple[Correspondent, ...] = ()
    personal_addresses: tuple[str, ...] = ()    # lower-case

    def get(self, address: str) -> Correspondent | None:
        key = address.lower()
        return next((c for c in self.correspondents if c.address == key), None)


NO_HISTORY = SenderHistory()


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
    inline_image: bool = False              # shown in the HTML body (Content-ID), not attached as a file


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
    attachment_reports: tuple[AttachmentReport, ...] = ()  # each attachment: inspected, encrypted or not
    history: SenderHistory = NO_HISTORY     # the sender's recipient history

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


def raw_header_text(value: str) -> str:
    """A header value as read (8-bit bytes kept as surrogates) to text: SMTPUTF8 headers are UTF-8;
    anything else 8-bit is read as Windows-1252, as mail clients do. Folding is undone."""
    value = re.sub(r"\r?\n(?=[ \t])", "", value).strip()
    if value.isascii():
        return value
    data = value.encode("ascii", "surrogateescape")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", errors="replace")


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
        except (LookupError, UnicodeDecodeError, ValueError):  # ValueError: a charset name holding NUL
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


def _payload(raw: bytes, part: mime.Part, defects: list[Defect], where: str) -> bytes:
    if part.children is not None:  # a multipart's payload is its parts, none of its own
        return b""
    try:
        data, damaged = mime.decoded_body(raw, part)
    except Exception:
        defects.append(Defect(where, "transfer encoding could not be decoded"))
        return b""
    defects.extend(Defect(where, "damaged base64") for _ in range(damaged))
    return data


def _attachment_name(part: mime.Part, index: int) -> str:
    try:
        name = part.headers.get_filename()
    except Exception:
        name = None
    if name:
        name = decode_header_value(name)
        # Keep only the last path component: names are shown to people and used as locations.
        name = re.split(r"[\\/]", name)[-1].strip() or None
    return name or f"part-{index}"


@dataclass
class ModelParts:
    """A message taken apart, before its attachments are read (shared with attached emails)."""

    headers: list[tuple[str, str]] = field(default_factory=list)
    subject: str = ""
    message_id: str = ""
    texts: list[tuple[str, str]] = field(default_factory=list)      # (location, text) of subject and body parts
    files: list[ReadFile] = field(default_factory=list)             # attachments, attached emails included
    inline_images: set[int] = field(default_factory=set)           # indexes into files: images the HTML shows
    encrypted: list[tuple[str, str]] = field(default_factory=list)  # (location, why) for encrypted content
    unread: list[tuple[str, str]] = field(default_factory=list)     # (location, why) for content left unread
    defects: list[Defect] = field(default_factory=list)


_PGP_ARMOUR = re.compile(r"-----BEGIN PGP MESSAGE-----")
_NOT_SPACE = re.compile(rb"[^ \t\n\r\x0b\x0c]")   # what bytes.strip() would leave


def _smime_type(part: mime.Part) -> str:
    if part.content_type not in _PKCS7:
        return ""
    value = part.headers.get_param("smime-type") or ""
    return (collapse_rfc2231_value(value) if isinstance(value, tuple) else value).lower()


_PKCS7 = ("application/pkcs7-mime", "application/x-pkcs7-mime")


def _where(part: mime.Part, index: int, top: bool) -> str:
    return "message" if top else f"attachment:{_attachment_name(part, index)}"


def model_parts(raw: bytes) -> ModelParts:
    """Headers, readable text and attachment files of `raw`; never raises.

    The MIME structure is found as byte ranges of `raw` (gateway.mime) and a body is copied only
    when it is decoded, so taking a message apart costs about what its decoded parts weigh."""
    parts = ModelParts()
    try:
        root = mime.parse(raw)
    except Exception:
        parts.texts.append((BODY, raw.decode("utf-8", errors="replace")))
        parts.defects.append(Defect("message", "could not be parsed"))
        return parts
    for name, value in root.headers.raw_items():
        parts.headers.append((name, decode_header_value(raw_header_text(value))))
    parts.subject = next((v for k, v in parts.headers if k.lower() == "subject"), "")
    parts.message_id = next((v.strip() for k, v in parts.headers if k.lower() == "message-id"), "")
    if parts.subject:
        parts.texts.append((SUBJECT, parts.subject))
    broken = False
    try:
        _take_apart(raw, root, parts, [0], top=True)
    except Exception:  # a part the walk could not handle: err to the safe side, inspect the raw bytes
        parts.defects.append(Defect("message", "could not be parsed"))
        broken = True
    if root.maintype == "multipart" and root.children is None:
        # The email package records two defects for a missing first delimiter, one for a missing boundary.
        parts.defects.extend([Defect("message", "damaged MIME structure")] * (2 if root.start_boundary_missing else 1))
    nothing = len(parts.texts) == (1 if parts.subject else 0) and not parts.files and not parts.encrypted
    if (broken or nothing) and _NOT_SPACE.search(raw):
        # Nothing came out of the MIME structure: inspect the raw bytes rather than nothing.
        parts.texts.append((BODY, raw.decode("utf-8", errors="replace")))
    return parts


def _take_apart(raw: bytes, part: mime.Part, parts: ModelParts, counter: list[int], top: bool = False,
                in_related: bool = False) -> None:
    counter[0] += 1
    index = counter[0]
    ctype = part.content_type
    if ctype == "multipart/encrypted":
        parts.encrypted.append((_where(part, index, top), "OpenPGP/MIME encrypted message"))
        return
    if ctype in _PKCS7 and _smime_type(part) in ("enveloped-data", "authenveloped-data"):
        parts.encrypted.append((_where(part, index, top), "S/MIME encrypted message"))
        return
    if ctype in _PKCS7:
        # Signed-only or unlabelled: the PKCS #7 reader decides from the bytes, and unpacks
        # signed content so it is inspected like any other.
        name = _attachment_name(part, index)
        if name.startswith("part-"):
            name = f"{name}.p7m"
        parts.files.append(ReadFile(name, _payload(raw, part, parts.defects, f"attachment:{name}"), ctype))
        return
    if ctype == "message/rfc822":
        name = _attachment_name(part, index)
        if name.startswith("part-"):
            name = f"{name}.eml"
        parts.files.append(ReadFile(name, _attached_message(raw, part), ctype))
        return
    if part.too_deep:
        parts.defects.append(Defect(_where(part, index, top), "MIME parts nested too deep"))
        return
    if part.children is not None:
        for child in part.children:
            _take_apart(raw, child, parts, counter, in_related=ctype == "multipart/related")
        return
    headers = part.headers
    disposition = str(headers.get("Content-Disposition") or "").split(";")[0].strip().lower()
    is_attachment = disposition == "attachment" or bool(headers.get_param("name")) or bool(headers.get_filename(None))
    if ctype in ("text/plain", "text/html") and not is_attachment:
        data = _payload(raw, part, parts.defects, BODY)
        text = decode_text(data, headers.get_content_charset())
        if ctype == "text/html":
            text = html_to_text(text)
        if _PGP_ARMOUR.search(text):
            from detectors.attachments.crypto import pgp_or_pkcs7_kind

            why = pgp_or_pkcs7_kind(data)  # a signed-only armoured block is not encrypted
            if why:
                parts.encrypted.append((BODY, why))
        if text.strip():
            parts.texts.append((BODY, text))
        return
    name = _attachment_name(part, index)
    if ctype.startswith("image/") and headers.get("Content-ID") and (in_related or disposition != "attachment"):
        # A logo or picture in the HTML (cid:), not a file the sender attached. Still read.
        parts.inline_images.add(len(parts.files))
    parts.files.append(ReadFile(name, _payload(raw, part, parts.defects, f"attachment:{name}"), ctype))


def _attached_message(raw: bytes, part: mime.Part) -> bytes:
    """The bytes of an attached message as sent; some clients base64-encode it, against RFC 2046."""
    try:
        cte = str(part.headers.get("Content-Transfer-Encoding") or "").strip().lower()
        if cte == "base64":
            return mime.decode_base64(raw, part.start, part.end)
        if cte == "quoted-printable":
            return mime.decode_quoted_printable(raw, part.start, part.end)
        return raw[part.start:part.end]
    except Exception:
        return b""


def parse(raw: bytes, envelope: Envelope, limits: Limits | None = None,
          history: SenderHistory = NO_HISTORY) -> Message:
    """Model `raw`, reading every attachment within `limits`; never raises."""
    parts = model_parts(raw)
    texts, reports = read_attachments(parts.files, limits or Limits(), detect_type)
    top = [r for r in reports if r.depth == 0]
    attachments = tuple(
        Attachment(name=f.name, location=r.location, declared_type=f.declared_type, detected_type=r.detected_type,
                   size=len(f.data), data=f.data, inline_image=i in parts.inline_images)
        for i, (f, r) in enumerate(zip(parts.files, top))
    )
    reports.extend(AttachmentReport(loc, "", "", Status.ENCRYPTED, why) for loc, why in parts.encrypted)
    reports.extend(AttachmentReport(loc, "", "", Status.INCOMPLETE, why) for loc, why in parts.unread)
    return Message(
        envelope=envelope,
        raw=raw,
        headers=tuple(parts.headers),
        subject=parts.subject,
        message_id=parts.message_id,
        segments=tuple(TextSegment(loc, normalise_text(text)) for loc, text in (*parts.texts, *texts) if text.strip()),
        attachments=attachments,
        defects=tuple(dict.fromkeys(parts.defects)),
        attachment_reports=tuple(reports),
        history=history,
    )
