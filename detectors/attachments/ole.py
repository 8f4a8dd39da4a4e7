"""Legacy Office files (.doc, .xls, .ppt) and other OLE2 compound files (CFB), read with olefile.

What is read, and how exactly:
- Every compound file: its document properties (title, subject, author, keywords,
  comments, category, manager, company) and custom properties, sensitivity labels
  first, as `Title: ...` lines at the top where the marking detector reads.
- Word 97-2003 (.doc): the text through the piece table, exactly as Word stores it:
  page headers first, body, footnotes, comments, endnotes and text boxes, page footers
  last; a table row per line with its cells tab-separated (row ends found from the
  paragraph properties); field codes are dropped and their results kept. Word 6/95 files
  and files whose piece table is damaged are *approximated* from the printable runs of
  the WordDocument stream, and reported as not fully inspected.
- Excel 97-2003 (.xls, BIFF8; BIFF5 labels too): every sheet's cells row by row, from the
  shared string table, labels, numbers (dates as dd/mm/yyyy) and the cached results of
  formulas; page headers first, footers last. Text in charts, drawings and comments is
  not read.
- PowerPoint 97-2003 (.ppt): the text of slides and notes (text atoms), and the header
  and footer text; masters' placeholder prompts and programs' private tags are skipped.
- Embedded objects (Word's ObjectPool, Excel's MBD storages, PowerPoint's ExOleObjStg,
  packaged files) come back as members, or are read in place when they are storages;
  equations and linked objects hold no text; an object of another kind, like a compound
  file of a kind not listed here, cannot be inspected.
- Outlook .msg files are handed to outlook_msg.

Encryption, as a person meets it (a password is needed to open the file):
- OOXML in a CFB container (EncryptionInfo + EncryptedPackage): encrypted, or rights
  protected when the DRM data space is present.
- Word: the FIB's fEncrypted bit (WordDocument offset 0x0A, bit 0x0100), which also
  covers XOR obfuscation (fObfuscated).
- Excel: a FILEPASS record (0x002F) in the workbook globals. Workbooks that Excel
  encrypts with its default password ("VelvetSweatshop", used by structure protection)
  open without one but are reported encrypted all the same: they cannot be read here.
- PowerPoint: an "EncryptedSummary" stream, or the Current User atom's header token
  0xF3D1C4DF (set when a CryptSession10Container encrypts the document stream).
A password to modify (write reservation) is not encryption: those files are read.

olefile is opened with DEFECT_INCORRECT so a malformed container is refused rather than
half-read; every stream read is charged to the message's byte budget. Never writes.
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from detectors.attachments.core import Budget, Extraction, LimitExceeded, Unreadable, extractor

OLE_TYPES = (
    "application/x-ole-storage", "application/CDFV2", "application/CDFV2-corrupt", "application/msword",
    "application/vnd.ms-excel", "application/vnd.ms-powerpoint", "application/vnd.ms-office",
    "application/encrypted", "application/CDFV2-encrypted", "application/vnd.ms-word",
)


# What a damaged stream makes these readers raise: its structures point outside it.
DAMAGE = (struct.error, IndexError, KeyError, ValueError, UnicodeError, OSError, zlib.error, OverflowError)


@extractor(*OLE_TYPES)
def read_ole(data: bytes, budget: Budget) -> Extraction:
    ole = open_cfb(data)
    try:
        return read_storage(Storage.root(ole, budget, len(data)))
    except DAMAGE as e:
        raise Unreadable(f"a damaged compound file ({type(e).__name__})") from None
    finally:
        ole.close()


def open_cfb(data: bytes) -> Any:
    """An olefile.OleFileIO that refuses malformed containers (Unreadable)."""
    import olefile

    try:
        return olefile.OleFileIO(io.BytesIO(data), raise_defects=olefile.DEFECT_INCORRECT)
    except Exception as e:
        raise Unreadable(f"not a readable OLE compound file ({type(e).__name__})") from None


@dataclass(frozen=True)
class Storage:
    """One storage of a compound file: the root, or a storage inside it (an embedded object)."""

    ole: Any
    path: tuple[str, ...]
    entry: Any
    budget: Budget
    file_size: int
    depth: int = 0

    @classmethod
    def root(cls, ole: Any, budget: Budget, file_size: int) -> Storage:
        return cls(ole, (), ole.root, budget, file_size)

    def children(self) -> dict[str, Any]:
        return {kid.name: kid for kid in self.entry.kids}

    def has(self, name: str) -> bool:
        return name in self.children()

    def is_storage(self, name: str) -> bool:
        kid = self.children().get(name)
        return kid is not None and kid.entry_type == 1  # STGTY_STORAGE

    def read(self, name: str) -> bytes:
        kid = self.children().get(name)
        if kid is None or kid.entry_type != 2:  # STGTY_STREAM
            return b""
        self.budget.check_time()
        if kid.size > self.file_size:           # sectors used twice: a stream cannot be larger than its file
            raise Unreadable(f"the stream {name!r} claims to be larger than the whole file")
        self.budget.take_bytes(kid.size)
        return self.ole.openstream([*self.path, name]).read()

    def sub(self, name: str) -> Storage:
        if self.depth >= self.budget.limits.max_depth:
            raise LimitExceeded(f"objects nested more than {self.budget.limits.max_depth} deep")
        return Storage(self.ole, (*self.path, name), self.children()[name], self.budget, self.file_size,
                       self.depth + 1)


@dataclass
class Document:
    """What one reader found, before it is assembled into text."""

    top: list[str] = field(default_factory=list)       # page headers
    body: list[str] = field(default_factory=list)
    bottom: list[str] = field(default_factory=list)    # page footers
    members: list[tuple[str, bytes]] = field(default_factory=list)
    encrypted: str = ""
    incomplete: list[str] = field(default_factory=list)


def read_storage(st: Storage) -> Extraction:
    """Read whatever kind of document the storage holds."""
    names = st.children()
    if "EncryptedPackage" in names:
        drm = _has_path(st, ("\x06DataSpaces", "TransformInfo", "DRMEncryptedTransform"))
        return Extraction(text=_assemble(_properties(st), Document()),
                          encrypted="Office document protected by Information Rights Management" if drm
                          else "Office document encrypted with a password")
    if "__properties_version1.0" in names or any(n.startswith("__substg1.0_") for n in names):
        from detectors.attachments.outlook_msg import read_message_storage

        return read_message_storage(st)
    props = _properties(st)
    doc = Document()
    try:
        if "WordDocument" in names:
            doc = _word(st)
        elif "Workbook" in names or "Book" in names:
            doc = _excel(st, "Workbook" if "Workbook" in names else "Book")
        elif "PowerPoint Document" in names:
            doc = _powerpoint(st)
        else:
            doc.incomplete.append("an OLE compound file of a kind the gateway cannot read")
        if not doc.encrypted:
            _embedded_objects(st, doc)
    except LimitExceeded as e:  # keep what was read: a marking or a number already found still counts
        doc.incomplete.append(str(e))
    return Extraction(text=_assemble(props, doc), members=doc.members, encrypted=doc.encrypted,
                      incomplete="; ".join(dict.fromkeys(doc.incomplete)))


def _has_path(st: Storage, path: tuple[str, ...]) -> bool:
    node = st.entry
    for name in path:
        node = next((k for k in node.kids if k.name == name), None)
        if node is None:
            return False
    return True


def _assemble(props: list[str], doc: Document) -> str:
    """Properties and page headers first, footers last: where the marking detector reads."""
    return "\n".join([*props, *_unique(doc.top), *doc.body, *_unique(doc.bottom)]).strip("\n")


def _unique(lines: list[str]) -> list[str]:
    return list(dict.fromkeys(line for line in lines if line.strip()))


# ---------------------------------------------------------------------------------------
# Document properties ([MS-OLEPS] property sets)

_SUMMARY = {2: "Title", 3: "Subject", 4: "Author", 5: "Keywords", 6: "Comments"}
_DOC_SUMMARY = {2: "Category", 14: "Manager", 15: "Company"}
_HEAD = ("Sensitivity label", "Title", "Subject", "Keywords", "Category")
_LABEL_NAME = re.compile(r"MSIP_Label_[0-9A-Fa-f{}-]+_Name", re.IGNORECASE)


def _properties(st: Storage) -> list[str]:
    """Property lines: sensitivity labels, title, subject, keywords, category; then the rest."""
    found: list[tuple[str, str]] = []
    try:
        for fmtid, props, _ in _property_sets(st.read("\x05SummaryInformation")):
            if fmtid == _FMTID_SUMMARY:
                found += [(_SUMMARY[k], v) for k, v in props.items() if k in _SUMMARY and isinstance(v, str)]
        for fmtid, props, names in _property_sets(st.read("\x05DocumentSummaryInformation")):
            if fmtid == _FMTID_DOC_SUMMARY:
                found += [(_DOC_SUMMARY[k], v) for k, v in props.items() if k in _DOC_SUMMARY and isinstance(v, str)]
            elif fmtid == _FMTID_USER_DEFINED:
                for k, v in props.items():
                    if k in names and isinstance(v, (str, int, float)) and not isinstance(v, bool):
                        found.append((names[k], str(v)))
                        if _LABEL_NAME.fullmatch(names[k]) and isinstance(v, str):
                            found.append(("Sensitivity label", v))
    except LimitExceeded:
        raise
    except Exception:
        pass  # properties are a bonus: a damaged property set does not hide the document's text
    lines = [(label, " ".join(value.split())) for label, value in found if value and value.strip()]
    head = [f"{label}: {value}" for want in _HEAD for label, value in lines if label == want]
    rest = [f"{label}: {value}" for label, value in lines if label not in _HEAD]
    return _unique(head + rest)


_FMTID_SUMMARY = "f29f85e0-4ff9-1068-ab91-08002b27b3d9"
_FMTID_DOC_SUMMARY = "d5cdd502-2e9c-101b-9397-08002b2cf9ae"
_FMTID_USER_DEFINED = "d5cdd505-2e9c-101b-9397-08002b2cf9ae"
_MAX_PROPERTIES = 4096


def _property_sets(data: bytes) -> Iterator[tuple[str, dict[int, object], dict[int, str]]]:
    """(FMTID, {property id: value}, {property id: name from the dictionary}) for each section."""
    import uuid

    if len(data) < 48 or data[:2] != b"\xfe\xff":
        return
    count = min(struct.unpack_from("<I", data, 24)[0], 2)
    for i in range(count):
        fmtid = str(uuid.UUID(bytes_le=data[28 + 20 * i:44 + 20 * i]))
        (offset,) = struct.unpack_from("<I", data, 44 + 20 * i)
        section = data[offset:]
        if len(section) < 8:
            continue
        size, n = struct.unpack_from("<II", section, 0)
        section = section[:size]
        entries = [struct.unpack_from("<II", section, 8 + 8 * j) for j in range(min(n, _MAX_PROPERTIES))
                   if 16 + 8 * j <= len(section)]
        codepage = 1252
        for pid, off in entries:
            if pid == 1 and off + 6 <= len(section) and struct.unpack_from("<H", section, off)[0] == 2:
                codepage = struct.unpack_from("<H", section, off + 4)[0]
        props: dict[int, object] = {}
        names: dict[int, str] = {}
        for pid, off in entries:
            if pid == 0:
                names = _dictionary(section, off, codepage)
            elif pid > 1:
                value = _typed_value(section, off, codepage)
                if value is not None:
                    props[pid] = value
        yield fmtid, props, names


def _codec(codepage: int) -> str:
    return {1200: "utf-16-le", 65001: "utf-8", 0xFFFF & -535: "utf-8", 10000: "mac_roman"}.get(codepage,
                                                                                             f"cp{codepage}")


def _decode(raw: bytes, codepage: int) -> str:
    try:
        return raw.decode(_codec(codepage), errors="replace").split("\x00", 1)[0]
    except LookupError:
        return raw.decode("cp1252", errors="replace").split("\x00", 1)[0]


def _typed_value(section: bytes, off: int, codepage: int) -> object:
    if off + 8 > len(section):
        return None
    (vt,) = struct.unpack_from("<H", section, off)
    if vt == 0x1E:  # VT_LPSTR: byte count, then the string in the property set's code page
        (size,) = struct.unpack_from("<I", section, off + 4)
        return _decode(section[off + 8:off + 8 + size], codepage)
    if vt == 0x1F:  # VT_LPWSTR: character count, then UTF-16LE
        (chars,) = struct.unpack_from("<I", section, off + 4)
        return _decode(section[off + 8:off + 8 + 2 * chars], 1200)
    if vt == 0x02:
        return struct.unpack_from("<h", section, off + 4)[0]
    if vt in (0x03, 0x16):
        return struct.unpack_from("<i", section, off + 4)[0]
    if vt in (0x13, 0x17):
        return struct.unpack_from("<I", section, off + 4)[0]
    if vt == 0x05 and off + 12 <= len(section):
        return struct.unpack_from("<d", section, off + 4)[0]
    if vt == 0x0B:
        return bool(struct.unpack_from("<H", section, off + 4)[0])
    return None


def _dictionary(section: bytes, off: int, codepage: int) -> dict[int, str]:
    """The user-defined section's property names ([MS-OLEPS] 2.17)."""
    names: dict[int, str] = {}
    (count,) = struct.unpack_from("<I", section, off)
    pos = off + 4
    for _ in range(min(count, _MAX_PROPERTIES)):
        if pos + 8 > len(section):
            break
        pid, length = struct.unpack_from("<II", section, pos)
        pos += 8
        if codepage == 1200:
            names[pid] = _decode(section[pos:pos + 2 * length], 1200)
            pos += 2 * length + (-(2 * length) % 4)
        else:
            names[pid] = _decode(section[pos:pos + length], codepage)
            pos += length
    return names


