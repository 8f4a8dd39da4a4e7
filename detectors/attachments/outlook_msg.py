"""Outlook .msg files ([MS-OXMSG]): the message a person would see, and its attachments.

Read with olefile directly (through ole.Storage) rather than extract-msg: the properties
needed are few and documented, and reading them here keeps one compound-file reader
with one set of limits for every OLE file. The text starts like a forwarded message:
`Subject:`, `From:`, `To:` and `Cc:` lines, then the body (plain text; else the HTML
body as text). A message whose only body is compressed RTF has it decompressed
([MS-OXRTFCP]) and returned as the member `body.rtf`, read by the RTF extractor.

Attachments come back as members under their long file names. An attached message
(ATTACH_EMBEDDED_MSG, a storage rather than bytes) is turned into an RFC 822 message
with its own attachments and returned as `SUBJECT.eml`, so it is read like any attached
email and its files are located inside it. An attached OLE object is read in place.
An S/MIME message's smime.p7m is an attachment, judged by crypto.py (a signed message's
smime.p7m is its whole MIME entity, returned as smime.eml and read as an email); a message
protected by Information Rights Management (message.rpmsg) is encrypted. Never writes.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from email.header import Header
from email.mime.application import MIMEApplication
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formataddr
from typing import TYPE_CHECKING

from detectors.attachments.core import Budget, Extraction, LimitExceeded, Unreadable, extractor

if TYPE_CHECKING:
    from detectors.attachments.ole import Storage

PT_UNICODE, PT_STRING8, PT_BINARY, PT_OBJECT, PT_LONG = 0x001F, 0x001E, 0x0102, 0x000D, 0x0003
SUBJECT, MESSAGE_CLASS, BODY, HTML, RTF_COMPRESSED = 0x0037, 0x001A, 0x1000, 0x1013, 0x1009
SENDER_NAME, SENDER_EMAIL, SENDER_SMTP = 0x0C1A, 0x0C1F, 0x5D01
DISPLAY_TO, DISPLAY_CC = 0x0E04, 0x0E03
DISPLAY_NAME, EMAIL_ADDRESS, SMTP_ADDRESS, RECIPIENT_TYPE = 0x3001, 0x3003, 0x39FE, 0x0C15
ATTACH_DATA, ATTACH_LONG_FILENAME, ATTACH_FILENAME, ATTACH_METHOD = 0x3701, 0x3707, 0x3704, 0x3705
MESSAGE_CODEPAGE, INTERNET_CPID = 0x3FFD, 0x3FDE
ATTACH_EMBEDDED_MSG, ATTACH_OLE = 5, 6
_RECIPIENT_PREFIX, _ATTACHMENT_PREFIX = "__recip_version1.0_", "__attach_version1.0_"
_PROPERTIES = "__properties_version1.0"
_IRM_CLASS = re.compile(r"IPM\.Note\.rpmsg", re.IGNORECASE)
_SIGNED_CLASS = re.compile(r"IPM\.Note\.SMIME\.MultipartSigned", re.IGNORECASE)


@extractor("application/vnd.ms-outlook")
def read_msg(data: bytes, budget: Budget) -> Extraction:
    from detectors.attachments.ole import DAMAGE, Storage, open_cfb

    ole = open_cfb(data)
    try:
        return read_message_storage(Storage.root(ole, budget, len(data)))
    except DAMAGE as e:
        raise Unreadable(f"a damaged Outlook message ({type(e).__name__})") from None
    finally:
        ole.close()


def read_message_storage(st: Storage) -> Extraction:
    """A message stored in `st` (a .msg file's root, or an attached message's storage)."""
    problems: list[str] = []
    message = _Message.read(st, problems)
    members: list[tuple[str, bytes]] = []
    try:
        members = _attachments(st, message, problems)
    except LimitExceeded as e:
        problems.append(str(e))
    encrypted = ""
    if _IRM_CLASS.match(message.message_class) or any(n.lower() == "message.rpmsg" for n, _ in members):
        encrypted = "Outlook message protected by Information Rights Management"
        members = [(n, d) for n, d in members if n.lower() != "message.rpmsg"]
    if _SIGNED_CLASS.match(message.message_class):
        # Outlook keeps a signed message's whole MIME entity as an attachment named smime.p7m:
        # named .eml, it is read as the email it is, its parts and attachments included.
        members = [("smime.eml" if n.lower() == "smime.p7m" else n, d) for n, d in members]
    if message.rtf is not None and not message.body:
        members.insert(0, ("body.rtf", message.rtf))
    return Extraction(text=message.text(), members=members, encrypted=encrypted,
                      incomplete="; ".join(dict.fromkeys(problems)))


Person = tuple[str, str]  # (display name, address); either may be ""


@dataclass
class _Message:
    subject: str = ""
    message_class: str = ""
    sender: Person = ("", "")
    to: list[Person] = field(default_factory=list)
    cc: list[Person] = field(default_factory=list)
    body: str = ""
    rtf: bytes | None = None
    inline: list[str] = field(default_factory=list)        # text of OLE objects read in place

    @classmethod
    def read(cls, st: Storage, problems: list[str]) -> _Message:
        props = _Properties(st)
        m = cls(subject=props.text(SUBJECT), message_class=props.text(MESSAGE_CLASS))
        m.sender = (props.text(SENDER_NAME), props.text(SENDER_SMTP) or props.text(SENDER_EMAIL))
        m.to, m.cc = _recipients(st)
        if not m.to and not m.cc:               # no recipient table: the display lists ("Jo Bloggs; Sam Smith")
            m.to = [(props.text(DISPLAY_TO), "")] if props.text(DISPLAY_TO) else []
            m.cc = [(props.text(DISPLAY_CC), "")] if props.text(DISPLAY_CC) else []
        m.body = props.text(BODY)
        if not m.body:
            html = props.binary(HTML) or props.text(HTML).encode("utf-8")
            if html:
                from gateway.message import html_to_text

                m.body = html_to_text(_decode_html(html, props.codepage()))
        if not m.body:
            compressed = props.binary(RTF_COMPRESSED)
            if compressed:
                try:
                    m.rtf = decompress_rtf(compressed, st.budget)
                except ValueError:
                    problems.append("the message's RTF body is damaged")
        return m

    def text(self) -> str:
        lines = [f"Subject: {self.subject}" if self.subject else "",
                 f"From: {_person(*self.sender)}" if any(self.sender) else "",
                 f"To: {'; '.join(_person(*p) for p in self.to)}" if self.to else "",
                 f"Cc: {'; '.join(_person(*p) for p in self.cc)}" if self.cc else ""]
        head = "\n".join(line for line in lines if line)
        return "\n\n".join(part for part in (head, self.body.strip(), *self.inline) if part)


def _person(name: str, address: str) -> str:
    if name and address and address.lower() not in name.lower():
        return f"{name} <{address}>"
    return name or address


class _Properties:
    """The properties of one storage: variable-length ones in __substg1.0_ streams,
    fixed-length ones (numbers) in __properties_version1.0."""

    def __init__(self, st: Storage) -> None:
        self.st = st
        self.names = st.children()
        self._fixed: dict[int, bytes] | None = None

    def _stream(self, prop: int, kind: int) -> str:
        return f"__substg1.0_{prop:04X}{kind:04X}"

    def text(self, prop: int) -> str:
        unicode = self._stream(prop, PT_UNICODE)
        if unicode in self.names:
            return self.st.read(unicode).decode("utf-16-le", errors="replace").split("\x00", 1)[0].strip()
        eight = self._stream(prop, PT_STRING8)
        if eight in self.names:
            return _decode(self.st.read(eight), self.codepage()).split("\x00", 1)[0].strip()
        return ""

    def binary(self, prop: int) -> bytes:
        name = self._stream(prop, PT_BINARY)
        return self.st.read(name) if name in self.names else b""

    def number(self, prop: int) -> int | None:
        if self._fixed is None:
            self._fixed = {}
            data = self.st.read(_PROPERTIES)
            # The header is 32 bytes in a .msg file's root, 24 in an attached message, 8 elsewhere.
            header = 32 if not self.st.path else 24 if self.st.path[-1].startswith("__substg1.0_") else 8
            for pos in range(header, len(data) - 15, 16):
                tag, _flags, value = struct.unpack_from("<II8s", data, pos)
                self._fixed[tag] = value
        value = self._fixed.get((prop << 16) | PT_LONG)
        return struct.unpack_from("<i", value, 0)[0] if value is not None else None

    def codepage(self) -> int:
        return self.number(MESSAGE_CODEPAGE) or self.number(INTERNET_CPID) or 1252


def _decode(raw: bytes, codepage: int) -> str:
    codec = {65001: "utf-8", 1200: "utf-16-le", 20127: "ascii", 28591: "latin-1"}.get(codepage, f"cp{codepage}")
    try:
        return raw.decode(codec, errors="replace")
    except LookupError:
        return raw.decode("cp1252", errors="replace")


def _decode_html(raw: bytes, codepage: int) -> str:
    m = re.search(rb"""<meta[^>]+charset=["']?([A-Za-z0-9_-]+)""", raw[:4096], re.IGNORECASE)
    if m:
        try:
            return raw.decode(m.group(1).decode("ascii"), errors="replace")
        except LookupError:
            pass
    return _decode(raw, codepage)


