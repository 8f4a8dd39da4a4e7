"""The monitoring disclaimer: added once to the readable body of a message that leaves the organisation.

It works on the raw bytes. Only the body parts it changes are rewritten (with their
Content-Transfer-Encoding or charset header when the new text needs another) and
spliced back into the original, so every other header and part leaves byte for byte
as it came. It never touches a signed or encrypted message, an attachment or an
attached message, never adds the disclaimer twice, and never raises: what it cannot
read it leaves alone and says why, for the caller to log.
"""

from __future__ import annotations

import binascii
import codecs
import html as html_lib
import re
import textwrap
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import Message
from email.policy import compat32
from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from gateway.shipped import TEMPLATES

MARKER = "X-DLP-Disclaimer"
MARKER_VALUE = "added"

DEFAULT_TEXT_TEMPLATE = TEMPLATES / "disclaimer.txt"
DEFAULT_HTML_TEMPLATE = TEMPLATES / "disclaimer.html"

MAX_DEPTH = 32          # nesting beyond this is an attack or a broken generator, not mail
MAX_LINE = 998          # RFC 5322 line limit for 7bit and 8bit bodies
WRAP = 76               # a disclaimer paragraph with a longer line is rewrapped to this width


class NotAdded(StrEnum):
    """Why a message left without the disclaimer."""

    ALREADY_PRESENT = "already present"
    SIGNED = "signed"
    ENCRYPTED = "encrypted"
    NO_TEXT_PART = "no text part"
    MALFORMED = "malformed"


@dataclass(frozen=True)
class DisclaimerResult:
    raw: bytes                       # the message to send: new bytes, or the input unchanged
    added: bool
    reason: NotAdded | None = None   # set when not added
    parts: int = 0                   # body parts that received the disclaimer


@dataclass(frozen=True)
class Disclaimer:
    """The rendered texts, loaded once from the configured templates."""

    text: str
    html: str

    def apply(self, raw: bytes) -> DisclaimerResult:
        return add_disclaimer(raw, self.text, self.html)


class TemplateError(ValueError):
    """A disclaimer template cannot be used; the message names the file."""


# --- templates ----------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def render_template(template: str, values: Mapping[str, str]) -> str:
    """`{name}` replaced by values[name]; any other character is literal, so CSS braces need no escaping.
    An unknown `{name}` (a typo such as `{organization}`) is an error rather than text a recipient sees."""
    unknown = sorted({m.group(1) for m in _PLACEHOLDER.finditer(template)} - set(values))
    if unknown:
        known = ", ".join("{" + k + "}" for k in sorted(values))
        raise TemplateError(f"unknown placeholder {{{unknown[0]}}}; the placeholders are {known}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def load_disclaimer(text_template: str | Path = "", html_template: str | Path = "",
                    organisation: str = "the council") -> Disclaimer:
    """Both templates read and rendered; "" means the shipped one. Raises TemplateError naming the file."""
    rendered = []
    for path, default, is_html in ((text_template, DEFAULT_TEXT_TEMPLATE, False),
                                   (html_template, DEFAULT_HTML_TEMPLATE, True)):
        path = Path(path) if str(path) else default
        try:
            template = path.read_text(encoding="utf-8")
        except OSError as e:
            raise TemplateError(f"cannot read the disclaimer template {path}: {e.strerror}") from None
        except UnicodeDecodeError:
            raise TemplateError(f"the disclaimer template {path} is not UTF-8 text") from None
        org = html_lib.escape(organisation, quote=False) if is_html else organisation
        try:
            text = render_template(template, {"organisation": org}).strip()
        except TemplateError as e:
            raise TemplateError(f"the disclaimer template {path}: {e}") from None
        if not text:
            raise TemplateError(f"the disclaimer template {path} is empty")
        rendered.append(text)
    return Disclaimer(text=rendered[0], html=rendered[1])


# --- the message as byte ranges -------------------------------------------------------

class _Malformed(Exception):
    pass


_BLANK_LINE = re.compile(rb"\n\r?\n")
_FIELD_START = re.compile(rb"[!-9;-~]+[ \t]*:")


