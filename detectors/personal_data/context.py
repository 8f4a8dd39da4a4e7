"""Context for personal-data detectors: do the words near a match say what it is?

A ten-digit number is an NHS number only when the text around it is about health;
a nine-digit one is a passport number only near "passport". Each detector builds one
`ContextWords` at import (one compiled regex) and asks `has_context(text, start, end)`.
"Near" means a window of `window` characters either side (across lines), the rest of
the same line (up to `LINE_REACH` characters either side; labels such as "sort code"
switch this off), or the name of the column the match sits in when the text is a
CSV-like table (a spreadsheet's "NHS number" header makes every value in that column
an NHS number, however far below the header it is).

Pure: no I/O. Never returns or stores the matched value.
"""

from __future__ import annotations

import csv
from bisect import bisect_right
from functools import lru_cache

import regex

from detectors.personal_data.anchors import Anchors, vocabulary

DEFAULT_WINDOW = 60
LINE_REACH = 200          # how far "the same line" reaches on very long lines
_WORD_SNAP = 32           # how far a window edge moves to avoid cutting a word in half
_DELIMITERS = ("\t", ",", ";", "|")
_LONG_DIGITS = regex.compile(r"\d{6}")
_LETTER = regex.compile(r"\p{L}")
_MAX_HEADER_CHARS = 40
_MAX_HEADER_WORDS = 6
_SHORT_TEXT = 256         # shorter texts (column names) are searched directly


class ContextWords:
    """Words or phrases (regex fragments, matched whole-word, any case) that give a match meaning."""

    def __init__(self, *fragments: str, window: int = DEFAULT_WINDOW, same_line: bool = True) -> None:
        # Longest first so "nhs no" wins over "nhs" and alternation never stops short.
        body = "|".join(sorted(fragments, key=len, reverse=True))
        self.pattern = regex.compile(r"(?<![\p{L}\p{N}])(?:" + body + r")(?![\p{L}\p{N}])", regex.IGNORECASE)
        self.window = window
        self.same_line = same_line      # False for labels, which stand right beside what they label
        # Anchors (see detectors.personal_data.anchors) for the whole text, where a word ends
        # before no letter or digit, and for any window of it, where the window may cut it.
        self._anchors = _anchors_for(fragments, end_bounded=True)
        self._window_anchors = _anchors_for(fragments, end_bounded=False)

    def absent_from(self, text: str) -> bool:
        """True when no context word can stand anywhere in `text`: not near any offset of it,
        not in any of its column names. Cheap; never True where `has_context` could be."""
        return _none_in(self._window_anchors, text)

    def in_text(self, text: str) -> bool:
        """True when any of the words appears anywhere in `text` (e.g. a column name).

        Detectors that need context ask this of a whole segment first: without a context
        word anywhere (column names included) nothing in it can be in context, and one
        search for a few words is far cheaper than scanning for the identifier.
        """
        if len(text) > _SHORT_TEXT and _none_in(self._anchors, text):
            return False
        return self.pattern.search(text) is not None

    def near(self, text: str, start: int, end: int, window: int | None = None) -> bool:
        """True when a context word stands in the same line or within `window` characters."""
        lo, hi = _span(text, start, end, self.window if window is None else window, self.same_line)
        return self.pattern.search(text, lo, hi) is not None

    def in_column_header(self, text: str, start: int) -> bool:
        """True when `text` is a table and the column holding offset `start` is named by a context word."""
        header = table_of(text).header_at(start)
        return header is not None and self.in_text(header)

    def has_context(self, text: str, start: int, end: int, window: int | None = None) -> bool:
        """The one question detectors ask: is the match at text[start:end] in context?"""
        return self.near(text, start, end, window) or self.in_column_header(text, start)


def _anchors_for(fragments: tuple[str, ...], end_bounded: bool) -> Anchors | None:
    # Pieces of text alone, when each is three characters or more, spare working out the text's words.
    texts_only = Anchors.build(fragments, end_bounded, words=False)
    if texts_only is not None and all(len(t) >= 3 for t in texts_only[0].texts):
        return texts_only[0]
    built = Anchors.build(fragments, end_bounded)
    return built[0] if built is not None else None