def _recipients(st: Storage) -> tuple[list[Person], list[Person]]:
    to: list[Person] = []
    cc: list[Person] = []
    for name in sorted(st.children()):
        if name.startswith(_RECIPIENT_PREFIX) and st.is_storage(name):
            props = _Properties(st.sub(name))
            person = (props.text(DISPLAY_NAME), props.text(SMTP_ADDRESS) or props.text(EMAIL_ADDRESS))
            if any(person):
                (cc if props.number(RECIPIENT_TYPE) in (2, 3) else to).append(person)
    return to, cc


def _attachments(st: Storage, message: _Message, problems: list[str]) -> list[tuple[str, bytes]]:
    members: list[tuple[str, bytes]] = []
    for name in sorted(st.children()):
        if not (name.startswith(_ATTACHMENT_PREFIX) and st.is_storage(name)):
            continue
        st.budget.check_time()
        att = st.sub(name)
        props = _Properties(att)
        filename = _safe_name(props.text(ATTACH_LONG_FILENAME) or props.text(ATTACH_FILENAME)
                              or props.text(DISPLAY_NAME), len(members) + 1)
        method = props.number(ATTACH_METHOD)
        storage_name = f"__substg1.0_{ATTACH_DATA:04X}{PT_OBJECT:04X}"
        if att.is_storage(storage_name):
            inner = att.sub(storage_name)
            if method == ATTACH_EMBEDDED_MSG or inner.has(_PROPERTIES):
                subject = _Properties(inner).text(SUBJECT)
                members.append((_safe_name(f"{subject or filename}.eml", len(members) + 1),
                                message_as_email(inner, problems)))
            else:                                            # ATTACH_OLE: an OLE object, read in place
                from detectors.attachments.ole import read_object

                found = read_object(inner, len(members))
                if found.text.strip():
                    message.inline.append(f"Attachment: {filename}\n{found.text}")
                members += found.members
                if found.encrypted or found.incomplete:
                    problems.append(f"attached object {filename}: {found.encrypted or found.incomplete}")
        elif props.binary(ATTACH_DATA) or att.has(f"__substg1.0_{ATTACH_DATA:04X}{PT_BINARY:04X}"):
            members.append((filename, props.binary(ATTACH_DATA)))
        # Attachments by reference (methods 2-4) carry a path or a link, no content.
    return members