@dataclass
class _Part:
    start: int             # first byte of the header block
    header_end: int        # just after the last header field's line ending
    body_start: int
    end: int               # end of the body (the line ending before a delimiter belongs to the delimiter)
    separated: bool        # a blank line divides headers from body
    headers: Message       # read-only view for content type, parameters, disposition
    fields: list[tuple[str, int, int]]   # (lower-case name, start, end) of each header field
    children: list["_Part"] = field(default_factory=list)

    @property
    def ctype(self) -> str:
        return self.headers.get_content_type()

    @property
    def is_attachment(self) -> bool:
        h = self.headers
        return h.get_content_disposition() == "attachment" or bool(h.get_filename())


def _parse(raw: bytes, start: int, end: int, depth: int = 0, default_type: str = "text/plain") -> _Part:
    if depth > MAX_DEPTH:
        raise _Malformed("nested too deep")
    if raw.startswith(b"\r\n", start, end) or raw.startswith(b"\n", start, end):
        header_end, body_start, separated = start, start + (2 if raw[start] == 13 else 1), True
    else:
        m = _BLANK_LINE.search(raw, start, end)
        if m:
            header_end, body_start, separated = m.start() + 1, m.end(), True
        else:
            header_end, body_start, separated = end, end, False
    if header_end > start and raw[header_end - 1] != 10:
        raise _Malformed("headers without a line ending")
    fields = _fields(raw, start, header_end)
    headers = Message(policy=compat32)
    headers.set_default_type(default_type)
    for _, s, e in fields:
        name, _, value = raw[s:e].decode("ascii", "surrogateescape").partition(":")
        headers.set_raw(name.strip(), value.lstrip(" \t").rstrip("\r\n"))  # as email.parser stores it
    part = _Part(start, header_end, body_start, end, separated, headers, fields)
    if headers.get_content_maintype() == "multipart":
        boundary = headers.get_boundary()
        if not boundary:
            raise _Malformed("multipart without a boundary")
        child_type = "message/rfc822" if part.ctype == "multipart/digest" else "text/plain"
        for s, e in _split(raw, body_start, end, boundary.encode("ascii", "surrogateescape")):
            part.children.append(_parse(raw, s, e, depth + 1, child_type))
    return part


_DELIMITER_TAIL = re.compile(rb"(--)?[ \t]*\r?(?:\n|$)")


def _split(raw: bytes, start: int, end: int, boundary: bytes) -> list[tuple[int, int]]:
    """Byte ranges of the body parts between the delimiter lines (RFC 2046 5.1.1)."""
    dash = b"--" + boundary
    ranges: list[tuple[int, int]] = []
    opened = None
    pos = start
    while True:
        at = raw.find(dash, pos, end)
        if at < 0:
            raise _Malformed("multipart without its close delimiter")
        pos = at + len(dash)
        tail = _DELIMITER_TAIL.match(raw, pos, end)
        if not tail or (at > start and raw[at - 1] != 10):
            continue  # not at the start of a line, or more follows on it: text, not a delimiter
        if opened is not None:
            stop = at - (2 if raw[at - 2:at] == b"\r\n" else 1)   # the line ending before it is the delimiter's
            ranges.append((opened, max(opened, stop)))
        if tail.group(1):
            if opened is None:
                raise _Malformed("close delimiter before any part")
            return ranges
        opened = pos = tail.end()


def _walk(part: _Part) -> list[_Part]:
    out = [part]
    for c in part.children:
        out.extend(_walk(c))
    return out


def _fields(raw: bytes, start: int, end: int) -> list[tuple[str, int, int]]:
    """(lower-case name, start, end) of each header field, continuation lines included."""
    out: list[tuple[str, int, int]] = []
    pos = start
    while pos < end:
        nl = raw.find(b"\n", pos, end)
        line_end = end if nl < 0 else nl + 1
        if raw[pos] in b" \t" and out:
            out[-1] = (out[-1][0], out[-1][1], line_end)
        else:
            m = _FIELD_START.match(raw, pos, line_end)
            if not m:
                raise _Malformed("a header line is not a header field")
            out.append((raw[pos:m.end() - 1].rstrip(b" \t").decode("ascii").lower(), pos, line_end))
        pos = line_end
    return out


# --- what must not be touched ----------------------------------------------------------------

_ARMOR_PLAIN = re.compile(rb"(?m)^[ \t]*-----BEGIN PGP (SIGNED )?MESSAGE-----")
_ARMOR_HTML = re.compile(rb"-----BEGIN PGP (SIGNED )?MESSAGE-----")


