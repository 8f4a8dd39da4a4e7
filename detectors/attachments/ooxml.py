"""Office Open XML documents (DOCX, XLSX, PPTX, their macro-enabled and template forms):
the text a person sees, read straight from the package's XML parts.

Word: body paragraphs, tables (a row per line, cells tab-separated), headers, footers,
footnotes, endnotes, comments. Excel: every sheet's name and its cells row by row (the
header row first, numbers as written, dates as dd/mm/yyyy), headers and footers,
comments. PowerPoint: slides, speaker notes, comments, and text that masters and layouts
put on every slide. All: core and custom document properties and sensitivity labels.
Embedded files come back as members.

Never builds an object model: each part is decompressed in chunks within the budget and
parsed by expat as it arrives, keeping one paragraph or one row at a time, so a
10,000-row sheet costs memory for its text, not for its XML. An XML part that declares a
DTD is refused: no Office part does, and entity expansion is how a small part becomes a
huge one. The zip and XML plumbing and `Table` are shared with odf.py.
"""

from __future__ import annotations

import datetime
import io
import posixpath
import re
import struct
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from functools import wraps
from itertools import chain
from typing import Any
from urllib.parse import unquote
from xml.parsers import expat

from detectors.attachments.core import Budget, Extraction, Extractor, LimitExceeded, Unreadable, extractor

# ---------------------------------------------------------------------------------------
# Streaming XML, safely

START, END, TEXT = 0, 1, 2
Event = tuple[int, str, Any]       # (START, local name, attributes) / (END, local name, None) / (TEXT, text, None)
_CHUNK = 1 << 16


def safe_parser(what: str) -> Any:
    """An expat parser that reports names as "namespace}local" and refuses any DTD (and so
    every entity declaration): Office and OpenDocument parts never have one, and a
    billion-laughs part is one."""
    parser = expat.ParserCreate(namespace_separator="}")
    parser.buffer_text = True
    parser.buffer_size = _CHUNK

    def refuse(*_: object) -> None:
        raise Unreadable(f"{what} declares a DTD, which no Office file has (an entity-expansion attack?)")

    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    return parser


def _not_xml(what: str, e: expat.ExpatError) -> Unreadable:
    return Unreadable(f"{what} is not well-formed XML ({expat.ErrorString(e.code)})")


def xml_events(chunks: Iterable[bytes], what: str) -> Iterator[Event]:
    """Parse XML as its bytes arrive, as events; element names lose their namespace."""
    parser = safe_parser(what)
    events: list[Event] = []
    add = events.append
    local: dict[str, str] = {}

    def start(name: str, attrs: dict[str, str]) -> None:
        short = local.get(name)
        if short is None:
            short = local[name] = name[name.rfind("}") + 1:]
        add((START, short, attrs))

    def end(name: str) -> None:
        add((END, local.get(name) or name[name.rfind("}") + 1:], None))

    def text(data: str) -> None:
        add((TEXT, data, None))

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    try:
        for chunk in chunks:
            parser.Parse(chunk, False)
            if events:
                yield from events
                events.clear()
        parser.Parse(b"", True)
        yield from events
    except expat.ExpatError as e:
        raise _not_xml(what, e) from None


def parse_with(chunks: Iterable[bytes], what: str, start: Callable[[str, dict[str, str]], None],
               end: Callable[[str], None], text: Callable[[str], None]) -> None:
    """Parse XML as its bytes arrive, straight into handlers (names as "namespace}local"):
    for the parts that can be large, where an event per element would cost too much."""
    parser = safe_parser(what)
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    try:
        for chunk in chunks:
            parser.Parse(chunk, False)
        parser.Parse(b"", True)
    except expat.ExpatError as e:
        raise _not_xml(what, e) from None


def rel_id(attrs: dict[str, str]) -> str:
    """The r:id of an element (a sheet's, a slide's), not its own unprefixed id."""
    for key, value in attrs.items():
        if key.endswith("}id"):
            return value
    return ""


def attr(attrs: dict[str, str], local: str, default: str = "") -> str:
    """An attribute by its local name, whatever its namespace prefix."""
    value = attrs.get(local)
    if value is not None:
        return value
    suffix = "}" + local
    for key, value in attrs.items():
        if key.endswith(suffix):
            return value
    return default


# ---------------------------------------------------------------------------------------
# Zip packages

# What zipfile, zlib and struct raise on damaged or truncated packages.
DAMAGE = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, NotImplementedError, RuntimeError,
          LookupError, struct.error, OverflowError)


def damage_is_unreadable(kind: str) -> Callable[[Extractor], Extractor]:
    """Turn the exceptions of a damaged file into Unreadable with a short reason."""

    def wrap(fn: Extractor) -> Extractor:
        @wraps(fn)
        def read(data: bytes, budget: Budget) -> Extraction:
            try:
                return fn(data, budget)
            except (Unreadable, LimitExceeded):
                raise
            except DAMAGE as e:
                raise Unreadable(f"damaged {kind} ({_reason(e)})") from None

        return read

    return wrap


def _reason(e: BaseException) -> str:
    text = str(e).strip()
    return text[:120] if text and isinstance(e, (zipfile.BadZipFile, zlib.error)) else type(e).__name__


