"""RTF documents: the text a person sees, with the title, subject, keywords and custom
properties of the document's info first, and embedded objects back as members.

One pass over the bytes, token by token, with a bounded stack of groups, so hostile input
(braces nested a million deep, a control word a megabyte long, \\binN past the end) costs
time linear in its size. Text in \\'hh escapes is decoded in the code page of the document
(\\ansicpgN, Windows-1252 by default) or of the font in use (\\fcharsetN); \\uN escapes are
Unicode, with their \\ucN fallback characters skipped. Destinations that hold no visible
text (font and colour tables, stylesheets, pictures, field instructions, anything marked
\\*) are skipped, except comments (\\annotation), which a person reads too.
"""

from __future__ import annotations

import codecs
import re

from detectors.attachments.core import Budget, Extraction, Unreadable, extractor

_TOKEN = re.compile(
    rb"\\([a-zA-Z]+)(-?[0-9]+)? ?"      # control word and its parameter
    rb"|\\'([0-9a-fA-F]{2})"            # a byte in the current code page
    rb"|\\(.)"                          # control symbol: \{ \} \\ \~ \- \_ \* and \<newline> (a paragraph)
    rb"|([{}])"
    rb"|[\r\n]+"                        # line breaks in the file are not in the text
    rb"|([^\\{}\r\n]+)",
    re.DOTALL,
)
_MAX_DEPTH = 512             # deeper groups share their parent's state
_MAX_PARAM_DIGITS = 10

# Destinations with nothing a person reads.
_SKIPPED = {
    b"fonttbl", b"colortbl", b"stylesheet", b"listtable", b"listoverridetable", b"revtbl", b"rsidtbl",
    b"generator", b"pict", b"themedata", b"colorschememapping", b"datastore", b"latentstyles", b"xmlnstbl",
    b"filetbl", b"pgdsctbl", b"fldinst", b"objclass", b"objname", b"nonshppict", b"shprslt", b"sp",
    b"xe", b"tc", b"bkmkstart", b"bkmkend", b"template", b"docvar", b"mmathPr", b"defchp", b"defpap",
    b"falt", b"panose", b"fontemb", b"fontfile", b"listtext", b"pntext", b"pntxta", b"pntxtb", b"atnid",
    b"atnauthor", b"atndate", b"atnref", b"wgrffmtfilter", b"mhtmltag", b"htmltag", b"formfield",
}
_INFO = {b"title": "Title", b"subject": "Subject", b"keywords": "Keywords", b"category": "Category",
         b"doccomm": "Comments", b"author": "Author", b"operator": "Last modified by", b"company": "Company",
         b"manager": "Manager"}
_HEAD_PROPERTIES = ("Title", "Subject", "Keywords", "Category")
_SYMBOLS = {b"par": "\n", b"line": "\n", b"sect": "\n", b"page": "\n", b"tab": "\t", b"cell": "\t",
            b"nestcell": " ", b"row": "\n", b"emdash": "\u2014", b"endash": "\u2013", b"lquote": "\u2018",
            b"rquote": "\u2019", b"ldblquote": "\u201c", b"rdblquote": "\u201d", b"bullet": "\u2022",
            b"emspace": " ", b"enspace": " ", b"qmspace": " "}
_CONTROL_SYMBOLS = {b"~": " ", b"_": "-", b"-": "", b"\\": "\\", b"{": "{", b"}": "}", b"\n": "\n", b"\r": "\n",
                    b"\t": "\t"}
# \fcharsetN -> code page (RTF 1.9.1, \fcharset)
_CHARSETS = {0: "", 1: "", 2: "cp1252", 77: "mac_roman", 128: "cp932", 129: "cp949", 130: "johab",
             134: "gbk", 136: "cp950", 161: "cp1253", 162: "cp1254", 163: "cp1258", 177: "cp1255",
             178: "cp1256", 186: "cp1257", 204: "cp1251", 222: "cp874", 238: "cp1250", 254: "cp437"}

# Where text goes: the document, its page headers or footers, a property, a custom
# property's name or value, embedded object data, or nowhere.
_BODY, _HEADER, _FOOTER, _SKIP, _FONTS, _PROPERTY, _PROPNAME, _PROPVALUE, _OBJDATA = range(9)
_PAGE_TOP = {b"header", b"headerl", b"headerr", b"headerf"}
_PAGE_BOTTOM = {b"footer", b"footerl", b"footerr", b"footerf"}


def _codec(codepage: int | str) -> str:
    name = f"cp{codepage}" if isinstance(codepage, int) else codepage
    try:
        return codecs.lookup(name).name
    except LookupError:
        return "cp1252"