# ---------------------------------------------------------------------------------------
# Word 97-2003 ([MS-DOC])

_F_ENCRYPTED = 0x0100
_F_WHICH_TABLE = 0x0200
_FIELD_BEGIN, _FIELD_SEPARATE, _FIELD_END = "\x13", "\x14", "\x15"
# Word's special characters: paragraph and cell ends, breaks, hyphens; anchors (pictures,
# footnote and comment marks, drawn objects) show nothing.
_WORD_CHARS = str.maketrans({"\r": "\n", "\x07": "\t", "\x0b": "\n", "\x0c": "\n", "\x0e": "\n", "\x1e": "-",
                             "\x1f": "", "\x01": "", "\x02": "", "\x03": "", "\x04": "", "\x05": "", "\x08": "",
                             "\x00": ""})


def _word(st: Storage) -> Document:
    wd = st.read("WordDocument")
    if len(wd) < 0x20 or struct.unpack_from("<H", wd, 0)[0] not in (0xA5EC, 0xA5DC):
        raise Unreadable("the WordDocument stream has no valid file information block")
    flags = struct.unpack_from("<H", wd, 0x0A)[0]
    if flags & _F_ENCRYPTED:
        return Document(encrypted="Word document encrypted with a password")
    if struct.unpack_from("<H", wd, 0)[0] == 0xA5EC:
        table = st.read("1Table" if flags & _F_WHICH_TABLE else "0Table")
        try:
            return _word_stories(wd, table, st.budget)
        except (LimitExceeded, Unreadable):
            raise
        except Exception:
            pass
    return Document(body=_printable_runs(wd, st.budget),
                    incomplete=["the Word text could only be approximated (a Word 6/95 file or a damaged piece table)"])