def _part_name(name: str) -> str:
    return name.replace("\\", "/").lstrip("/").lower()


_MAX_PARTS = 20_000          # a 500-slide deck with its media has a few thousand


def declared_parts(data: bytes) -> int | None:
    """How many entries a zip's end record says it has, before zipfile builds one object for each."""
    tail = data[-(22 + 0xFFFF):]
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        return None
    (entries,) = struct.unpack_from("<H", tail, at + 10)
    if entries == 0xFFFF:                   # ZIP64: the count is in the ZIP64 end record
        at64 = tail.rfind(b"PK\x06\x06", 0, at)
        if at64 < 0 or at64 + 40 > len(tail):
            return None
        (entries,) = struct.unpack_from("<Q", tail, at64 + 32)
    return entries


class Package:
    """The parts of a zip package (OOXML, OpenDocument), read within a budget."""

    def __init__(self, data: bytes, budget: Budget, kind: str) -> None:
        self.budget = budget
        self.kind = kind
        declared = declared_parts(data)
        if declared is not None and declared > _MAX_PARTS:
            raise LimitExceeded(f"the {kind} has more than {_MAX_PARTS} parts")
        try:
            self.zip = zipfile.ZipFile(io.BytesIO(data))
            infos = self.zip.infolist()
        except DAMAGE as e:
            raise Unreadable(f"not a readable {kind} ({_reason(e)})") from None
        if len(infos) > _MAX_PARTS:
            raise LimitExceeded(f"the {kind} has more than {_MAX_PARTS} parts")
        self._parts = {_part_name(i.filename): i for i in infos if not i.is_dir()}
        self._rels: dict[str, list[Rel]] = {}
        self.damaged: list[str] = []        # parts left out because they could not be read

    def incomplete(self) -> str:
        """Why part of the file could not be read ("" when all of it was)."""
        if not self.damaged:
            return ""
        more = f" and {len(self.damaged) - 3} more" if len(self.damaged) > 3 else ""
        return f"part of the {self.kind} could not be read: {'; '.join(self.damaged[:3])}{more}"

    def note(self, name: str, e: Exception) -> None:
        """Note that part `name` was left out, and why."""
        why = str(e)
        self.damaged.append(why if name in why else f"{name}: {why}")

    def optional(self, name: str, read: Callable[[], list[str]]) -> list[str]:
        """The lines `read` makes of a part the rest can do without (a header, a comment, a slide);
        if it is damaged, none, and the damage noted."""
        try:
            return read()
        except Unreadable as e:
            self.note(name, e)
            return []

    def paragraphs(self, name: str, **options: Any) -> list[str]:
        """paragraph_lines of an optional part."""
        return self.optional(name, lambda: paragraph_lines(self.events(name), self.budget, **options))

    def names(self) -> list[str]:
        """Part names as stored (case kept), in zip order."""
        return [i.filename.replace("\\", "/").lstrip("/") for i in self._parts.values()]

    def has(self, name: str) -> bool:
        return _part_name(name) in self._parts

    def info(self, name: str) -> zipfile.ZipInfo:
        return self._parts[_part_name(name)]

    def is_encrypted(self, name: str) -> bool:
        return bool(self.info(name).flag_bits & 0x1)

    def chunks(self, name: str) -> Iterator[bytes]:
        """A part's bytes as they decompress, within the budget's byte, ratio and time limits."""
        info = self.info(name)
        limits = self.budget.limits
        allowed = max(int(info.compress_size * limits.max_ratio), 1 << 20)
        total = 0
        try:
            stream = self.zip.open(info)
        except DAMAGE as e:
            raise Unreadable(f"{name} is damaged ({_reason(e)})") from None
        with stream:
            while True:
                self.budget.check_time()
                try:
                    block = stream.read(_CHUNK)
                except DAMAGE as e:
                    raise Unreadable(f"{name} is damaged ({_reason(e)})") from None
                if not block:
                    return
                total += len(block)
                if total > allowed:
                    raise LimitExceeded(f"{name} expands more than {limits.max_ratio:g} times (a compression bomb?)")
                self.budget.take_bytes(len(block))
                yield block

    def read(self, name: str) -> bytes | None:
        """A whole part (an embedded file), within the budget; None, with the damage noted, if damaged."""
        info = self.info(name)
        try:
            with self.zip.open(info) as stream:
                return self.budget.read(stream, info.compress_size, name)
        except DAMAGE as e:
            self.note(name, Unreadable(f"damaged ({_reason(e)})"))
            return None

    def members(self, names: Iterable[str]) -> list[tuple[str, bytes]]:
        """Embedded files, by their own names, to be read again."""
        found = []
        for name in names:
            if self.has(name) and not self.is_encrypted(name):
                data = self.read(name)
                if data is not None:
                    found.append((posixpath.basename(name), data))
        return found

    def events(self, name: str) -> Iterator[Event]:
        return xml_events(self.chunks(name), name)

    def rels(self, source: str) -> list[Rel]:
        """The relationships of a part ("" for the package's own), targets resolved to part names."""
        if source not in self._rels:
            self._rels[source] = self._read_rels(source)
        return self._rels[source]

    def _read_rels(self, source: str) -> list[Rel]:
        folder, base = posixpath.split(source)
        rels_name = posixpath.join(folder, "_rels", base + ".rels")
        if not self.has(rels_name):
            return []
        found = []
        for kind, name, attrs in self.events(rels_name):
            if kind != START or name != "Relationship" or attrs.get("TargetMode", "") == "External":
                continue
            target = attrs.get("Target", "")
            if not target:
                continue
            if target.startswith("/"):
                target = target.lstrip("/")
            else:
                target = posixpath.normpath(posixpath.join(folder, target))
            if "%" in target and not self.has(target):
                target = unquote(target)
            found.append(Rel(attrs.get("Id", ""), attrs.get("Type", "").rstrip("/").rsplit("/", 1)[-1], target))
        return found