def _protection(raw: bytes, root: _Part) -> NotAdded | None:
    """SIGNED or ENCRYPTED when changing a body would break a signature or cannot reach the text.
    An encrypted or signed file attached beside a plain body does not count: it is left alone anyway."""
    for part in _walk(root):
        if part is not root and part.is_attachment:
            continue
        t = part.ctype
        if t == "multipart/signed":
            return NotAdded.SIGNED
        if t in ("multipart/encrypted", "application/pgp-encrypted"):
            return NotAdded.ENCRYPTED
        if t in ("application/pkcs7-mime", "application/x-pkcs7-mime"):
            smime = (part.headers.get_param("smime-type") or "")
            return NotAdded.SIGNED if str(smime).lower() == "signed-data" else NotAdded.ENCRYPTED
        if t in ("text/plain", "text/html") and not part.children:
            content = _decode_body(raw[part.body_start:part.end], _cte(part))
            m = (_ARMOR_HTML if t == "text/html" else _ARMOR_PLAIN).search(content or b"")
            if m:
                return NotAdded.SIGNED if m.group(1) else NotAdded.ENCRYPTED
    return None


def _bodies(part: _Part) -> list[_Part]:
    """The parts that get the disclaimer, once for each way a reader sees the message: every
    alternative of a multipart/alternative, the root of a multipart/related, and in multipart/mixed
    (or any other multipart) the last part holding body text, so it ends what the reader reads."""
    if part.is_attachment:
        return []
    t = part.ctype
    if t in ("text/plain", "text/html"):
        return [part]
    if not part.children:
        return []
    if t == "multipart/alternative":
        return [b for c in part.children for b in _bodies(c)]
    if t == "multipart/related":
        start = str(part.headers.get_param("start") or "").strip()
        root = next((c for c in part.children if start and str(c.headers.get("content-id", "")).strip() == start),
                    part.children[0])
        return _bodies(root)
    for child in reversed(part.children):
        found = _bodies(child)
        if found:
            return found
    return []


# --- "already present" -------------------------------------------------------------------

_QUOTES = (("\u2018", "'"), ("\u2019", "'"), ("\u201a", "'"), ("\u201b", "'"),
           ("\u201c", '"'), ("\u201d", '"'), ("\u201e", '"'), ("\u2013", "-"), ("\u2014", "-"))


def _plain_quotes(text: str) -> str:
    for typographic, plain in _QUOTES:  # str.replace: far faster than translate() on long text
        text = text.replace(typographic, plain)
    return text


_QUOTE_MARKS = re.compile(r"(?m)^[ \t]*(?:>[ \t]?)+")
_HIDDEN = re.compile(r"(?is)<!--.*?-->|<(style|script|head)\b.*?</\1\s*>")
_TAG = re.compile(r"(?s)<[^>]*>")


def _html_text(markup: str) -> str:
    return html_lib.unescape(_TAG.sub(" ", _HIDDEN.sub(" ", markup)))


def _normalise(text: str) -> str:
    """Text as compared for "already there": quote marks of a reply, wrapping, case and typography ignored."""
    if not text.isascii():
        text = _plain_quotes(unicodedata.normalize("NFKC", text))
    return " ".join(_QUOTE_MARKS.sub(" ", text).split()).casefold()


@lru_cache(maxsize=16)
def _needles(text: str, markup: str) -> tuple[str, ...]:
    return tuple(n for n in {_normalise(text), _normalise(_html_text(markup))} if n)


def _contains(part_text: str, is_html: bool, needles: tuple[str, ...]) -> bool:
    haystack = _normalise(_html_text(part_text) if is_html else part_text)
    return any(n in haystack for n in needles)


# --- encodings ----------------------------------------------------------------------------

_CHARSET_NAME = re.compile(r"[A-Za-z0-9!#$%&'+^_`{}~.:-]{1,64}")   # an RFC 2978 charset name
_STATEFUL = ("utf_16", "utf_32", "utf_7", "iso2022", "hz")
_ASCII_PROBE = "</body> <p>= - az AZ 09\r\n"


def _cte(part: _Part) -> str:
    return str(part.headers.get("content-transfer-encoding", "7bit")).strip().lower()


def _decode_body(body: bytes, cte: str) -> bytes | None:
    try:
        if cte in ("7bit", "8bit", "binary"):
            return body
        if cte == "quoted-printable":
            return binascii.a2b_qp(body)
        if cte == "base64":
            return binascii.a2b_base64(body)
    except (binascii.Error, ValueError):
        return None
    return None  # x-uuencode and other encodings we would only damage


