"""A message's MIME structure as byte ranges of its bytes, found the way the email package finds it.

`email.message_from_bytes` keeps every line of a message as a string, more than once
over, so a 20 MB message costs well over 100 MB. `parse` finds the same parts: it follows
email.feedparser with the compat32 policy step for step (the same header fields, the same
delimiter lines, outer delimiters ending inner parts, the same tolerance of damage), but
only header fields become strings (read by the email package's compat32 policy, into its
Message). A body stays a range of the original bytes until `decoded_body` decodes it,
from a memoryview, for whoever asks.

It never raises on any input, never copies a body nobody asked for, and never goes more
than MAX_DEPTH parts deep: a multipart or message/* part below that is marked `too_deep`
and its content left unread.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass, field
from email.message import Message as HeaderFields
from email.policy import compat32

MAX_DEPTH = 50          # nesting beyond this is an attack or a broken generator, not mail

Range = tuple[int, int]

_HEADER_LINE = re.compile(rb"From |[\041-\071\073-\176]*:|[\t ]")      # feedparser.headerRE
_LINE_END = re.compile(rb"\r\n|\r|\n")
_LINE_END_STR = re.compile(r"(\r\n|\r|\n)\Z")                       # feedparser.NLCRE_eol
_DELIMITER_TAIL = re.compile(rb"(--)?[ \t]*(?:\r\n|\r|\n)?")           # after --boundary (feedparser's boundaryre)
_BLANK_LINE_AFTER = re.compile(rb"(?:\r\n|\r(?!\n)|\n)(?=[\r\n])")     # a line ending followed by an empty line
_BLANK = b""            # the false-end matcher of message/delivery-status blocks: an empty line


@dataclass(eq=False)
class Part:
    """One MIME entity: its header fields, and where its content lies in the message's bytes."""

    headers: HeaderFields                  # compat32 message holding the header fields only
    content_type: str                      # headers.get_content_type(), its default as feedparser sets it
    start: int                             # first byte after the header block
    end: int = 0                           # just after the content; in a multipart, the line
                                           # ending before the next delimiter is the delimiter's
    body: list[Range] = field(default_factory=list)   # the payload, when `children` is None
    children: list[Part] | None = None     # a multipart's parts; a message/* part's enclosed message
    boundary_missing: bool = False         # multipart without a boundary parameter
    start_boundary_missing: bool = False   # multipart whose first delimiter line never came
    too_deep: bool = False                 # below MAX_DEPTH: content left unread

    @property
    def maintype(self) -> str:
        return self.content_type.partition("/")[0]


def parse(raw: bytes, max_depth: int = MAX_DEPTH) -> Part:
    """The MIME tree of `raw`, as email.message_from_bytes(raw, policy=compat32) would build it."""
    return _Parser(raw, max_depth).part("", 0)


def decoded_body(raw: bytes, part: Part) -> tuple[bytes, int]:
    """The payload as compat32 get_payload(decode=True) returns it, and how many base64 defects
    that decoding records (damaged base64 is decoded as far as it goes, as the email package does)."""
    cte = str(part.headers.get("content-transfer-encoding", "")).lower()
    ranges = part.body
    if cte == "quoted-printable":   # what quopri.decodestring does
        return binascii.a2b_qp(_view(raw, *ranges[0]) if len(ranges) == 1 else _join(raw, ranges)), 0
    if cte == "base64":
        if len(ranges) == 1 and _clean_base64(raw, *ranges[0]):
            try:
                return binascii.a2b_base64(_view(raw, *ranges[0])), 0
            except binascii.Error:
                pass
    elif cte not in _UUENCODE:
        return _join(raw, ranges), 0
    # Damaged base64 and uuencode are rare and small: the email package itself decodes them.
    message = HeaderFields(policy=compat32)
    message.set_raw("Content-Transfer-Encoding", part.headers.get("content-transfer-encoding", ""))
    message.set_payload(_join(raw, ranges).decode("ascii", "surrogateescape"))
    data = message.get_payload(decode=True)
    damaged = sum(1 for d in message.defects if type(d).__name__.startswith("InvalidBase64"))
    return (data if isinstance(data, bytes) else b""), damaged