def _none_in(anchors: Anchors | None, text: str) -> bool:
    if anchors is None:
        return False
    vocab = vocabulary(text)
    return vocab is not None and not anchors.any_in(vocab)


def _span(text: str, start: int, end: int, window: int, same_line: bool) -> tuple[int, int]:
    line_start, line_end = start, end
    if same_line:
        line_start = text.rfind("\n", max(0, start - LINE_REACH), start) + 1 or max(0, start - LINE_REACH)
        line_end = text.find("\n", end, end + LINE_REACH)
        if line_end < 0:
            line_end = min(len(text), end + LINE_REACH)
    lo = max(0, min(line_start, start - window))
    hi = min(len(text), max(line_end, end + window))
    # The pattern's lookahead cannot see past `hi`: do not let a cut word ("GPS" -> "GP") look whole.
    limit = min(len(text), hi + _WORD_SNAP)
    while hi < limit and text[hi].isalnum():
        hi += 1
    return lo, hi


class _Table:
    """Where each table row of a text starts, and the column names that apply to it."""

    __slots__ = ("_text", "_starts", "_rows")

    def __init__(self, text: str, starts: list[int], rows: list[tuple[int, str, tuple[str, ...]] | None]) -> None:
        self._text = text
        self._starts = starts       # offset of each delimited line, ascending
        self._rows = rows           # (line end, delimiter, column names), or None for a header line

    def header_at(self, offset: int) -> str | None:
        """The name of the column holding `offset`, or None when it is not in a table row."""
        i = bisect_right(self._starts, offset) - 1
        if i < 0 or self._rows[i] is None:
            return None
        line_end, delimiter, header = self._rows[i]  # type: ignore[misc]
        line_start = self._starts[i]
        if offset >= line_end:
            return None
        column = _column_index(self._text[line_start:offset], delimiter)
        return header[column] if column < len(header) else None


def _column_index(prefix: str, delimiter: str) -> int:
    if '"' not in prefix:
        return prefix.count(delimiter)
    column, quoted = 0, False
    for ch in prefix:
        if ch == '"':
            quoted = not quoted
        elif ch == delimiter and not quoted:
            column += 1
    return column


def _field_count(line: str, delimiter: str) -> int:
    return line.count(delimiter) + 1 if '"' not in line else len(_fields(line, delimiter))


def _fields(line: str, delimiter: str) -> list[str]:
    if '"' not in line:
        return line.split(delimiter)
    try:
        return next(csv.reader([line], delimiter=delimiter), [])
    except csv.Error:
        return line.split(delimiter)


def _looks_like_header(fields: list[str]) -> bool:
    # Column names are short, have letters and never carry identifiers (long digit runs);
    # the length limits keep a sentence with a comma in it from naming the lines after it.
    return (
        any(_LETTER.search(f) for f in fields)
        and all(len(f) <= _MAX_HEADER_CHARS and f.count(" ") < _MAX_HEADER_WORDS for f in (f.strip() for f in fields))
        and not any(_LONG_DIGITS.search(f) for f in fields)
    )


@lru_cache(maxsize=4)
def table_of(text: str) -> _Table:
    """The table structure of `text`, worked out once per text and shared by all detectors.

    A header is a delimited line with letters and no long digit runs; it names the columns
    of every following line with the same number of fields, until another header-like line
    with a different number of fields starts a new table.
    """
    starts: list[int] = []
    rows: list[tuple[int, str, tuple[str, ...]] | None] = []
    header: tuple[str, ...] | None = None
    delimiter = ""
    offset = 0
    for line in text.split("\n"):
        line_start, offset = offset, offset + len(line) + 1
        line = line.rstrip("\r")
        if not line.strip():
            continue
        if header is not None and _field_count(line, delimiter) == len(header):
            starts.append(line_start)
            rows.append((line_start + len(line), delimiter, header))
            continue
        best = max(_DELIMITERS, key=line.count)
        if best not in line:
            continue
        fields = _fields(line, best)
        if len(fields) >= 2 and _looks_like_header(fields):
            header, delimiter = tuple(f.strip() for f in fields), best
            starts.append(line_start)
            rows.append(None)       # the header line itself is in no column
    return _Table(text, starts, rows)