def _encode_body(content: bytes, cte: str, eol: bytes, ends_with_eol: bool) -> bytes:
    if cte == "base64":
        b64 = binascii.b2a_base64(content, newline=False)
        out = eol.join(b64[i:i + 76] for i in range(0, len(b64), 76))
    elif cte == "quoted-printable":
        out = binascii.b2a_qp(content.replace(b"\r\n", b"\n"), istext=True).replace(b"\n", eol)
    else:
        return content
    if ends_with_eol and not out.endswith(eol):
        out += eol
    return out


def _codec(charset: str) -> codecs.CodecInfo | None:
    try:
        return codecs.lookup(charset)
    except (LookupError, ValueError):
        return None


def _ascii_compatible(codec: codecs.CodecInfo) -> bool:
    """Bytes can be spliced without decoding: ASCII means ASCII and no state carries across."""
    if codec.name.replace("-", "_").startswith(_STATEFUL):
        return False
    try:
        return codec.encode(_ASCII_PROBE)[0] == _ASCII_PROBE.encode("ascii")
    except (UnicodeError, LookupError):
        return False


def _ascii_approximation(text: str) -> str:
    text = unicodedata.normalize("NFKD", _plain_quotes(text))
    return "".join(c for c in text if not unicodedata.combining(c)).encode("ascii", "replace").decode("ascii")


def _line_ending(data: bytes, fallback: bytes) -> bytes:
    if b"\r\n" in data:
        return b"\r\n"
    return b"\n" if b"\n" in data else fallback


def _long_line(data: bytes) -> bool:
    return any(len(line) > MAX_LINE for line in data.splitlines())


# --- composing the new body ----------------------------------------------------------------

def _plain_block(text: str, flowed: bool, delsp: bool) -> list[str]:
    """The disclaimer's lines. A paragraph whose lines all fit in 76 columns keeps the template's
    line breaks (an address block stays one); one that does not (a long organisation name) is
    rewrapped. In format=flowed those rewrapped breaks are soft (RFC 3676 trailing space, with
    space-stuffing), so the recipient's client reflows them."""
    lines: list[str] = []
    paragraph: list[str] = []

    def flush() -> None:
        if not paragraph:
            return
        soft = any(len(line) > WRAP for line in paragraph)
        if soft:
            joined = " ".join(line.strip() for line in paragraph)
            paragraph[:] = textwrap.wrap(joined, WRAP, break_long_words=False, break_on_hyphens=False)
        for i, line in enumerate(paragraph):
            if flowed and soft and i < len(paragraph) - 1:
                line += "  " if delsp else " "   # the soft line break; DelSp=yes deletes one space
            if flowed and line.startswith((" ", ">", "From ")):
                line = " " + line                 # space-stuffing
            lines.append(line)
        paragraph.clear()

    for line in text.strip("\r\n").splitlines():
        line = line.rstrip()
        if line:
            paragraph.append(line)
        else:
            flush()
            lines.append("")
    flush()
    return lines


def _append(content: bytes, block: bytes, eol: bytes, blank_line: bool) -> bytes:
    """content, then the block on a line of its own; the original's final line ending is mirrored."""
    if not content:
        return block + eol
    if content.endswith(b"\n"):
        return content + (eol if blank_line else b"") + block + eol
    return content + eol + (eol if blank_line else b"") + block


_BODY_END = re.compile(rb"(?i)</body\s*>")
_HTML_END = re.compile(rb"(?i)</html\s*>")


def _insert_html(content: bytes, snippet: bytes, eol: bytes) -> bytes:
    """Just before the last </body> (else </html>), on lines of its own; appended when neither is there."""
    for pattern in (_BODY_END, _HTML_END):
        last = None
        for last in pattern.finditer(content):
            pass
        if last is not None:
            pos = last.start()
            lead = b"" if pos == 0 or content[pos - 1:pos] == b"\n" else eol
            return content[:pos] + lead + snippet + eol + content[pos:]
    return _append(content, snippet, eol, blank_line=False)


@dataclass
class _Rewrite:
    body: bytes
    cte: str | None = None          # new Content-Transfer-Encoding, when it changes
    charset: str | None = None      # new charset, when it changes