def _word_stories(wd: bytes, table: bytes, budget: Budget) -> Document:
    (csw,) = struct.unpack_from("<H", wd, 0x20)
    lw = 0x22 + 2 * csw + 2                   # fibRgLw: after fibRgW and its count (cslw)
    (cslw,) = struct.unpack_from("<H", wd, lw - 2)
    ccp = struct.unpack_from("<8i", wd, lw + 12)  # ccpText, Ftn, Hdd, Mcr, Atn, Edn, Txbx, HdrTxbx
    blob = lw + 4 * cslw + 2                  # fibRgFcLcbBlob
    fc_clx, lcb_clx = struct.unpack_from("<II", wd, blob + 33 * 8)
    fc_hdd, lcb_hdd = struct.unpack_from("<II", wd, blob + 11 * 8)
    fc_papx, lcb_papx = struct.unpack_from("<II", wd, blob + 13 * 8)
    text, pieces = _piece_text(wd, table[fc_clx:fc_clx + lcb_clx], budget)
    if any(c < 0 for c in ccp):
        raise ValueError("negative story length")
    if "\x07" in text:
        text = _mark_row_ends(text, pieces, _row_end_runs(wd, table[fc_papx:fc_papx + lcb_papx], budget))
    starts = [sum(ccp[:i]) for i in range(9)]
    story = {name: text[starts[i]:starts[i + 1]] for i, name in
             enumerate(("main", "footnotes", "headers", "macros", "comments", "endnotes", "boxes", "header boxes"))}
    top, bottom = _headers_and_footers(story["headers"], table[fc_hdd:fc_hdd + lcb_hdd])
    body = [_word_text(story[name]) for name in ("main", "footnotes", "comments", "endnotes", "boxes",
                                                  "header boxes")]
    return Document(top=top, body=[b for b in body if b.strip()], bottom=bottom)