@dataclass(frozen=True)
class Rel:
    id: str
    type: str           # the last segment of the relationship type: "officeDocument", "header", "slide" ...
    target: str         # part name, e.g. "word/header1.xml"


# ---------------------------------------------------------------------------------------
# Tables and lines

_MAX_PAD = 256              # columns a row is padded to: enough for any real table
_GAP_FREE = 64              # empty columns skipped for free; wider gaps are charged to the budget


def cell_field(text: str) -> str:
    """A cell as one field of a tab-separated line: no tabs or line breaks; quoted if it has quotes."""
    text = " ".join(text.split()) if "\t" in text or "\n" in text or "\r" in text else text.strip()
    return '"' + text.replace('"', '""') + '"' if '"' in text else text


class Table:
    """One table or sheet as tab-separated lines, every row padded to the same number of fields,
    so the detectors read the first row as the column names of the rows below it
    (personal_data/context.py); blank rows are left out."""

    def __init__(self) -> None:
        self._rows: list[str] = []      # fields never hold a tab (cell_field), so tabs count them
        self._width = 0

    def add(self, fields: list[str]) -> None:
        while fields and not fields[-1]:
            fields.pop()
        if fields:
            self._rows.append("\t".join(fields))
            self._width = max(self._width, len(fields))

    def repeat_last(self, times: int, budget: Budget) -> None:
        """The last row again `times` more times (OpenDocument's repeated rows), charged to the budget."""
        if times > 0 and self._rows:
            budget.take_bytes(len(self._rows[-1]) * times)
            self._rows.extend([self._rows[-1]] * times)

    def lines(self) -> list[str]:
        rows, width = self._rows, min(self._width, _MAX_PAD)
        for i, line in enumerate(rows):
            missing = width - 1 - line.count("\t")
            if missing > 0:
                rows[i] = line + "\t" * missing
        return rows


def place(fields: list[str], column: int, value: str, budget: Budget) -> None:
    """Put a cell's value at its column, empty fields before it for the columns skipped."""
    gap = column - len(fields)
    if gap > 0:
        if gap > _GAP_FREE:
            budget.take_bytes(gap)
        fields.extend([""] * gap)
    if column < len(fields):
        fields[column] = fields[column] or value
    else:
        fields.append(value)


def unique(lines: Iterable[str]) -> list[str]:
    """Non-blank lines, each once, in order (the same header on every page is one header)."""
    return list(dict.fromkeys(line for line in lines if line.strip()))


# ---------------------------------------------------------------------------------------
# Document properties

_CORE_HEAD = {"title": "Title", "subject": "Subject", "keywords": "Keywords", "category": "Category",
              "contentStatus": "Status"}
_CORE_REST = {"description": "Comments", "creator": "Author", "lastModifiedBy": "Last modified by"}
_LABEL_FIELD = re.compile(r"MSIP_Label_([0-9A-Fa-f{}-]+)_([A-Za-z]+)", re.IGNORECASE)


@dataclass
class Properties:
    """Document properties as lines: what can carry a marking first, the rest after."""

    core: dict[str, str] = field(default_factory=dict)      # element name -> value
    custom: list[tuple[str, str]] = field(default_factory=list)
    label_ids: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # from LabelInfo.xml

    def head(self) -> list[str]:
        """Sensitivity label names, then title, subject, keywords, category and status:
        where a marking is written, put where the marking detector reads (the first lines)."""
        lines = [f"Sensitivity label: {name}" for name in self._label_names()]
        lines += [f"{label}: {self.core[key]}" for key, label in _CORE_HEAD.items() if self.core.get(key)]
        return [" ".join(line.split()) for line in lines]

    def rest(self) -> list[str]:
        lines = [f"{label}: {self.core[key]}" for key, label in _CORE_REST.items() if self.core.get(key)]
        lines += [f"{name}: {value}" for name, value in self.custom]
        for label_id, fields in self.label_ids:
            lines.append("; ".join(f"MSIP_Label_{label_id}_{k}={v}" for k, v in fields.items()))
        return [" ".join(line.split()) for line in lines]

    def _label_names(self) -> list[str]:
        labels: dict[str, dict[str, str]] = {}
        for name, value in self.custom:
            m = _LABEL_FIELD.fullmatch(name.strip())
            if m:
                labels.setdefault(m.group(1).strip("{}").lower(), {})[m.group(2).lower()] = value.strip()
        return unique(f.get("name", "") for f in labels.values() if f.get("enabled", "true").lower() != "false")


