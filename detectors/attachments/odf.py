"""OpenDocument files (ODT, ODS, ODP and their templates): the text a person sees.

Paragraphs and headings, tables and every sheet row by row as tab-separated lines (the
header row first, so a column's name gives its values meaning), comments, footnotes,
speaker notes, page headers and footers (styles.xml), the title, subject, keywords and
user-defined properties (meta.xml), and embedded objects' text. A file whose manifest
lists encrypted parts is password-protected: reported as encrypted, never guessed at.

Streams each part as ooxml.py does (see there): memory for one row or paragraph at a time,
a DTD refused, every byte within the budget.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from detectors.attachments.core import Budget, Extraction, Unreadable, extractor
from detectors.attachments.ooxml import (
    END, START, TEXT, Event, Package, Properties, Table, assemble, attr, cell_field, damage_is_unreadable,
    number_as_written, place, text_of,
)

ODF_TYPES = {
    "application/vnd.oasis.opendocument.text",
    "application/vnd.oasis.opendocument.text-template",
    "application/vnd.oasis.opendocument.text-master",
    "application/vnd.oasis.opendocument.text-master-template",
    "application/vnd.oasis.opendocument.text-web",
    "application/vnd.oasis.opendocument.spreadsheet",
    "application/vnd.oasis.opendocument.spreadsheet-template",
    "application/vnd.oasis.opendocument.presentation",
    "application/vnd.oasis.opendocument.presentation-template",
    "application/vnd.oasis.opendocument.graphics",
    "application/vnd.oasis.opendocument.graphics-template",
}

_PARAGRAPHS = {"p", "h"}
# Not on the page: a comment's author and date, a picture's alt text (text:date, text:title
# in a paragraph are fields a person sees).
_UNSEEN = {"annotation": {"creator", "date"}, "frame": {"title", "desc"}, "custom-shape": {"title", "desc"},
           "image": {"title", "desc"}, "g": {"title", "desc"}}
_HEADERS = {"header", "header-left", "header-first"}
_FOOTERS = {"footer", "footer-left", "footer-first"}
_MAX_SPACES = 64
_MAX_REPEAT = 256          # a cell with text repeated across more columns than this is cut short
_EMBEDDED_CONTENT = re.compile(r"[^/]+/content\.xml", re.IGNORECASE)   # "Object 1/content.xml": a chart, a sheet
_EMBEDDED_OLE = re.compile(r"Object \d+", re.IGNORECASE)                # an embedded Office or other file


def _repeat(attrs: dict[str, str], name: str) -> int:
    value = attr(attrs, name, "1")
    return max(int(value), 1) if value.isdigit() and len(value) < 10 else 1


class _Cell:
    __slots__ = ("paragraphs", "value_type", "value", "repeat")

    def __init__(self, attrs: dict[str, str]) -> None:
        self.paragraphs: list[str] = []
        self.value_type = attr(attrs, "value-type")
        self.value = attr(attrs, "value") or attr(attrs, "date-value") or attr(attrs, "boolean-value") \
            or attr(attrs, "string-value")
        self.repeat = _repeat(attrs, "number-columns-repeated")

    def text(self) -> str:
        shown = " ".join(p for p in self.paragraphs if p.strip())
        if self.value_type == "float" and self.value:
            number = number_as_written(self.value)
            if number.lstrip("-").isdigit():     # a whole number in full: 9434765919, not 9.43E+09
                return number
        return shown or self.value


def content_lines(events: Iterable[Event], budget: Budget) -> tuple[list[str], list[str], list[str]]:
    """(header lines, body lines, footer lines) of an OpenDocument content or styles part."""
    out: list[str] = []
    top: list[str] = []
    bottom: list[str] = []
    paras: list[list[str]] = []
    cells: list[_Cell] = []
    table: Table | None = None
    depth = 0                   # table nesting; nested tables flow into the outer table's cells
    row: list[str] | None = None
    rows_repeat = 1
    column = 0
    unseen = 0
    parents: list[str] = []
    spreadsheet = False
    events = iter(events)
    for count, (kind, name, attrs) in enumerate(events):
        if not count & 0xFFF:
            budget.check_time()
        if kind == TEXT:
            if paras and not unseen:
                paras[-1].append(name)
            continue
        if kind == START:
            if unseen or (parents and name in _UNSEEN.get(parents[-1], ())):
                unseen += 1
            parents.append(name)
            if unseen:
                continue
            if name in _PARAGRAPHS:
                paras.append([])
            elif paras and name == "s":
                count_attr = attr(attrs, "c", "1")
                paras[-1].append(" " * min(int(count_attr) if count_attr.isdigit() else 1, _MAX_SPACES))
            elif paras and name == "tab":
                paras[-1].append("\t")
            elif paras and name == "line-break":
                paras[-1].append("\n")
            elif name == "spreadsheet":
                spreadsheet = True
            elif name == "table":
                depth += 1
                if depth == 1:
                    table = Table()
                    if spreadsheet:
                        out.append(f"Sheet: {attr(attrs, 'name')}")
            elif name == "table-row" and depth == 1:
                row, column, rows_repeat = [], 0, _repeat(attrs, "number-rows-repeated")
            elif name in ("table-cell", "covered-table-cell"):
                cells.append(_Cell(attrs))
            elif name in ("footer-decl", "header-decl"):     # a presentation's footer and header text
                (bottom if name == "footer-decl" else top).append(text_of(events))
                parents.pop()       # text_of read its end
            continue
        # END
        if parents:
            parents.pop()
        if unseen:
            unseen -= 1
            continue
        if name in _PARAGRAPHS and paras:
            text = "".join(paras.pop())
            if cells:
                cells[-1].paragraphs.append(text)
            elif text.strip():
                out.append(text)
        elif name in ("table-cell", "covered-table-cell") and cells:
            cell = cells.pop()
            value = cell_field(cell.text())
            if depth <= 1 and row is not None:
                if value:
                    for _ in range(min(cell.repeat, _MAX_REPEAT)):
                        place(row, column, value, budget)
                        column += 1
                    column += cell.repeat - min(cell.repeat, _MAX_REPEAT)
                else:
                    column += cell.repeat
            elif cells:
                cells[-1].paragraphs.append(value)
            elif value:
                out.append(value)
        elif name == "table-row" and depth == 1 and row is not None and table is not None:
            if any(row):
                table.add(row)
                table.repeat_last(rows_repeat - 1, budget)
            row = None
        elif name == "table" and depth:
            if depth == 1 and table is not None:
                out.extend(table.lines())
                table = None
            depth -= 1
    return top, out, bottom


def _page_regions(events: Iterable[Event]) -> Iterator[tuple[str, list[Event]]]:
    """("header" or "footer", the events inside it) for each master page's header and footer."""
    region = ""
    depth = 0
    inside: list[Event] = []
    for event in events:
        kind, name, _ = event
        if not region:
            if kind == START and (name in _HEADERS or name in _FOOTERS):
                region, depth, inside = ("header" if name in _HEADERS else "footer"), 1, []
            continue
        if kind == START:
            depth += 1
        elif kind == END:
            depth -= 1
            if depth == 0:
                yield region, inside
                region = ""
                continue
        inside.append(event)