def _piece_text(wd: bytes, clx: bytes, budget: Budget) -> tuple[str, list[tuple[int, int, int]]]:
    """All the document's characters in CP order, from the piece table in the Clx, and the
    pieces as (first CP, FC of that CP, bytes per character)."""
    pos = 0
    while pos < len(clx) and clx[pos] == 0x01:         # Prc: formatting, skipped
        (cb,) = struct.unpack_from("<h", clx, pos + 1)
        pos += 3 + max(cb, 0)
    if pos >= len(clx) or clx[pos] != 0x02:
        raise ValueError("no piece table")
    (lcb,) = struct.unpack_from("<I", clx, pos + 1)
    plc = clx[pos + 5:pos + 5 + lcb]
    n = (len(plc) - 4) // 12
    cps = struct.unpack_from(f"<{n + 1}I", plc, 0)
    parts: list[str] = []
    pieces: list[tuple[int, int, int]] = []
    cp = 0
    for i in range(n):
        if not i & 0x3FF:
            budget.check_time()
        (fc,) = struct.unpack_from("<I", plc, 4 * (n + 1) + 8 * i + 2)
        count = cps[i + 1] - cps[i]
        if count <= 0 or count > len(wd):
            continue
        if fc & 0x40000000:                              # fCompressed: 8-bit Windows-1252
            start = (fc & 0x3FFFFFFF) // 2
            part = wd[start:start + count].decode("cp1252", errors="replace")
            pieces.append((cp, start, 1))
        else:
            part = wd[fc:fc + 2 * count].decode("utf-16-le", errors="replace")
            pieces.append((cp, fc, 2))
        parts.append(part)
        cp += len(part)
    return "".join(parts), pieces


_SPRM_TTP = {0x2417, 0x244C}        # sprmPFTtp, sprmPFInnerTtp: the paragraph ends a table row
_ROW_END = "\ue000"                 # stands in for a row's end mark, one character like it


def _row_end_runs(wd: bytes, plc_bte_papx: bytes, budget: Budget) -> list[tuple[int, int]]:
    """(first FC, end FC) of the paragraphs that end table rows, from the paragraph
    properties (PlcBtePapx -> PapxFkp pages -> PAPX sprms), sorted."""
    n = (len(plc_bte_papx) - 4) // 8
    runs: list[tuple[int, int]] = []
    for i in range(max(n, 0)):
        if not i & 0xFF:
            budget.check_time()
        (pn,) = struct.unpack_from("<I", plc_bte_papx, 4 * (n + 1) + 4 * i)
        page = wd[(pn & 0x3FFFFF) * 512:(pn & 0x3FFFFF) * 512 + 512]
        if len(page) < 512:
            continue
        crun = page[511]
        fcs = struct.unpack_from(f"<{crun + 1}I", page, 0)
        for j in range(crun):
            offset = page[4 * (crun + 1) + 13 * j] * 2
            if offset and _has_ttp(page, offset):
                runs.append((fcs[j], fcs[j + 1]))
    return sorted(runs)


def _has_ttp(page: bytes, at: int) -> bool:
    cb = page[at]
    start, size = (at + 1, 2 * cb - 1) if cb else (at + 2, 2 * page[at + 1])
    grpprl = page[start + 2:start + size]               # after the style index (istd)
    pos = 0
    while pos + 2 <= len(grpprl):
        (sprm,) = struct.unpack_from("<H", grpprl, pos)
        pos += 2
        if sprm in _SPRM_TTP and pos < len(grpprl) and grpprl[pos] == 1:
            return True
        spra = sprm >> 13
        if spra == 6:
            pos += 1 + (grpprl[pos] if pos < len(grpprl) else 0)
        else:
            pos += (1, 1, 2, 4, 2, 2, 0, 3)[spra]
    return False


def _mark_row_ends(text: str, pieces: list[tuple[int, int, int]], runs: list[tuple[int, int]]) -> str:
    """Replace each table row's end mark (a \\x07 like a cell's) by _ROW_END."""
    import bisect

    if not runs or not pieces:
        return text
    starts = [p[0] for p in pieces]
    run_starts = [r[0] for r in runs]
    chars = list(text)
    for cp, ch in enumerate(chars):
        if ch != "\x07":
            continue
        first_cp, first_fc, width = pieces[bisect.bisect_right(starts, cp) - 1]
        fc = first_fc + (cp - first_cp) * width
        k = bisect.bisect_right(run_starts, fc) - 1
        if k >= 0 and runs[k][0] <= fc < runs[k][1]:
            chars[cp] = _ROW_END
    return "".join(chars)