def text_of(events: Iterable[Event], depth: int = 1) -> str:
    """All text inside the element whose START was just read (events continue from there)."""
    parts: list[str] = []
    for kind, value, _ in events:
        if kind == TEXT:
            parts.append(value)
        elif kind == START:
            depth += 1
        else:
            depth -= 1
            if depth == 0:
                break
    return "".join(parts).strip()


def _core_properties(pkg: Package, name: str, props: Properties) -> None:
    events = pkg.events(name)
    for kind, local, _ in events:
        if kind == START and local in _CORE_HEAD.keys() | _CORE_REST.keys():
            value = text_of(events)
            if value:
                props.core[local] = value


def _custom_properties(pkg: Package, name: str, props: Properties) -> None:
    events = pkg.events(name)
    for kind, local, attrs in events:
        if kind == START and local == "property":
            props.custom.append((attrs.get("name", ""), text_of(events)))


def _label_info(pkg: Package, name: str, props: Properties) -> None:
    for kind, local, attrs in pkg.events(name):
        if kind == START and local == "label" and attr(attrs, "id"):
            enabled = attr(attrs, "enabled") in ("1", "true") and attr(attrs, "removed") not in ("1", "true")
            fields = {"Enabled": "true" if enabled else "false", "SiteId": attr(attrs, "siteId").strip("{}"),
                      "Method": attr(attrs, "method")}
            props.label_ids.append((attr(attrs, "id").strip("{}"), {k: v for k, v in fields.items() if v}))


def _properties(pkg: Package) -> Properties:
    props = Properties()
    by_type = {rel.type: rel.target for rel in pkg.rels("")}
    readers = (("core-properties", "docProps/core.xml", _core_properties),
               ("custom-properties", "docProps/custom.xml", _custom_properties),
               ("classificationlabels", "docMetadata/LabelInfo.xml", _label_info))
    for rel_type, default, read in readers:
        name = by_type.get(rel_type, default)
        if pkg.has(name):
            try:
                read(pkg, name, props)
            except Unreadable as e:
                pkg.note(name, e)
    return props


# ---------------------------------------------------------------------------------------
# Paragraph text: WordprocessingML (Word) and DrawingML (PowerPoint, text boxes, SmartArt)

_KEPT_PLACEHOLDERS = {"ftr", "hdr"}     # on masters and layouts: footer and header text is real
_IN_RUN = {"tab": "\t", "ptab": "\t", "noBreakHyphen": "-"}   # w:tab outside a run is a tab stop


def paragraph_lines(events: Iterable[Event], budget: Budget, *, paragraphs: frozenset[str] = frozenset({"p"}),
                    texts: frozenset[str] = frozenset({"t", "delText"}), drop_placeholders: bool = False) -> list[str]:
    """Each paragraph as a line and each row of a table as a tab-separated line.

    `paragraphs` are the elements that make a line, `texts` those whose text is read.
    Fallback content (mc:Fallback repeats mc:Choice) is skipped. With `drop_placeholders`,
    the text of placeholder shapes (a master's "Click to edit Master title style") is dropped.
    """
    out: list[str] = []
    paras: list[list[str]] = []          # open paragraphs, innermost last (text boxes nest them)
    cells: list[list[str]] = []          # open table cells: their paragraphs' text
    spans: list[int] = []                # grid columns each open cell covers (w:gridSpan)
    tables: list[Table] = []             # the outermost open table (nested ones flow into its cells)
    depth = 0                            # table nesting
    row: list[str] | None = None
    in_text = in_run = skip = 0
    shapes: list[list[Any]] = []         # [first line, is a placeholder] per open shape
    for count, (kind, name, attrs) in enumerate(events):
        if not count & 0xFFF:
            budget.check_time()
        if skip:
            if name == "Fallback":
                skip += 1 if kind == START else -1 if kind == END else 0
            continue
        if kind == TEXT:
            if in_text and paras:
                paras[-1].append(name)
            continue
        if kind == START:
            if name in paragraphs:
                paras.append([])
            elif name in texts:
                in_text += 1
            elif name == "r":
                in_run += 1
            elif paras and (name in ("br", "cr") or in_run and name in _IN_RUN):   # a:br stands between runs
                paras[-1].append(_IN_RUN.get(name, "\n"))
            elif name == "Fallback":
                skip = 1
            elif name == "tbl":
                depth += 1
                if depth == 1:
                    tables.append(Table())
            elif name == "tr" and depth == 1:
                row = []
            elif name == "tc":
                cells.append([])
                spans.append(1)
            elif name == "gridSpan" and spans:      # Word's cell merged across columns
                val = attr(attrs, "val")
                spans[-1] = min(int(val), _MAX_PAD) if val.isdigit() else 1
            elif drop_placeholders and name == "sp":
                shapes.append([len(out), False])
            elif drop_placeholders and name == "ph" and shapes:
                shapes[-1][1] = attr(attrs, "type") not in _KEPT_PLACEHOLDERS
            continue
        # END
        if name in paragraphs:
            text = "".join(paras.pop())
            if cells:
                cells[-1].append(text)
            elif text.strip():
                out.append(text)
        elif name in texts:
            in_text -= 1
        elif name == "r":
            in_run = max(in_run - 1, 0)
        elif name == "tc" and cells:
            text = cell_field(" ".join(p for p in cells.pop() if p.strip()))
            span = spans.pop()
            if depth <= 1 and row is not None:
                row.append(text)
                row.extend([""] * (span - 1))
            elif cells:
                cells[-1].append(text)
            elif text:
                out.append(text)
        elif name == "tr" and depth == 1 and row is not None:
            tables[-1].add(row)
            row = None
        elif name == "tbl" and depth:
            if depth == 1:
                out.extend(tables.pop().lines())
            depth -= 1
        elif drop_placeholders and name == "sp" and shapes:
            first, placeholder = shapes.pop()
            if placeholder:
                del out[first:]
    return out