def _meta(pkg: Package) -> Properties:
    props = Properties()
    if not pkg.has("meta.xml") or pkg.is_encrypted("meta.xml"):
        return props
    try:
        _read_meta(pkg, props)
    except Unreadable as e:
        pkg.note("meta.xml", e)
    return props


def _read_meta(pkg: Package, props: Properties) -> None:
    keywords: list[str] = []
    events = pkg.events("meta.xml")
    for kind, name, attrs in events:
        if kind != START:
            continue
        if name in ("title", "subject", "description", "creator"):
            value = text_of(events)
            if value:
                props.core[name] = value
        elif name == "keyword":
            keywords.append(text_of(events))
        elif name == "user-defined":
            props.custom.append((attr(attrs, "name"), text_of(events)))
    if keywords:
        props.core["keywords"] = ", ".join(k for k in keywords if k)


def _encrypted_parts(pkg: Package) -> set[str]:
    found: set[str] = set()
    if not pkg.has("META-INF/manifest.xml"):
        return found
    path = ""
    for kind, name, attrs in pkg.events("META-INF/manifest.xml"):
        if kind == START and name == "file-entry":
            path = attr(attrs, "full-path")
        elif kind == START and name == "encryption-data":
            found.add(path.lower())
    return found


@extractor(*sorted(ODF_TYPES))
@damage_is_unreadable("OpenDocument file")
def read_odf(data: bytes, budget: Budget) -> Extraction:
    pkg = Package(data, budget, "OpenDocument file")
    if _encrypted_parts(pkg) or (pkg.has("content.xml") and pkg.is_encrypted("content.xml")):
        props = _meta(pkg)
        return Extraction(text="\n".join(props.head() + props.rest()),
                          encrypted="OpenDocument file is password-protected")
    if not pkg.has("content.xml"):
        raise Unreadable("no content.xml")
    top, body, bottom = content_lines(pkg.events("content.xml"), budget)
    headers, footers = _page_headers_and_footers(pkg, budget)
    names = sorted(pkg.names())
    for name in names:
        if _EMBEDDED_CONTENT.fullmatch(name):   # a chart's or an embedded sheet's own content.xml
            try:
                body += content_lines(pkg.events(name), budget)[1]
            except Unreadable as e:
                pkg.note(name, e)
    members = pkg.members(name for name in names if _EMBEDDED_OLE.fullmatch(name))
    text = assemble(_meta(pkg), top + headers, body, bottom + footers)
    return Extraction(text=text, members=members, incomplete=pkg.incomplete())


def _page_headers_and_footers(pkg: Package, budget: Budget) -> tuple[list[str], list[str]]:
    """The master pages' header and footer lines (styles.xml); none if it is damaged."""
    headers: list[str] = []
    footers: list[str] = []
    if pkg.has("styles.xml"):
        try:
            for region, inside in _page_regions(pkg.events("styles.xml")):
                (headers if region == "header" else footers).extend(content_lines(inside, budget)[1])
        except Unreadable as e:
            pkg.note("styles.xml", e)
    return headers, footers