def decode_base64(raw: bytes, start: int, end: int) -> bytes:
    """raw[start:end] base64-decoded, skipping characters outside the alphabet; b"" when it cannot be."""
    try:
        return binascii.a2b_base64(_view(raw, start, end))
    except binascii.Error:
        return b""


def decode_quoted_printable(raw: bytes, start: int, end: int) -> bytes:
    return binascii.a2b_qp(_view(raw, start, end))


_UUENCODE = ("x-uuencode", "uuencode", "uue", "x-uue")


def _view(raw: bytes, start: int, end: int) -> memoryview:
    return memoryview(raw)[start:end]   # decoded from the message's own bytes, without copying them


# --- base64 that needs no repair --------------------------------------------------------------

_ALPHABET_AND_LINE_ENDS = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/\r\n"
_PADDING = re.compile(rb"(?:=[\r\n]*){1,2}")
_CHUNK = 1 << 20


def _clean_base64(raw: bytes, start: int, end: int) -> bool:
    """Only the alphabet between line breaks, at most two '=' at the end, whole 4-character groups:
    the email package decodes such a body without a defect, exactly as a2b_base64 does."""
    pad = raw.find(b"=", start, end)
    letters_end = end if pad < 0 else pad
    for i in range(start, letters_end, _CHUNK):  # a chunk at a time, so the check copies at most 1 MB
        if raw[i:min(i + _CHUNK, letters_end)].translate(None, _ALPHABET_AND_LINE_ENDS):
            return False
    if pad >= 0 and not _PADDING.fullmatch(raw, pad, end):
        return False
    return (end - start - raw.count(b"\r", start, end) - raw.count(b"\n", start, end)) % 4 == 0


def _join(raw: bytes, ranges: list[Range]) -> bytes:
    if len(ranges) == 1:
        return raw[ranges[0][0]:ranges[0][1]]
    return b"".join(raw[s:e] for s, e in ranges)


def _add(ranges: list[Range], start: int, end: int) -> None:
    if start >= end:
        return
    if ranges and ranges[-1][1] == start:
        ranges[-1] = (ranges[-1][0], end)
    else:
        ranges.append((start, end))


def _without_line_end(raw: bytes, ranges: list[Range]) -> list[Range]:
    """`ranges` less one final line ending (CRLF, CR or LF), as feedparser strips it from a part's payload."""
    ranges = [r for r in ranges if r[0] < r[1]]
    tail = b""   # the payload's last two bytes, which may lie in two ranges
    for s, e in reversed(ranges):
        tail = raw[max(s, e - (2 - len(tail))):e] + tail
        if len(tail) == 2:
            break
    drop = 2 if tail[-2:] == b"\r\n" else 1 if tail[-1:] in (b"\r", b"\n") else 0
    while drop and ranges:
        s, e = ranges.pop()
        cut = min(drop, e - s)
        drop -= cut
        if e - cut > s:
            ranges.append((s, e - cut))
    return ranges


def _delimiter(raw: bytes, start: int, end: int, separator: bytes) -> bool | None:
    """None when the line is not a delimiter of `separator` ("--" and the boundary); else True
    for the close delimiter."""
    if not raw.startswith(separator, start, end):
        return None
    tail = _DELIMITER_TAIL.fullmatch(raw, start + len(separator), end)
    return None if tail is None else bool(tail.group(1))


# --- the parser ----------------------------------------------------------------------------------