# ---------------------------------------------------------------------------------------
# The three kinds of package

def _read_docx(pkg: Package, main: str, events: Iterator[Event]) -> tuple[list[str], list[str], list[str]]:
    budget = pkg.budget
    body = paragraph_lines(events, budget)
    top: list[str] = []
    bottom: list[str] = []
    notes: list[str] = []
    rels = pkg.rels(main)
    for rel in sorted(rels, key=lambda r: _natural(r.target)):
        if not pkg.has(rel.target):
            continue
        if rel.type == "header":
            top += pkg.paragraphs(rel.target)
        elif rel.type == "footer":
            bottom += pkg.paragraphs(rel.target)
        elif rel.type in ("footnotes", "endnotes", "comments", "diagramData"):
            notes += pkg.paragraphs(rel.target)
    return top, body + notes, bottom


def _read_pptx(pkg: Package, main: str, events: Iterator[Event]) -> tuple[list[str], list[str], list[str]]:
    order = [rel_id(attrs) for kind, name, attrs in events if kind == START and name == "sldId"]
    rels = pkg.rels(main)
    targets = {rel.id: rel.target for rel in rels}
    slides = [targets[i] for i in order if i in targets]
    if not slides:   # no slide list: slides in the order of their names
        slides = sorted((r.target for r in rels if r.type == "slide"), key=_natural)
    body: list[str] = []
    for slide in slides:
        if not pkg.has(slide):
            continue
        body += pkg.paragraphs(slide)
        for rel in pkg.rels(slide):
            if not pkg.has(rel.target):
                continue
            if rel.type in ("notesSlide", "diagramData"):
                body += pkg.paragraphs(rel.target)
            elif rel.type == "comments":
                body += pkg.paragraphs(rel.target, paragraphs=frozenset({"p", "cm"}), texts=frozenset({"t", "text"}))
        body.append("")
    masters = sorted((n for n in pkg.names() if _MASTER.fullmatch(n)), key=_natural)
    top = [line for m in masters for line in pkg.paragraphs(m, drop_placeholders=True)]
    return top, body, []


_MASTER = re.compile(r"ppt/slide(Master|Layout)s/slide(Master|Layout)\d+\.xml", re.IGNORECASE)


def _read_xlsx(pkg: Package, main: str, events: Iterator[Event]) -> tuple[list[str], list[str], list[str]]:
    budget = pkg.budget
    sheets: list[tuple[str, str]] = []     # (name, relationship id)
    date1904 = False
    for kind, name, attrs in events:
        if kind != START:
            continue
        if name == "sheet":
            sheets.append((attrs.get("name", ""), rel_id(attrs)))
        elif name == "workbookPr":
            date1904 = attrs.get("date1904", "").lower() in ("1", "true")
    rels = pkg.rels(main)
    targets = {rel.id: rel.target for rel in rels}
    by_type = {rel.type: rel.target for rel in rels}
    shared = _shared_strings(pkg, by_type.get("sharedStrings", ""))
    dates = _date_styles(pkg, by_type.get("styles", ""))
    cells = _CellReader(shared, dates, date1904, budget)
    top: list[str] = []
    body: list[str] = []
    bottom: list[str] = []
    for sheet_name, sheet_id in sheets:
        body.append(f"Sheet: {sheet_name}")
        part = targets.get(sheet_id, "")
        if not pkg.has(part):
            continue
        try:
            lines, headers, footers = cells.sheet(pkg, part)
        except Unreadable as e:
            pkg.damaged.append(f"sheet {sheet_name}: {e}")
            continue
        body += lines
        top += headers
        bottom += footers
        for rel in pkg.rels(part):
            if rel.type in ("comments", "threadedComment") and pkg.has(rel.target):
                body += pkg.paragraphs(rel.target, texts=frozenset({"t", "text"}),
                                       paragraphs=frozenset({"comment", "threadedComment"}))
            elif rel.type == "drawing" and pkg.has(rel.target):
                body += pkg.paragraphs(rel.target)
    return top, body, bottom


def _shared_strings(pkg: Package, name: str) -> list[str]:
    strings: list[str] = []
    if not name or not pkg.has(name):
        return strings
    parts: list[str] = []
    in_t = phonetic = 0
    for kind, value, _ in pkg.events(name):
        if kind == TEXT:
            if in_t and not phonetic:
                parts.append(value)
        elif value == "t":
            in_t += 1 if kind == START else -1
        elif value == "rPh":               # the phonetic reading of Japanese text, not shown
            phonetic += 1 if kind == START else -1
        elif value == "si" and kind == END:
            strings.append("".join(parts))
            parts.clear()
    return strings