_ADDED, _PRESENT, _UNREADABLE = "added", "present", "unreadable"


def _rewrite(raw: bytes, part: _Part, text: str, markup: str, eol: bytes) -> tuple[str, _Rewrite | None]:
    cte = _cte(part)
    body = raw[part.body_start:part.end]
    content = _decode_body(body, cte)
    declared = part.headers.get_param("charset")
    if isinstance(declared, str) and not _CHARSET_NAME.fullmatch(declared):
        return _UNREADABLE, None
    codec = _codec(str(part.headers.get_content_charset("us-ascii")))
    if content is None or codec is None:
        return _UNREADABLE, None
    is_html = part.ctype == "text/html"
    if _contains(content.decode(codec.name, "replace"), is_html, _needles(text, markup)):
        return _PRESENT, None
    ceol = eol if cte in ("7bit", "8bit", "binary", "quoted-printable") else _line_ending(content, b"\r\n")
    new_charset = None
    try:
        if is_html:
            new = _html_content(content, codec, markup, ceol, ascii_only=cte == "7bit")
        else:
            new, new_charset = _plain_content(content, codec, part, text, ceol)
    except UnicodeError:
        return _UNREADABLE, None
    if new is None:
        return _UNREADABLE, None
    new_cte = cte  # changed only when what we add could not travel in it
    if cte == "7bit" and not new.isascii() and content.isascii():
        new_cte = "quoted-printable"
    elif cte in ("7bit", "8bit", "binary") and _long_line(new) and not _long_line(content):
        new_cte = "quoted-printable"
    encoded = _encode_body(new, new_cte, eol, ends_with_eol=body.endswith(b"\n"))
    return _ADDED, _Rewrite(encoded, new_cte if new_cte != cte else None, new_charset)


def _html_content(content: bytes, codec: codecs.CodecInfo, markup: str, eol: bytes, ascii_only: bool) -> bytes | None:
    # Characters the part's charset cannot carry become character references, so the charset
    # (and any <meta charset> inside the HTML, which must agree with it) never changes.
    snippet = eol.decode().join(markup.strip("\r\n").splitlines())
    if _ascii_compatible(codec):
        return _insert_html(content, snippet.encode("ascii" if ascii_only else codec.name, "xmlcharrefreplace"), eol)
    text = content.decode(codec.name)  # strict: a part we cannot read we do not rewrite
    new = _insert_html(text.encode("utf-8"), snippet.encode("utf-8"), eol).decode("utf-8")
    return new.encode(codec.name, "xmlcharrefreplace")


def _plain_content(content: bytes, codec: codecs.CodecInfo, part: _Part, text: str,
                   eol: bytes) -> tuple[bytes | None, str | None]:
    params = {str(k).lower(): str(v).lower() for k, v in (part.headers.get_params() or [])[1:]}
    flowed = params.get("format") == "flowed"
    block = eol.decode().join(_plain_block(text, flowed, params.get("delsp") == "yes"))
    if _ascii_compatible(codec):
        try:
            return _append(content, block.encode(codec.name), eol, blank_line=True), None
        except UnicodeEncodeError:
            pass
        original = _transcodable(content, codec)
        if original is not None:  # the charset cannot carry the disclaimer: the part becomes UTF-8
            return _append(original.encode("utf-8"), block.encode("utf-8"), eol, blank_line=True), "utf-8"
        # Not valid in its own charset, so it cannot be transcoded: keep its bytes, say it in ASCII.
        return _append(content, _ascii_approximation(block).encode("ascii"), eol, blank_line=True), None
    original_text = content.decode(codec.name)
    new_text = _append(original_text.encode("utf-8"), block.encode("utf-8"), eol,
                       blank_line=True).decode("utf-8")
    try:
        return new_text.encode(codec.name), None
    except UnicodeEncodeError:
        return new_text.encode("utf-8"), "utf-8"


def _transcodable(content: bytes, codec: codecs.CodecInfo) -> str | None:
    # Mail labelled ISO-8859-1 is read as Windows-1252 by every client (WHATWG), so read it that way.
    tries = ("cp1252", codec.name) if codec.name == "iso8859-1" else (codec.name,)
    for name in tries:
        try:
            return content.decode(name)
        except UnicodeDecodeError:
            continue
    return None


# --- splicing ----------------------------------------------------------------------------------