def _safe_name(name: str, index: int) -> str:
    name = re.split(r"[\\/]", name.replace("\x00", ""))[-1].strip()
    return name or f"attachment-{index}"


def message_as_email(st: Storage, problems: list[str]) -> bytes:
    """An attached message as RFC 822 bytes: headers, body, and its own attachments."""
    m = _Message.read(st, problems)
    attachments = _attachments(st, m, problems)
    if m.rtf is not None and not m.body:
        attachments.insert(0, ("body.rtf", m.rtf))
    email = MIMEMultipart()
    if m.subject:
        subject = " ".join(m.subject.split())
        email["Subject"] = subject if subject.isascii() else Header(subject, "utf-8")
    for header, people in (("From", [m.sender] if any(m.sender) else []), ("To", m.to), ("Cc", m.cc)):
        if people:
            email[header] = ", ".join(formataddr((" ".join(n.split()), "".join(a.split())), "utf-8")
                                      for n, a in people)
    email.attach(MIMEText("\n\n".join(part for part in (m.body, *m.inline) if part), "plain", "utf-8"))
    for name, data in attachments:
        part = MIMEApplication(data)
        part.add_header("Content-Disposition", "attachment", filename=("utf-8", "", name))
        email.attach(part)
    return email.as_bytes()


# ---------------------------------------------------------------------------------------
# Compressed RTF ([MS-OXRTFCP])

_RTF_PREBUF = (b"{\\rtf1\\ansi\\mac\\deff0\\deftab720{\\fonttbl;}{\\f0\\fnil \\froman \\fswiss \\fmodern \\fscript "
               b"\\fdecor MS Sans SerifSymbolArialTimes New RomanCourier{\\colortbl\\red0\\green0\\blue0\r\n\\par "
               b"\\pard\\plain\\f0\\fs20\\b\\i\\u\\tab\\tx")
_LZFU, _MELA = 0x75465A4C, 0x414C454D


def decompress_rtf(data: bytes, budget: Budget) -> bytes:
    """The RTF of a PR_RTF_COMPRESSED property; ValueError when it is damaged."""
    if len(data) < 16:
        raise ValueError("too short")
    comp_size, raw_size, kind, _crc = struct.unpack_from("<IIII", data, 0)
    budget.take_bytes(raw_size)
    if kind == _MELA:
        return data[16:16 + raw_size]
    if kind != _LZFU:
        raise ValueError("unknown compression")
    dictionary = bytearray(4096)
    dictionary[:len(_RTF_PREBUF)] = _RTF_PREBUF
    write = len(_RTF_PREBUF)
    out = bytearray()
    pos, end = 16, min(len(data), comp_size + 4)
    rounds = 0
    while pos < end:
        rounds += 1
        if not rounds & 0x3FFF:
            budget.check_time()
        control = data[pos]
        pos += 1
        for bit in range(8):
            if pos >= end:
                break
            if control & (1 << bit):
                if pos + 2 > end:
                    raise ValueError("truncated reference")
                ref = (data[pos] << 8) | data[pos + 1]
                pos += 2
                offset, length = ref >> 4, (ref & 0x0F) + 2
                if offset == write:
                    return bytes(out)
                for i in range(length):
                    byte = dictionary[(offset + i) % 4096]
                    out.append(byte)
                    dictionary[write] = byte
                    write = (write + 1) % 4096
            else:
                byte = data[pos]
                pos += 1
                out.append(byte)
                dictionary[write] = byte
                write = (write + 1) % 4096
            if len(out) > raw_size + 4096:
                raise ValueError("longer than its declared size")
    return bytes(out)