# Built-in number formats that show a date, a time, or both (ECMA-376 18.8.30, and the CJK ones).
_DATE_FORMATS = {14, 15, 16, 17, 22, *range(27, 37), *range(50, 59)}
_TIME_FORMATS = {18, 19, 20, 21, 45, 46, 47}
_QUOTED = re.compile(r'"[^"]*"|\\.|\[[^\]]*\]|_.|\*.')


def _format_kind(code: str) -> str:
    """"date", "time" or "" for a custom number format code such as dd/mm/yyyy or h:mm."""
    bare = _QUOTED.sub("", code.split(";")[0]).lower().replace("am/pm", "").replace("a/p", "")
    if "general" in bare:
        return ""
    if re.search(r"[dy]", bare) or re.search(r"m{3,}", bare) or re.search(r"(?<![h:m])m+(?![:ms])", bare):
        return "date"
    return "time" if re.search(r"[hs]", bare) else ""


def _date_styles(pkg: Package, name: str) -> dict[int, str]:
    """Cell style index -> "date" or "time", for the styles that show a number as one."""
    if not name or not pkg.has(name):
        return {}
    custom: dict[int, str] = {}
    styles: dict[int, str] = {}
    in_xfs = False
    index = 0
    for kind, local, attrs in pkg.events(name):
        if kind == START and local == "numFmt":
            fmt_id = attrs.get("numFmtId", "")
            if fmt_id.isdigit():
                custom[int(fmt_id)] = _format_kind(attrs.get("formatCode", ""))
        elif local == "cellXfs":
            in_xfs = kind == START
        elif in_xfs and kind == START and local == "xf":
            fmt_id = attrs.get("numFmtId", "0")
            fid = int(fmt_id) if fmt_id.isdigit() else 0
            found = custom.get(fid) or ("date" if fid in _DATE_FORMATS else "time" if fid in _TIME_FORMATS else "")
            if found:
                styles[index] = found
            index += 1
    return styles


def _column(ref: str) -> int:
    """0 for A1, 27 for AB7; -1 when there is no column."""
    n = 0
    for ch in ref:
        if "A" <= ch <= "Z":
            n = n * 26 + ord(ch) - 64
        elif "a" <= ch <= "z":
            n = n * 26 + ord(ch) - 96
        else:
            break
        if n > 16384:
            return -1
    return n - 1


_HF_CODE = re.compile(r'&(?:"[^"]*"|K[0-9A-Fa-f]{6}|K\d\d[+-]\d{3}|\d+|[LCR]|[PNDTFAZGBIUESXYH]|&)')


def header_footer_lines(value: str) -> list[str]:
    """An Excel header or footer (&L...&C...&R...) as its sections' text, codes removed."""
    def code(m: re.Match[str]) -> str:
        c = m.group()
        return "&" if c == "&&" else "\n" if c in ("&L", "&C", "&R") else ""

    return [line.strip() for line in _HF_CODE.sub(code, value).splitlines() if line.strip()]


class _CellReader:
    """Sheets row by row; holds one row at a time."""

    def __init__(self, shared: list[str], dates: dict[int, str], date1904: bool, budget: Budget) -> None:
        self.shared = shared
        self.dates = dates
        self.epoch = datetime.datetime(1904, 1, 1) if date1904 else datetime.datetime(1899, 12, 30)
        self.budget = budget

    def sheet(self, pkg: Package, part: str) -> tuple[list[str], list[str], list[str]]:
        reader = _SheetReader(self)
        parse_with(pkg.chunks(part), part, reader.start, reader.end, reader.text)
        return reader.table.lines(), reader.headers, reader.footers

    def value(self, cell_type: str, style: str, raw: str) -> str:
        if cell_type == "s":
            try:
                return self.shared[int(raw)]
            except (ValueError, IndexError):
                return ""
        if cell_type == "b":
            return "TRUE" if raw.strip() in ("1", "true") else "FALSE"
        if cell_type in ("n", "") and raw:
            kind = self.dates.get(int(style)) if style.isdigit() else None
            if kind:
                return self._date(raw, kind) or number_as_written(raw)
            return number_as_written(raw)
        return raw          # inline strings, formula strings (str), errors (#N/A), ISO dates (d)

    def _date(self, raw: str, kind: str) -> str:
        try:
            serial = float(raw)
        except ValueError:
            return ""
        if not 0 <= serial < 2958466:      # before 1900 or after 9999
            return ""
        epoch = self.epoch
        if epoch.year == 1899 and serial < 61:   # Excel counts 29 February 1900, which never was
            epoch = epoch + datetime.timedelta(days=1)
        moment = epoch + datetime.timedelta(days=serial)
        moment = moment.replace(microsecond=0) + datetime.timedelta(seconds=round(moment.microsecond / 1e6))
        if kind == "time":
            return moment.strftime("%H:%M:%S")
        return moment.strftime("%d/%m/%Y %H:%M:%S" if serial % 1 else "%d/%m/%Y")


_CELL, _VALUE, _INLINE, _TEXT, _PHONETIC, _ROW, _HEADER, _FOOTER = range(1, 9)
_SHEET_ELEMENTS = {"c": _CELL, "v": _VALUE, "is": _INLINE, "t": _TEXT, "rPh": _PHONETIC, "row": _ROW,
                   "oddHeader": _HEADER, "evenHeader": _HEADER, "firstHeader": _HEADER,
                   "oddFooter": _FOOTER, "evenFooter": _FOOTER, "firstFooter": _FOOTER}