_CHARSET_PARAM = re.compile(rb"(?i)(;\s*charset\s*=\s*)(\"[^\"]*\"|[^\s;()\"]+)")


def _header_splices(raw: bytes, part: _Part, rw: _Rewrite, eol: bytes, top: bool) -> list[tuple[int, int, bytes]]:
    splices: list[tuple[int, int, bytes]] = []
    named = {name: (s, e) for name, s, e in reversed(part.fields)}  # the first of each name wins
    added = b""
    if rw.charset:
        if "content-type" in named:
            s, e = named["content-type"]
            value = raw[s:e]
            if _CHARSET_PARAM.search(value):
                new = _CHARSET_PARAM.sub(lambda m: m.group(1) + (b'"%s"' if m.group(2)[:1] == b'"' else b"%s")
                                         % rw.charset.encode(), value, count=1)
            else:
                stripped = value.rstrip(b"\r\n")
                sep = b" " if stripped.rstrip().endswith(b";") else b"; "
                new = stripped.rstrip() + sep + b"charset=" + rw.charset.encode() + value[len(stripped):]
            splices.append((s, e, new))
        else:
            added += b"Content-Type: text/plain; charset=" + rw.charset.encode() + eol
    if rw.cte:
        line = b"Content-Transfer-Encoding: " + rw.cte.encode() + eol
        if "content-transfer-encoding" in named:
            s, e = named["content-transfer-encoding"]
            splices.append((s, e, line))
        else:
            added += line
    if added and top and "mime-version" not in named:
        added = b"MIME-Version: 1.0" + eol + added
    if added:
        splices.append((part.header_end, part.header_end, added))
    return splices


def _splice(raw: bytes, splices: list[tuple[int, int, bytes]]) -> bytes:
    out, pos = [], 0
    for s, e, new in sorted(splices, key=lambda x: (x[0], x[1])):
        out += [raw[pos:s], new]
        pos = e
    out.append(raw[pos:])
    return b"".join(out)


# --- the entry point -----------------------------------------------------------------------------

def add_disclaimer(raw: bytes, text: str, html: str) -> DisclaimerResult:
    """`raw` with the plain `text` at the end of each text/plain body and the `html` snippet before
    </body> in each text/html body (see _bodies for which), plus the X-DLP-Disclaimer marker;
    or `raw` unchanged and the reason. Never raises."""
    try:
        return _add(raw, text, html)
    except Exception:  # a malformed message is answered, never crashed on
        return DisclaimerResult(raw, False, NotAdded.MALFORMED)


def _add(raw: bytes, text: str, html: str) -> DisclaimerResult:
    unchanged = lambda reason: DisclaimerResult(raw, False, reason)  # noqa: E731
    try:
        root = _parse(raw, 0, len(raw))
    except _Malformed:
        return unchanged(NotAdded.MALFORMED)
    if not root.headers.keys():  # no header fields: not a message
        return unchanged(NotAdded.MALFORMED)
    if root.headers.get(MARKER) is not None:
        return unchanged(NotAdded.ALREADY_PRESENT)
    protected = _protection(raw, root)
    if protected:
        return unchanged(protected)
    bodies = [p for p in _bodies(root) if (text if p.ctype == "text/plain" else html).strip()]
    if not bodies:
        return unchanged(NotAdded.NO_TEXT_PART)
    eol = _line_ending(raw[:root.header_end or len(raw)], b"\r\n")
    headers: list[tuple[int, int, bytes]] = []
    bodies_out: list[tuple[int, int, bytes]] = []
    outcomes = []
    for part in bodies:
        outcome, rw = _rewrite(raw, part, text, html, eol)
        outcomes.append(outcome)
        if rw is None:
            continue
        headers += _header_splices(raw, part, rw, eol, top=part is root)
        lead = b"" if part.separated else eol  # a part of headers only gains its blank line
        bodies_out.append((part.body_start, part.end, lead + rw.body))
    if not bodies_out:
        return unchanged(NotAdded.ALREADY_PRESENT if _PRESENT in outcomes else NotAdded.MALFORMED)
    headers.append((root.header_end, root.header_end, f"{MARKER}: {MARKER_VALUE}".encode() + eol))
    # Header insertions before body splices that start at the same place (a message of headers only).
    return DisclaimerResult(_splice(raw, headers + bodies_out), True, None, outcomes.count(_ADDED))