def _headers_and_footers(stories: str, plcf_hdd: bytes) -> tuple[list[str], list[str]]:
    """Split the header story by PlcfHdd: after six separator stories, each section has
    even header, odd header, even footer, odd footer, first header, first footer."""
    n = len(plcf_hdd) // 4
    if n < 2:
        return [_word_text(stories)], []
    cps = struct.unpack_from(f"<{n}I", plcf_hdd, 0)
    top: list[str] = []
    bottom: list[str] = []
    for i in range(6, n - 1):
        text = _word_text(stories[cps[i]:cps[i + 1]])
        (top if (i - 6) % 6 in (0, 1, 4) else bottom).extend(text.splitlines())
    return top, bottom


def _word_text(raw: str) -> str:
    """Word's characters as text: field instructions dropped, field results kept."""
    if _FIELD_BEGIN in raw:
        out: list[str] = []
        hidden: list[bool] = []        # for each open field: still in its instructions?
        for ch in raw:
            if ch == _FIELD_BEGIN:
                hidden.append(True)
            elif ch == _FIELD_SEPARATE and hidden:
                hidden[-1] = False
            elif ch == _FIELD_END and hidden:
                hidden.pop()
            elif not any(hidden):
                out.append(ch)
        raw = "".join(out)
    # A row ends with its last cell's mark and the row's own: one line per row, cells tab-separated.
    raw = raw.replace("\x07" + _ROW_END, "\r").replace(_ROW_END, "\r")
    return raw.translate(_WORD_CHARS).strip("\n")


_RUN_16 = re.compile(rb"(?:[\x20-\x7e\xa0-\xff\t\r\n]\x00){4,}")
_RUN_8 = re.compile(rb"[\x20-\x7e\x80-\xff\t\r\n]{4,}")


def _printable_runs(data: bytes, budget: Budget) -> list[str]:
    """Printable UTF-16LE and 8-bit runs: an approximation of a file's text."""
    budget.check_time()
    runs = [m.group().decode("utf-16-le") for m in _RUN_16.finditer(data)]
    runs += [m.group().decode("cp1252", errors="replace") for m in _RUN_8.finditer(data.replace(b"\x00", b"\n"))
             if sum(c.isalpha() for c in m.group().decode("cp1252", errors="replace")) >= 3]
    return [" ".join(r.split()) for r in runs if r.strip()]


# ---------------------------------------------------------------------------------------
# Excel 97-2003 ([MS-XLS] BIFF8, and BIFF5 labels)

_BOF, _EOF, _FILEPASS, _SST, _CONTINUE = 0x0809, 0x000A, 0x002F, 0x00FC, 0x003C
_BOUNDSHEET, _LABELSST, _LABEL, _RSTRING, _NUMBER, _RK, _MULRK = 0x0085, 0x00FD, 0x0204, 0x00D6, 0x0203, 0x027E, 0x00BD
_FORMULA, _STRING, _HEADER, _FOOTER, _FORMAT, _XF, _DATE1904, _CODEPAGE = (0x0006, 0x0207, 0x0014, 0x0015, 0x041E,
                                                                          0x00E0, 0x0022, 0x0042)
_DATE_FORMAT_IDS = {14, 15, 16, 17, 22, *range(27, 37), *range(50, 59)}
_FORMAT_NOISE = re.compile(r'"[^"]*"|\\.|\[[^\]]*\]|_.|\*.')
_MAX_COLUMNS = 256


def _records(data: bytes, budget: Budget) -> Iterator[tuple[int, int, bytes]]:
    """(offset, record type, record data) for each BIFF record of a stream."""
    pos = 0
    count = 0
    while pos + 4 <= len(data):
        kind, size = struct.unpack_from("<HH", data, pos)
        yield pos, kind, data[pos + 4:pos + 4 + size]
        pos += 4 + size
        count += 1
        if not count & 0xFFF:
            budget.check_time()


class _Sheet:
    def __init__(self, name: str) -> None:
        self.name = name
        self.rows: dict[int, dict[int, str]] = {}
        self.headers: list[str] = []
        self.footers: list[str] = []

    def put(self, row: int, col: int, value: str) -> None:
        if value != "" and col < _MAX_COLUMNS:
            self.rows.setdefault(row, {})[col] = value


@dataclass
class _Globals:
    """What the workbook globals substream says about the sheets that follow."""

    biff8: bool = True
    codepage: int = 1252
    sst: list[str] = field(default_factory=list)
    sheet_names: dict[int, str] = field(default_factory=dict)   # BOF offset -> sheet name
    formats: dict[int, str] = field(default_factory=dict)
    xf_formats: list[int] = field(default_factory=list)
    date1904: bool = False