class _Parser:
    """email.feedparser.FeedParser._parsegen over byte ranges. A line is a (start, end) range,
    its line ending (CRLF, CR or LF) included. Lines are read one at a time only in header blocks
    and at delimiters; a body is skipped to the next line that could end it."""

    def __init__(self, raw: bytes, max_depth: int):
        self.raw = raw
        self.size = len(raw)
        self.pos = 0                       # the next line, unless a line was pushed back
        self.pushed: list[Range] = []      # lines pushed back out of order, read first (last first)
        self.ends: list[bytes | None] = []  # the false-end matchers: separators, or _BLANK
        self.end_separators: list[bytes] = []
        self.ends_at_blank = False
        self.last: Part | None = None      # feedparser's _last: the part whose payload loses its line ending
        self.max_depth = max_depth
        self._found: dict[bytes, tuple[int, int]] = {}   # separator: (searched from, its next line)

    # feedparser.BufferedSubFile

    def readline(self) -> Range | None:
        """The next line, or None at the (possibly false) end."""
        if self.pushed:
            line = self.pushed[-1]
            if self._ends_here(*line):
                return None
            return self.pushed.pop()
        start = self.pos
        if start >= self.size:
            return None
        m = _LINE_END.search(self.raw, start)
        end = m.end() if m else self.size
        if self._ends_here(start, end):
            return None
        self.pos = end
        return start, end

    def unread(self, line: Range) -> None:
        if not self.pushed and line[1] == self.pos:
            self.pos = line[0]
        else:
            self.pushed.append(line)

    def position(self) -> int:
        return self.pushed[-1][0] if self.pushed else self.pos

    def consume(self, separator: bytes | None = None) -> list[Range]:
        """Every line up to the false end (or a delimiter of `separator`), read and returned."""
        separators, blank = self.end_separators, self.ends_at_blank
        if separator is not None:
            separators = [*separators, separator]
        out: list[Range] = []
        while self.pushed:
            line = self.pushed[-1]
            if self._stops(*line, separators, blank):
                return out
            self.pushed.pop()
            _add(out, *line)
        stop = self._next_stop(self.pos, separators, blank)
        _add(out, self.pos, stop)
        self.pos = stop
        return out

    def push_end(self, matcher: bytes | None) -> None:
        self.ends.append(matcher)
        self._ends_changed()

    def pop_end(self) -> None:
        self.ends.pop()
        self._ends_changed()

    def _ends_changed(self) -> None:
        self.end_separators = [m for m in self.ends if m]
        self.ends_at_blank = _BLANK in self.ends

    def _ends_here(self, start: int, end: int) -> bool:
        return self._stops(start, end, self.end_separators, self.ends_at_blank) if self.ends else False

    def _stops(self, start: int, end: int, separators: list[bytes], blank: bool) -> bool:
        if blank and self.raw[start] in b"\r\n":
            return True
        return any(_delimiter(self.raw, start, end, s) is not None for s in separators)

    def _next_stop(self, pos: int, separators: list[bytes], blank: bool) -> int:
        """Start of the first line at or after `pos` (a line start) that ends the content; the size if none."""
        raw, size = self.raw, self.size
        while pos < size:
            candidate = min((self._line_beginning(s, pos) for s in separators), default=size)
            if blank:
                if raw[pos] in b"\r\n":
                    candidate = pos
                else:
                    m = _BLANK_LINE_AFTER.search(raw, pos, candidate)
                    candidate = m.end() if m else candidate
            if candidate >= size:
                return size
            m = _LINE_END.search(raw, candidate)
            end = m.end() if m else size
            if self._stops(candidate, end, separators, blank):
                return candidate
            pos = end
        return size

    def _line_beginning(self, separator: bytes, pos: int) -> int:
        """Start of the first line at or after `pos` (a line start) beginning with `separator`; the size if none."""
        searched = self._found.get(separator)
        if searched is not None and searched[0] <= pos <= searched[1]:
            return searched[1]  # remembered: lines that only look like delimiters are skipped once
        raw, at = self.raw, pos
        while True:
            at = raw.find(separator, at)
            if at < 0:
                at = self.size
                break
            if at == pos or raw[at - 1] in b"\r\n":
                break
            at += 1
        self._found[separator] = (pos, at)
        return at

    # feedparser.FeedParser

    def part(self, parent_type: str, depth: int) -> Part:
        raw = self.raw
        lines: list[Range] = []
        while True:
            line = self.readline()
            if line is None:
                break
            if not _HEADER_LINE.match(raw, *line):
                if raw[line[0]] not in b"\r\n":   # not the blank line: the body has begun
                    self.unread(line)
                break
            lines.append(line)
        start = self.position()
        headers = self._headers(lines)
        if parent_type == "multipart/digest":
            headers.set_default_type("message/rfc822")
        ctype = headers.get_content_type()
        maintype = ctype.partition("/")[0]
        part = Part(headers, ctype, start)
        self.last = part
        if maintype in ("multipart", "message") and depth >= self.max_depth:
            part.too_deep = True
            part.body = self.consume()
        elif ctype == "message/delivery-status":
            # Blocks of header fields, each a message of its own, separated by empty lines.
            part.children = []
            while True:
                self.push_end(_BLANK)
                part.children.append(self.part(ctype, depth + 1))
                self.pop_end()
                self.readline()
                line = self.readline()
                if line is None:
                    break
                self.unread(line)
        elif maintype == "message":
            part.children = [self.part(ctype, depth + 1)]
        elif maintype == "multipart":
            self._multipart(part, depth)
        else:
            part.body = self.consume()
        part.end = max(part.start, self.position())
        return part

    def _headers(self, lines: list[Range]) -> HeaderFields:
        """The header fields of a block, read as feedparser._parse_headers reads them: compat32 turns
        each field's lines into its name and value; a "From " line at the start is the Unix envelope,
        one ending the block is taken for the body's first line, any other one is left out."""
        headers = HeaderFields(policy=compat32)
        field_lines: list[str] = []
        for number, (start, end) in enumerate(lines):
            line = self.raw[start:end].decode("ascii", "surrogateescape")
            if line[0] in " \t":
                if field_lines:  # a continuation with no field to continue is dropped
                    field_lines.append(line)
                continue
            if field_lines:
                headers.set_raw(*compat32.header_source_parse(field_lines))
                field_lines = []
            if line.startswith("From "):
                if number == 0:
                    headers.set_unixfrom(_LINE_END_STR.sub("", line))
                elif number == len(lines) - 1:
                    self.unread((start, end))
                    return headers
                continue
            if line.find(":") > 0:  # a line beginning ":" names no field: dropped
                field_lines = [line]
        if field_lines:
            headers.set_raw(*compat32.header_source_parse(field_lines))
        return headers

    def _multipart(self, part: Part, depth: int) -> None:
        boundary = part.headers.get_boundary()
        if boundary is None:
            part.boundary_missing = True
            part.body = self.consume()
            return
        try:
            separator: bytes | None = ("--" + boundary).encode("ascii", "surrogateescape")
        except UnicodeEncodeError:
            separator = None   # an RFC 2231 boundary decoded to characters no line of bytes can hold
        raw = self.raw
        part.children = []
        preamble: list[Range] = []
        in_preamble = True
        closed = False
        while True:
            if in_preamble:
                for r in self.consume(separator):
                    _add(preamble, *r)
            line = self.readline()
            if line is None:
                break
            close = None if separator is None else _delimiter(raw, *line, separator)
            if close is None:              # not a delimiter: feedparser asserts this only happens in the preamble
                _add(preamble, *line)
                continue
            if close:
                closed = True
                break
            if in_preamble:
                in_preamble = False
                self.unread(line)
                continue
            while True:                    # repeated delimiter lines make no empty parts
                line = self.readline()
                if line is None or _delimiter(raw, *line, separator) is None:
                    if line is not None:
                        self.unread(line)
                    break
            self.push_end(separator)
            child = self.part(part.content_type, depth + 1)
            part.children.append(child)
            self._strip_last()
            child.end = _before_line_end(raw, child.start, child.end)
            self.pop_end()
            self.last = part
        if in_preamble:
            part.start_boundary_missing = True
            part.children = None
            part.body = preamble
            self.consume()
            return
        if closed:
            self.consume()  # the epilogue

    def _strip_last(self) -> None:
        """RFC 2046: the line ending before a delimiter belongs to the delimiter (feedparser strips it
        from the payload of its _last part, a multipart's epilogue aside)."""
        last = self.last
        if last is not None and last.children is None and last.maintype != "multipart":
            last.body = _without_line_end(self.raw, last.body)


def _before_line_end(raw: bytes, start: int, end: int) -> int:
    """`end` moved back over one line ending, not before `start`."""
    if end - 2 >= start and raw[end - 2:end] == b"\r\n":
        return end - 2
    if end - 1 >= start and raw[end - 1] in b"\r\n":
        return end - 1
    return end