class _Reader:
    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.body: list[str] = []
        self.texts: dict[int, list[str]] = {_BODY: self.body, _HEADER: [], _FOOTER: []}
        self.properties: dict[str, list[str]] = {}
        self.custom: list[tuple[str, str]] = []
        self.objects: list[bytes] = []
        self.pending = bytearray()      # \'hh bytes not yet decoded (double-byte code pages need pairs)
        self.fonts: dict[int, str] = {}
        self.font = -1                  # the font being defined in \fonttbl
        self.ansi = "cp1252"
        # Group state: (sink, property label, code page, \uc count)
        self.sink, self.label, self.codec, self.uc = _BODY, "", "", 1
        self.stack: list[tuple[int, str, str, int]] = []
        self.overflow = 0               # groups opened beyond _MAX_DEPTH
        self.skip = 0                   # \uN fallback characters still to skip
        self.text_for_sink: list[str] = []
        self.propname = ""
        self.hexdata: list[bytes] = []

    # -- text --
    def _flush(self) -> None:
        if self.pending:
            data = bytes(self.pending)
            self.pending.clear()
            self._emit(data.decode(self.codec or self.ansi, errors="replace"))

    def _emit(self, text: str) -> None:
        if self.sink in self.texts:
            self.texts[self.sink].append(text)
        elif self.sink in (_PROPERTY, _PROPNAME, _PROPVALUE):
            self.text_for_sink.append(text)

    def _text(self, data: bytes) -> None:
        if self.skip:
            cut = min(self.skip, len(data))
            self.skip -= cut
            data = data[cut:]
            if not data:
                return
        if self.sink == _OBJDATA:
            self.hexdata.append(data)
            return
        if self.sink in (_SKIP, _FONTS):
            return
        if data.isascii() and not self.pending:
            self._emit(data.decode("ascii"))
        else:
            self.pending += data        # 8-bit text where \'hh belongs: decode in the code page

    # -- groups --
    def open_group(self) -> None:
        self._flush()
        if len(self.stack) >= _MAX_DEPTH:
            self.overflow += 1
            return
        self.stack.append((self.sink, self.label, self.codec, self.uc))

    def close_group(self) -> None:
        self._flush()
        self.skip = 0
        if self.overflow:
            self.overflow -= 1
            return
        if not self.stack:
            return                      # more closing braces than opening: ignore
        sink, label = self.sink, self.label
        self.sink, self.label, self.codec, self.uc = self.stack.pop()
        if sink == self.sink and label == self.label:
            return
        # A destination ended: keep what it held.
        value = "".join(self.text_for_sink).strip() if sink in (_PROPERTY, _PROPNAME, _PROPVALUE) else ""
        if sink == _PROPERTY and value:
            self.properties.setdefault(label, []).append(value)
        elif sink == _PROPNAME:
            self.propname = value
        elif sink == _PROPVALUE and self.propname:
            self.custom.append((self.propname, value))
            self.propname = ""
        elif sink == _OBJDATA:
            self._object(b"".join(self.hexdata))
            self.hexdata.clear()
        if sink in (_PROPERTY, _PROPNAME, _PROPVALUE):
            self.text_for_sink.clear()

    def _object(self, hexdata: bytes) -> None:
        digits = re.sub(rb"[^0-9a-fA-F]", b"", hexdata)
        self.budget.take_bytes(len(digits) // 2)
        data = bytes.fromhex(digits[: len(digits) // 2 * 2].decode("ascii"))
        native = _ole1_native(data)
        if native:
            self.objects.append(native)

    def destination(self, word: bytes, starred: bool) -> bool:
        """Start a destination group if `word` names one; False when it does not."""
        if self.label == "info" and word in _INFO:
            self.sink, self.label = _PROPERTY, _INFO[word]
        elif self.label == "userprops" and word in (b"propname", b"staticval"):
            self.sink = _PROPNAME if word == b"propname" else _PROPVALUE
        elif self.sink in (_SKIP, _OBJDATA):
            return True                 # inside a skipped group everything is skipped
        elif word == b"fonttbl":
            self.sink = _FONTS
        elif self.sink == _FONTS:
            if not (starred or word in _SKIPPED):
                return False            # {\f1\fcharset204 ...}: a font's definition
            self.sink = _SKIP
        elif word in (b"info", b"userprops"):
            self.sink, self.label = _SKIP, word.decode()
        elif word == b"objdata":
            self.sink = _OBJDATA
            self.hexdata.clear()
        elif word == b"annotation":
            pass                        # a comment: read like the body
        elif word in _PAGE_TOP or word in _PAGE_BOTTOM:
            self.sink = _HEADER if word in _PAGE_TOP else _FOOTER
        elif word in _SKIPPED or starred:
            self.sink = _SKIP
        else:
            return False
        if self.sink in (_PROPERTY, _PROPNAME, _PROPVALUE):
            self.text_for_sink.clear()
        return True

    # -- control words --
    def control(self, word: bytes, param: int | None, first_in_group: bool, starred: bool) -> None:
        if first_in_group or starred:
            self._flush()
            if self.destination(word, starred):
                return
        if word == b"u" and param is not None:
            self._flush()
            self._emit(chr(param % 65536))
            self.skip = self.uc         # the fallback for readers without Unicode: \'hh or plain text
            return
        if word == b"uc" and param is not None:
            self.uc = max(0, min(param, 8))
        elif word == b"ansicpg" and param:
            self.ansi = _codec(param)
        elif word in (b"mac", b"pc", b"pca"):
            self.ansi = {b"mac": "mac_roman", b"pc": "cp437", b"pca": "cp850"}[word]
        elif word == b"f" and param is not None:
            if self.sink == _FONTS:
                self.font = param
            else:
                self._flush()
                self.codec = self.fonts.get(param, "")
        elif word == b"fcharset" and param is not None and self.sink == _FONTS and self.font >= 0:
            codepage = _CHARSETS.get(param, "")
            self.fonts[self.font] = _codec(codepage) if codepage else ""
        elif word == b"cpg" and param and self.sink == _FONTS and self.font >= 0:
            self.fonts[self.font] = _codec(param)
        elif word in _SYMBOLS and self.sink in self.texts:
            self._flush()
            out = self.texts[self.sink]
            if word == b"row" and out and out[-1] == "\t":
                out[-1] = "\n"           # the row's last \cell already ended its last field
            else:
                out.append(_SYMBOLS[word])
        elif word in (b"par", b"line", b"tab") and self.sink in (_PROPERTY, _PROPVALUE):
            self._emit(" ")

    def symbol(self, char: bytes) -> None:
        text = _CONTROL_SYMBOLS.get(char)
        if text is not None:
            self._flush()
            self._emit(text)

    def hex_byte(self, value: int) -> None:
        if self.skip:
            self.skip -= 1
            return
        if self.sink in self.texts or self.sink in (_PROPERTY, _PROPNAME, _PROPVALUE):
            self.pending.append(value)

    # -- the document --
    def read(self, data: bytes) -> None:
        pos, end = 0, len(data)
        first_in_group = False
        starred = False
        count = 0
        match = _TOKEN.match
        while pos < end:
            count += 1
            if not count & 0xFFF:
                self.budget.check_time()
            m = match(data, pos)
            if m is None:               # a lone backslash at the very end
                break
            pos = m.end()
            word, param, hexbyte, symbol, brace, text = m.groups()
            if word is not None:
                value = int(param) if param is not None and len(param) <= _MAX_PARAM_DIGITS else None
                if word == b"bin":
                    pos = min(end, pos + max(value or 0, 0))     # raw binary: not text
                elif len(word) <= 32:
                    self.control(word, value, first_in_group, starred)
                first_in_group = starred = False
            elif hexbyte is not None:
                self.hex_byte(int(hexbyte, 16))
                first_in_group = starred = False
            elif symbol is not None:
                if symbol == b"*":
                    starred = True
                else:
                    self.symbol(symbol)
                    first_in_group = starred = False
            elif brace is not None:
                if brace == b"{":
                    self.open_group()
                    first_in_group = True
                else:
                    self.close_group()
                    first_in_group = False
                starred = False
            elif text is not None:
                self._text(text)
                first_in_group = starred = False
        self._flush()

    def text(self) -> str:
        """Properties that carry markings and page headers first, page footers last (where the
        marking detector reads a document's marking), as for Office documents."""
        body, top, bottom = (_lines(self.texts[sink]) for sink in (_BODY, _HEADER, _FOOTER))
        props = {label: " ".join(values) for label, values in self.properties.items()}
        head = [f"{label}: {props[label]}" for label in _HEAD_PROPERTIES if props.get(label)]
        labels = [f"Sensitivity label: {value}" for name, value in self.custom
                  if re.fullmatch(r"MSIP_Label_.+_Name", name, re.IGNORECASE) and value]
        rest = [f"{label}: {value}" for label, value in props.items() if label not in _HEAD_PROPERTIES and value]
        rest += [f"{name}: {value}" for name, value in self.custom]
        lines = labels + head + list(dict.fromkeys(top)) + rest + body + list(dict.fromkeys(bottom))
        return "\n".join(lines).strip() + "\n"


def _lines(pieces: list[str]) -> list[str]:
    text = "".join(pieces)
    # \uN escapes of characters beyond U+FFFF come as UTF-16 surrogate pairs: join them.
    text = text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    return [line.rstrip() for line in text.split("\n") if line.strip()]


def _ole1_native(data: bytes) -> bytes:
    """The embedded file inside an OLE 1.0 object (\\objdata): [MS-OLEDS] 2.2.4 ObjectHeader,
    then NativeDataSize and NativeData. Empty when it is not an embedded object."""
    import struct

    try:
        _version, format_id = struct.unpack_from("<II", data, 0)
        if format_id != 2:          # 2 = embedded; 1 = linked (no data here)
            return b""
        pos = 8
        for _ in range(3):          # ClassName, TopicName, ItemName: length-prefixed strings
            (length,) = struct.unpack_from("<I", data, pos)
            pos += 4 + length
        (size,) = struct.unpack_from("<I", data, pos)
        return data[pos + 4: pos + 4 + size]
    except struct.error:
        return b""


@extractor("text/rtf", "application/rtf")
def read_rtf(data: bytes, budget: Budget) -> Extraction:
    if not data[:64].lstrip().startswith(b"{\\rtf"):
        raise Unreadable("not an RTF document")
    reader = _Reader(budget)
    reader.read(data)
    members = [(f"object{i}.bin", obj) for i, obj in enumerate(reader.objects, 1)]
    return Extraction(text=reader.text(), members=members)