def _excel(st: Storage, stream: str) -> Document:
    records = list(_records(st.read(stream), st.budget))
    if not records or records[0][1] not in (_BOF, 0x0409, 0x0209, 0x0009):
        raise Unreadable(f"the {stream} stream does not start with a BOF record")
    first = records[0][2]
    g = _Globals(biff8=len(first) >= 2 and struct.unpack_from("<H", first, 0)[0] == 0x0600)
    sheets: list[_Sheet] = []
    current: _Sheet | None = None
    in_globals = False
    depth = 0                       # substreams open: a chart inside a sheet is a substream too
    pending_string: tuple[int, int] | None = None
    i = 0
    while i < len(records):
        pos, kind, body = records[i]
        i += 1
        if kind == _BOF:
            depth += 1
            if depth == 1:
                in_globals = pos == 0          # the workbook globals come first
                if not in_globals:
                    current = _Sheet(g.sheet_names.get(pos, f"Sheet{len(sheets) + 1}"))
                    sheets.append(current)
            continue
        if kind == _EOF:
            depth = max(depth - 1, 0)
            if depth == 0:
                in_globals, current = False, None
            continue
        if depth != 1:
            continue                # inside an embedded chart: nothing a person reads as cells
        if in_globals:
            if kind == _FILEPASS:
                return Document(encrypted="Excel workbook encrypted with a password")
            if kind == _SST:
                parts = [body]
                while i < len(records) and records[i][1] == _CONTINUE:
                    parts.append(records[i][2])
                    i += 1
                g.sst = _shared_strings(parts, st.budget)
            else:
                _global_record(g, kind, body)
            continue
        if current is None:
            continue
        cells = _Cells(current, g)
        if kind == _LABELSST and len(body) >= 10:
            row, col, _, index = struct.unpack_from("<HHHI", body, 0)
            current.put(row, col, g.sst[index] if index < len(g.sst) else "")
        elif kind in (_LABEL, _RSTRING) and len(body) >= 8:
            row, col = struct.unpack_from("<HH", body, 0)
            current.put(row, col, _xl_string(body, 6, g.biff8, g.codepage)[0])
        elif kind == _NUMBER and len(body) >= 14:
            row, col, xf = struct.unpack_from("<HHH", body, 0)
            cells.number(row, col, xf, struct.unpack_from("<d", body, 6)[0])
        elif kind == _RK and len(body) >= 10:
            row, col, xf, rk = struct.unpack_from("<HHHI", body, 0)
            cells.number(row, col, xf, _rk(rk))
        elif kind == _MULRK and len(body) >= 6:
            row, col = struct.unpack_from("<HH", body, 0)
            for j in range((len(body) - 6) // 6):
                xf, rk = struct.unpack_from("<HI", body, 4 + 6 * j)
                cells.number(row, col + j, xf, _rk(rk))
        elif kind == _FORMULA and len(body) >= 14:
            row, col, xf = struct.unpack_from("<HHH", body, 0)
            result = body[6:14]
            if result[6:8] != b"\xff\xff":
                cells.number(row, col, xf, struct.unpack("<d", result)[0])
            elif result[0] == 0:                          # a string result: the next STRING record
                pending_string = (row, col)
            elif result[0] == 1:
                current.put(row, col, "TRUE" if result[2] else "FALSE")
        elif kind == _STRING and pending_string:
            current.put(*pending_string, _xl_string(body, 0, g.biff8, g.codepage)[0])
            pending_string = None
        elif kind in (_HEADER, _FOOTER) and body:
            lines = _header_footer_lines(_xl_string(body, 0, g.biff8, g.codepage, short=not g.biff8)[0])
            (current.headers if kind == _HEADER else current.footers).extend(lines)
    doc = Document()
    for sheet in sheets:
        doc.top += sheet.headers
        doc.bottom += sheet.footers
        if sheet.rows:
            doc.body.append(f"Sheet: {sheet.name}")
            doc.body += _table_lines(sheet.rows, st.budget)
    return doc


def _global_record(g: _Globals, kind: int, body: bytes) -> None:
    if kind == _BOUNDSHEET and len(body) >= 8:
        g.sheet_names[struct.unpack_from("<I", body, 0)[0]] = _xl_string(body, 6, g.biff8, g.codepage, short=True)[0]
    elif kind == _FORMAT and len(body) >= 4:
        g.formats[struct.unpack_from("<H", body, 0)[0]] = _xl_string(body, 2, g.biff8, g.codepage,
                                                                      short=not g.biff8)[0]
    elif kind == _XF and len(body) >= 4:
        g.xf_formats.append(struct.unpack_from("<H", body, 2)[0])
    elif kind == _DATE1904 and len(body) >= 2:
        g.date1904 = struct.unpack_from("<H", body, 0)[0] == 1
    elif kind == _CODEPAGE and len(body) >= 2:
        g.codepage = struct.unpack_from("<H", body, 0)[0]


class _Cells:
    """Numbers as a person sees them: dates in date-formatted cells as dd/mm/yyyy."""

    def __init__(self, sheet: _Sheet, g: _Globals) -> None:
        self.sheet, self.formats, self.xf_formats, self.date1904 = sheet, g.formats, g.xf_formats, g.date1904

    def number(self, row: int, col: int, xf: int, value: float) -> None:
        fmt = self.xf_formats[xf] if xf < len(self.xf_formats) else 0
        if self._is_date(fmt) and 0 < value < 2958466:
            epoch = datetime(1904, 1, 1) if self.date1904 else datetime(1899, 12, 30)
            self.sheet.put(row, col, (epoch + timedelta(days=int(value))).strftime("%d/%m/%Y"))
        else:
            self.sheet.put(row, col, _number_text(value))

    def _is_date(self, fmt: int) -> bool:
        if fmt in _DATE_FORMAT_IDS:
            return True
        code = _FORMAT_NOISE.sub("", self.formats.get(fmt, "")).lower()
        return bool(code) and ("d" in code or "y" in code)


def _number_text(value: float) -> str:
    """9434765919, not 9434765919.0."""
    if value != value or value in (float("inf"), float("-inf")):
        return ""
    if value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return repr(value)


def _rk(rk: int) -> float:
    if rk & 0x02:
        value = float(rk >> 2 if not rk & 0x80000000 else (rk >> 2) - (1 << 30))
    else:
        value = struct.unpack("<d", struct.pack("<Q", (rk & 0xFFFFFFFC) << 32))[0]
    return value / 100 if rk & 0x01 else value


def _xl_string(body: bytes, pos: int, biff8: bool, codepage: int, short: bool = False) -> tuple[str, int]:
    """An XLUnicodeString (BIFF8: count, flags, characters) or a BIFF5 byte string at `pos`."""
    if short:
        if pos >= len(body):
            return "", pos
        count = body[pos]
        pos += 1
    else:
        if pos + 2 > len(body):
            return "", pos
        (count,) = struct.unpack_from("<H", body, pos)
        pos += 2
    if not biff8:
        return _decode(body[pos:pos + count], codepage), pos + count
    if pos >= len(body):
        return "", pos
    flags = body[pos]
    pos += 1
    if flags & 0x08:
        pos += 2
    if flags & 0x04:
        pos += 4
    if flags & 0x01:
        return body[pos:pos + 2 * count].decode("utf-16-le", errors="replace"), pos + 2 * count
    return body[pos:pos + count].decode("latin-1"), pos + count


def _shared_strings(parts: list[bytes], budget: Budget) -> list[str]:
    """The SST's strings; a string's characters may continue in the next CONTINUE record,
    which then starts with a new flags byte ([MS-XLS] 2.5.293)."""
    strings: list[str] = []
    if not parts or len(parts[0]) < 8:
        return strings
    (unique_count,) = struct.unpack_from("<I", parts[0], 4)
    part, pos = 0, 8
    data = parts[0]

    def advance(n: int) -> None:
        """Skip n bytes of rich-text or phonetic data, which may also cross records."""
        nonlocal part, pos, data
        while n > 0:
            left = len(data) - pos
            if n < left:
                pos += n
                return
            n -= left
            part += 1
            if part >= len(parts):
                pos = len(data)
                return
            data, pos = parts[part], 0

    while len(strings) < unique_count:
        if not len(strings) & 0xFFF:
            budget.check_time()
        if pos >= len(data):
            part += 1
            if part >= len(parts):
                break
            data, pos = parts[part], 0
        if pos + 3 > len(data):
            break
        count, flags = struct.unpack_from("<HB", data, pos)
        pos += 3
        runs = ext = 0
        if flags & 0x08:
            (runs,) = struct.unpack_from("<H", data, pos)
            pos += 2
        if flags & 0x04:
            (ext,) = struct.unpack_from("<i", data, pos)
            pos += 4
        chars: list[str] = []
        wide = bool(flags & 0x01)
        left = count
        while left > 0:
            width = 2 if wide else 1
            take = min(left, (len(data) - pos) // width)
            chunk = data[pos:pos + take * width]
            chars.append(chunk.decode("utf-16-le", errors="replace") if wide else chunk.decode("latin-1"))
            pos += take * width
            left -= take
            if left > 0:
                part += 1
                if part >= len(parts):
                    break
                data, pos = parts[part], 1
                wide = bool(parts[part][0] & 0x01) if parts[part] else wide
        strings.append("".join(chars))
        advance(4 * runs + max(ext, 0))
    return strings


_HF_CODE = re.compile(r'&(?:"[^"]*"|K[0-9A-Fa-f]{6}|K\d\d[+-]\d{3}|\d+|[LCR]|[PNDTFAZGBIUESXYH]|&)')


def _header_footer_lines(value: str) -> list[str]:
    """An Excel header or footer (&L...&C...&R...) as its sections' text, codes removed."""
    def code(m: re.Match[str]) -> str:
        c = m.group()
        return "&" if c == "&&" else "\n" if c in ("&L", "&C", "&R") else ""

    return [line.strip() for line in _HF_CODE.sub(code, value).splitlines() if line.strip()]


def _table_lines(rows: dict[int, dict[int, str]], budget: Budget) -> list[str]:
    """Rows as tab-separated lines padded to one width, so the first row names the columns."""
    width = max((max(cells) + 1 for cells in rows.values() if cells), default=0)
    budget.take_bytes(width * len(rows))
    lines: list[str] = []
    for r in sorted(rows):
        cells = rows[r]
        lines.append("\t".join(_field(cells.get(c, "")) for c in range(width)))
    return lines


def _field(text: str) -> str:
    text = " ".join(text.split()) if "\t" in text or "\n" in text or "\r" in text else text.strip()
    return '"' + text.replace('"', '""') + '"' if '"' in text else text


# ---------------------------------------------------------------------------------------
# PowerPoint 97-2003 ([MS-PPT])

_PPT_ENCRYPTED_TOKEN = 0xF3D1C4DF
_TEXT_CHARS, _TEXT_BYTES, _CSTRING = 0x0FA0, 0x0FA8, 0x0FBA
_MAIN_MASTER, _HEADERS_FOOTERS, _EX_OLE_OBJ_STG, _PROG_TAGS, _HANDOUT = 0x03F8, 0x0FD9, 0x1011, 0x1388, 0x0FC9
# Text no person reads as such: masters' placeholder prompts, handout masters, and the
# tags programs keep for themselves ("___PPT10").
_SKIPPED_CONTAINERS = {_MAIN_MASTER, _PROG_TAGS, _HANDOUT}
_FIELD_PLACEHOLDER = "*"            # a slide number or date field's stand-in character


def _powerpoint(st: Storage) -> Document:
    current_user = st.read("Current User")
    if st.has("EncryptedSummary") or (len(current_user) >= 16 and
                                       struct.unpack_from("<I", current_user, 12)[0] == _PPT_ENCRYPTED_TOKEN):
        return Document(encrypted="PowerPoint presentation encrypted with a password")
    data = st.read("PowerPoint Document")
    doc = Document()
    ends: list[tuple[int, int]] = []        # (end offset, record type) of the open containers
    pos = count = 0
    while pos + 8 <= len(data):
        count += 1
        if not count & 0xFFF:
            st.budget.check_time()
        while ends and pos >= ends[-1][0]:
            ends.pop()
        ver_inst, kind, size = struct.unpack_from("<HHI", data, pos)
        body_at = pos + 8
        if ver_inst & 0x0F == 0x0F:          # a container: its records follow
            ends.append((body_at + size, kind))
            pos = body_at
            continue
        body = data[body_at:body_at + size]
        pos = body_at + size
        inside = {k for _, k in ends}
        if kind in (_TEXT_CHARS, _TEXT_BYTES, _CSTRING) and not inside & _SKIPPED_CONTAINERS:
            text = body.decode("utf-16-le" if kind != _TEXT_BYTES else "latin-1", errors="replace")
            text = text.replace("\r", "\n").replace("\x0b", "\n").strip()
            if not text or text == _FIELD_PLACEHOLDER:
                continue
            if _HEADERS_FOOTERS in inside and kind == _CSTRING:
                instance = ver_inst >> 4
                if instance == 1:
                    doc.top += text.splitlines()
                elif instance == 2:
                    doc.bottom += text.splitlines()
                continue
            doc.body.append(text)
        elif kind == _EX_OLE_OBJ_STG and len(body) >= 4:
            doc.members.append((f"embedded-{len(doc.members) + 1}", _ole_object_data(body, ver_inst >> 4, st.budget)))
    return doc


def _ole_object_data(body: bytes, instance: int, budget: Budget) -> bytes:
    """An ExOleObjStg's compound file: zlib-compressed after its size when instance is 1."""
    if instance != 1:
        return body
    (size,) = struct.unpack_from("<I", body, 0)
    budget.take_bytes(size)
    out = zlib.decompressobj()
    data = out.decompress(body[4:], size + 1)
    if len(data) > size:
        raise LimitExceeded("an embedded object expands beyond its declared size")
    return data


# ---------------------------------------------------------------------------------------
# Embedded objects

def _embedded_objects(st: Storage, doc: Document) -> None:
    """Word's ObjectPool/_NNN and Excel's MBDxxxxxxxx storages: packaged files and Office
    objects come back as members; an object that is itself a document is read in place."""
    pools: list[Storage] = []
    if st.is_storage("ObjectPool"):
        pool = st.sub("ObjectPool")
        pools += [pool.sub(name) for name in pool.children() if pool.is_storage(name)]
    pools += [st.sub(name) for name in st.children() if name.startswith("MBD") and st.is_storage(name)]
    for obj in pools:
        _embedded_object(obj, doc)


def _embedded_object(obj: Storage, doc: Document) -> None:
    inner = read_object(obj, len(doc.members))
    if inner.text.strip():
        doc.body.append(inner.text)
    doc.members += inner.members
    if inner.encrypted:
        doc.incomplete.append(f"an embedded object is encrypted ({inner.encrypted})")
    if inner.incomplete:
        doc.incomplete.append(inner.incomplete)


def read_object(obj: Storage, numbered_from: int = 0) -> Extraction:
    """An OLE object's storage (embedded in a document, or attached to an Outlook message):
    the file it wraps as a member, or the document it is, read in place."""
    names = obj.children()
    name = f"embedded-{numbered_from + 1}"
    if "Package" in names:                              # an OOXML file embedded as it is
        return Extraction(members=[(name, obj.read("Package"))])
    if "\x01Ole10Native" in names:                      # a file wrapped by the Object Packager
        return Extraction(members=[_packaged_file(obj.read("\x01Ole10Native"), numbered_from + 1)])
    if "CONTENTS" in names:                             # e.g. an embedded PDF
        return Extraction(members=[(name, obj.read("CONTENTS"))])
    if "Equation Native" in names:                      # an Equation Editor formula: symbols, no text
        return Extraction()
    ole_stream = obj.read("\x01Ole")
    if len(ole_stream) >= 8 and struct.unpack_from("<I", ole_stream, 4)[0] & 0x1:
        return Extraction()                             # a linked object: its content is elsewhere
    return read_storage(obj)


def _packaged_file(data: bytes, index: int) -> tuple[str, bytes]:
    """Ole10Native: size, flags, label, source path, then the file's size and bytes."""
    fallback = (f"embedded-{index}", data[4:])
    try:
        pos = 6
        label_end = data.index(b"\x00", pos)
        label = data[pos:label_end].decode("cp1252", errors="replace")
        path_end = data.index(b"\x00", label_end + 1)
        pos = path_end + 1 + 4
        (temp_len,) = struct.unpack_from("<I", data, pos)
        pos += 4 + temp_len
        (size,) = struct.unpack_from("<I", data, pos)
        content = data[pos + 4:pos + 4 + size]
        if len(content) != size:
            return fallback
        name = re.split(r"[\\/]", label)[-1].strip() or fallback[0]
        return name, content
    except (ValueError, struct.error):
        return fallback