class _SheetReader:
    """expat handlers for one worksheet: rows into a Table, one row held at a time."""

    def __init__(self, cells: _CellReader) -> None:
        self.cells = cells
        self.table = Table()
        self.headers: list[str] = []
        self.footers: list[str] = []
        self.row: list[str] = []
        self.column = 0
        self.cell_type = self.style = ""
        self.parts: list[str] = []
        self.reading = self.inline = self.phonetic = 0
        self.header_footer: list[str] | None = None
        self.codes: dict[str, int] = {}
        self.columns: dict[str, int] = {}    # "AB" -> 27

    def _code(self, name: str) -> int:
        code = self.codes.get(name)
        if code is None:
            code = self.codes[name] = _SHEET_ELEMENTS.get(name[name.rfind("}") + 1:], 0)
        return code

    def start(self, name: str, attrs: dict[str, str]) -> None:
        code = self.codes.get(name)
        if code is None:
            code = self._code(name)
        if not code:
            return
        if code == _CELL:
            letters = attrs.get("r", "").rstrip("0123456789")
            column = self.columns.get(letters)
            if column is None:
                column = _column(letters) if letters else -1
                if len(letters) <= 3:
                    self.columns[letters] = column
            self.column = column if column >= 0 else len(self.row)
            self.cell_type, self.style = attrs.get("t", "n"), attrs.get("s", "")
            self.parts.clear()
        elif code == _VALUE or (code == _TEXT and self.inline):
            self.reading += 1
        elif code == _INLINE:
            self.inline += 1
        elif code == _PHONETIC:
            self.phonetic += 1
        elif code == _ROW:
            self.row = []
        elif code in (_HEADER, _FOOTER):
            self.header_footer = []

    def end(self, name: str) -> None:
        code = self.codes.get(name, 0)
        if not code:
            return
        if code == _CELL:
            value = self.cells.value(self.cell_type, self.style, "".join(self.parts))
            if value:
                place(self.row, self.column, cell_field(value), self.cells.budget)
        elif code == _VALUE or (code == _TEXT and self.inline):
            self.reading -= 1
        elif code == _INLINE:
            self.inline -= 1
        elif code == _PHONETIC:
            self.phonetic -= 1
        elif code == _ROW:
            self.table.add(self.row)
            self.row = []
        elif code in (_HEADER, _FOOTER) and self.header_footer is not None:
            lines = header_footer_lines("".join(self.header_footer))
            (self.headers if code == _HEADER else self.footers).extend(lines)
            self.header_footer = None

    def text(self, data: str) -> None:
        if self.reading and not self.phonetic:
            self.parts.append(data)
        elif self.header_footer is not None:
            self.header_footer.append(data)


def number_as_written(raw: str) -> str:
    """A stored number as a person types it: 9434765919, not 9.434765919E9 or 9434765919.0."""
    raw = raw.strip()
    if not raw or ("." not in raw and "E" not in raw and "e" not in raw):
        return raw
    try:
        number = Decimal(raw)
    except InvalidOperation:
        return raw
    if not number.is_finite() or not -30 <= number.adjusted() <= 30:
        return raw
    if number == number.to_integral_value():
        return str(int(number))
    return format(number.normalize(), "f") if "e" in raw.lower() else raw


# ---------------------------------------------------------------------------------------
# The extractor

def _natural(name: str) -> list[Any]:
    """slide2 before slide10."""
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", name)]


_READERS = {"document": _read_docx, "workbook": _read_xlsx, "presentation": _read_pptx}
_MAIN_PARTS = ("word/document.xml", "xl/workbook.xml", "ppt/presentation.xml")


def assemble(props: Properties, top: list[str], body: list[str], bottom: list[str]) -> str:
    """Properties that carry markings and page headers first, page footers last: where the
    marking detector reads a document's marking (its first and last lines)."""
    lines = props.head() + unique(top) + props.rest() + body + unique(bottom)
    while lines and not lines[0].strip():
        del lines[0]
    while lines and not lines[-1].strip():
        lines.pop()
    lines.append("")
    return "\n".join(lines)


OOXML_TYPES = {
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.template",
    "application/vnd.ms-word.document.macroEnabled.12",
    "application/vnd.ms-word.template.macroEnabled.12",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.template",
    "application/vnd.ms-excel.sheet.macroEnabled.12",
    "application/vnd.ms-excel.template.macroEnabled.12",
    "application/vnd.ms-excel.addin.macroEnabled.12",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/vnd.openxmlformats-officedocument.presentationml.slideshow",
    "application/vnd.openxmlformats-officedocument.presentationml.template",
    "application/vnd.ms-powerpoint.presentation.macroEnabled.12",
    "application/vnd.ms-powerpoint.slideshow.macroEnabled.12",
    "application/vnd.ms-powerpoint.template.macroEnabled.12",
    "application/vnd.ms-powerpoint.addin.macroEnabled.12",
}


@extractor(*sorted(OOXML_TYPES))
@damage_is_unreadable("Office document")
def read_ooxml(data: bytes, budget: Budget) -> Extraction:
    pkg = Package(data, budget, "Office document")
    main = next((r.target for r in pkg.rels("") if r.type == "officeDocument" and pkg.has(r.target)), "")
    main = main or next((name for name in _MAIN_PARTS if pkg.has(name)), "")
    if not main:
        raise Unreadable("no document, workbook or presentation part")
    if pkg.is_encrypted(main):
        return Extraction(encrypted="the Office document's parts are encrypted with a zip password")
    events = pkg.events(main)
    root = next((e for e in events if e[0] == START), None)
    reader = _READERS.get(root[1]) if root else None
    if reader is None:
        raise Unreadable(f"{main} is not a Word document, workbook or presentation")
    top, body, bottom = reader(pkg, main, chain([root], events))  # type: ignore[list-item]
    text = assemble(_properties(pkg), top, body, bottom)
    embedded = [name for name in pkg.names() if "/embeddings/" in name.lower()]
    embedded += [r.target for r in pkg.rels(main) if r.type == "aFChunk"]   # Word's imported HTML, RTF, documents
    return Extraction(text=text, members=pkg.members(embedded), incomplete=pkg.incomplete())


# ---------------------------------------------------------------------------------------
# Telling an Office file from a plain zip

_MAIN_CONTENT_TYPES = {
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml":
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.template.main+xml":
        "application/vnd.openxmlformats-officedocument.wordprocessingml.template",
    "application/vnd.ms-word.document.macroenabled.main+xml": "application/vnd.ms-word.document.macroEnabled.12",
    "application/vnd.ms-word.template.macroenabledtemplate.main+xml":
        "application/vnd.ms-word.template.macroEnabled.12",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml":
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.template.main+xml":
        "application/vnd.openxmlformats-officedocument.spreadsheetml.template",
    "application/vnd.ms-excel.sheet.macroenabled.main+xml": "application/vnd.ms-excel.sheet.macroEnabled.12",
    "application/vnd.ms-excel.template.macroenabled.main+xml": "application/vnd.ms-excel.template.macroEnabled.12",
    "application/vnd.ms-excel.addin.macroenabled.main+xml": "application/vnd.ms-excel.addin.macroEnabled.12",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation.main+xml":
        "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/vnd.openxmlformats-officedocument.presentationml.slideshow.main+xml":
        "application/vnd.openxmlformats-officedocument.presentationml.slideshow",
    "application/vnd.openxmlformats-officedocument.presentationml.template.main+xml":
        "application/vnd.openxmlformats-officedocument.presentationml.template",
    "application/vnd.ms-powerpoint.presentation.macroenabled.main+xml":
        "application/vnd.ms-powerpoint.presentation.macroEnabled.12",
    "application/vnd.ms-powerpoint.slideshow.macroenabled.main+xml":
        "application/vnd.ms-powerpoint.slideshow.macroEnabled.12",
    "application/vnd.ms-powerpoint.template.macroenabled.main+xml":
        "application/vnd.ms-powerpoint.template.macroEnabled.12",
    "application/vnd.ms-powerpoint.addin.macroenabled.main+xml": "application/vnd.ms-powerpoint.addin.macroEnabled.12",
}
_SNIFF_LIMIT = 1 << 20


def sniff_office(data: bytes) -> str | None:
    """The precise type of an Office Open XML or OpenDocument file that libmagic calls a plain
    zip (or unknown bytes), from its [Content_Types].xml or its mimetype member; None for
    any other zip, or bytes that are not one. Reads at most a few small members."""
    if not data.startswith(b"PK"):
        return None
    declared = declared_parts(data)
    if declared is not None and declared > _MAX_PARTS:
        return None
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
        parts = {_part_name(i.filename): i for i in zf.infolist()}
        odf = _sniff_odf(zf, parts)
        if odf:
            return odf
        info = parts.get("[content_types].xml")
        if info is None or info.flag_bits & 0x1:
            return None
        with zf.open(info) as stream:
            xml = stream.read(_SNIFF_LIMIT)
        for kind, name, attrs in xml_events([xml], "[Content_Types].xml"):
            if kind == START and name == "Override":
                found = _MAIN_CONTENT_TYPES.get(attrs.get("ContentType", "").strip().lower())
                if found:
                    return found
    except (Unreadable, *DAMAGE):
        return None
    return None


def _sniff_odf(zf: zipfile.ZipFile, parts: dict[str, zipfile.ZipInfo]) -> str | None:
    from detectors.attachments.odf import ODF_TYPES

    info = parts.get("mimetype")
    if info is not None and info.file_size < 200 and not info.flag_bits & 0x1:
        with zf.open(info) as stream:
            value = stream.read(200).decode("ascii", "replace").strip()
        if value in ODF_TYPES:
            return value
    info = parts.get("meta-inf/manifest.xml")
    if info is None or info.flag_bits & 0x1:
        return None
    with zf.open(info) as stream:
        xml = stream.read(_SNIFF_LIMIT)
    for kind, name, attrs in xml_events([xml], "META-INF/manifest.xml"):
        if kind == START and name == "file-entry" and attr(attrs, "full-path") == "/":
            value = attr(attrs, "media-type")
            return value if value in ODF_TYPES else None
    return None
