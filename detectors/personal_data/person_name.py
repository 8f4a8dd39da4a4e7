"""Names of people in lists and tables: a WEAK signal that only counts for the bulk rule.

A name on its own is not personal data worth a rule (POLICY.md); many names together
are. So NER runs only on segments that look like a list of people, and only on
the lines that make them look so:

- Table-like text (CSV, tab-separated, an extracted spreadsheet: at least `min_rows`
  rows with a consistent delimiter). If a header cell says name / full name /
  forename / surname (...) and the values look like names, the distinct non-empty
  values of that column are counted with no NER at all (this path works without
  the model too). Otherwise NER reads up to 50 values of each column whose values
  are shaped like names ("Oliver Bennett"), one value per document, and a column
  most of whose values NER reads as PERSON is counted in full.
- Runs of record-like lines: at least `min_rows` lines, in runs of 5 or more, each
  holding a capitalised word pair and a field (a delimiter, an e-mail address, a
  phone number, a postcode or a date), or consisting of a name alone
  ("John Smith"). Lines of names alone are judged like a column (a sample through
  NER, then counted in full); the other lines are read by NER one line per
  document. A signature block (name, job title, then a "Tel:" line) is shorter
  than a run; reply headers ("From: ...") never count.
- Many other weak identifiers: at least `min_rows` e-mail addresses, phone
  numbers or postcodes on lines that also hold a capitalised word pair
  ("John Smith <js@x>; Jane Doe <jd@y>; ..."); NER reads those lines.

Ordinary mail (prose paragraphs, a signature, a reply chain) meets none of these,
so NER never runs for it; names in prose ("A, B and C will attend") are not
counted. NER reads at most `max_chars` characters per message (the values sampled
and the lines read); what lies beyond is not read and does not make the
inspection incomplete: names are weak, a list whose first 100,000 characters
hold fewer names than the bulk threshold will not reach it in the rest, and the
other weak detectors (e-mail, phone, postcode) still read the whole text.

`count` is the number of distinct names at a location (case, spacing, titles and
possessives folded); the finding never holds a name. Never does I/O.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass

import regex

from detectors.base import Finding, Strength, personal_data_findings
from detectors.nlp import DEFAULT_MAX_CHARS, DEFAULT_MODEL, PERSON, EntitySpan, NerModel, ner_model
from detectors.personal_data.special_category import is_plausible_name, person_key
from gateway.message import Message

NAME = "person_name"
KIND = "named person"
DEFAULT_MIN_ROWS = 10
_MIN_RUN = 5                     # record-like lines in a row that make a list, not a signature
_SAMPLE = 50                     # values of a column NER reads to decide whether it holds names

_DELIMITERS = ("\t", ",", ";", "|")
_CELLS_AS_TABS = str.maketrans(",;|", "\t\t\t")
# Header cells that name a person's name column: "<who> name", forename and surname forms.
_WHO = (r"full|person|persons|person's|client|child|child's|pupil|student|learner|employee|staff|patient|resident|"
        r"tenant|customer|applicant|contact|member|service user|display|preferred|legal|parent|carer|guardian|"
        r"emergency contact|next of kin|worker|volunteer|visitor|attendee|delegate|candidate|claimant|participant|"
        r"young person's|young person|known as")
_FULL_NAME = regex.compile(rf"^(?:(?:{_WHO}) ?)?name$")
_FORENAME = regex.compile(r"^(?:first|given|christian|fore) ?names?$")
_SURNAME = regex.compile(r"^(?:surname|last ?name|family ?name|second ?name)$")

_CAPITALISED_PAIR = regex.compile(r"\p{Lu}[\p{Ll}'’\-]+[ \t]+(?:\p{Lu}\.?[ \t]+)?\p{Lu}[\p{L}'’\-]+")
_NAME_ONLY = regex.compile(r"^[ \t]*(?:[-*•·]|\d{1,4}[.)])?[ \t]*(?:\p{Lu}[\p{Ll}'’\-]+[ \t]+){1,3}\p{Lu}[\p{L}'’\-]+[ \t]*$")
_EMAIL = regex.compile(r"[\w.+\-]+@[\w\-]+(?:\.[\w\-]+)+")
_PHONE = regex.compile(r"(?<![\d])(?:\+44[ \t]?|0)\d{2,4}[ \t\-]?\d{3,4}[ \t\-]?\d{3,4}(?![\d])")
# What a postcode looks like here; _postcodes counts its matches without trying every letter.
_POSTCODE = regex.compile(r"(?<![\p{L}\p{N}])[A-Z]{1,2}\d[A-Z\d]?[ \t]?\d[A-Z]{2}(?![\p{L}\p{N}])", regex.IGNORECASE)
_DATE = regex.compile(r"(?<![\d])\d{1,2}[/.\-]\d{1,2}[/.\-]\d{2,4}(?![\d])|\d{4}-\d{2}-\d{2}")
_NAME_SHAPE = regex.compile(
    r"^(?:(?i:mr|mrs|ms|miss|mx|dr)\.?[ \t]+)?\p{Lu}[\p{L}'’\-]+(?:[ \t]+\p{Lu}[\p{L}'’\-]+){1,3}$")
_PLAIN_NAME = regex.compile(r"^[\p{L}'’.\-]+(?: [\p{L}'’.\-]+){0,4}$")
_FIELD = regex.compile(r"[\t,;|]")
# _POSTCODE with its outward letters read by a lookbehind, so that a match starts at the outward digit.
_POSTCODE_AT_DIGIT = regex.compile(
    r"(?<=(?<![\p{L}\p{N}])[A-Z]{1,2})\d[A-Z\d]?[ \t]?\d[A-Z]{2}(?![\p{L}\p{N}])", regex.IGNORECASE)
_INWARD = regex.compile(r"\d[A-Z]{2}", regex.IGNORECASE)    # how every postcode ends
_DIGITS3 = regex.compile(r"\d{3}")                         # what every phone number holds
_REPLY_HEADER = regex.compile(r"^[ \t>]*(?:from|to|cc|bcc|sent|date|subject|reply-to|on .* wrote):", regex.IGNORECASE)


def _header_key(cell: str) -> str:
    return " ".join(regex.sub(r"[_\-.:*#]+", " ", cell).casefold().split())


def _table(lines: list[str], min_rows: int) -> tuple[str, list[list[str]]] | None:
    """(delimiter, rows) when the non-empty lines form a table with a header row."""
    if len(lines) < min_rows + 1:
        return None
    best: tuple[str, int] | None = None
    head = lines[:200]                  # the delimiter is decided on the first rows, then all are read
    quoted = any('"' in line for line in head)
    for delimiter in _DELIMITERS:
        if delimiter not in lines[0]:
            continue
        # Unquoted, each line is one row, and a row of two or more fields holds the delimiter.
        if not quoted and sum(delimiter in line for line in head) < 0.8 * len(head):
            continue
        try:
            rows = list(csv.reader(head, delimiter=delimiter))
        except csv.Error:
            continue
        width = len(rows[0])
        matching = sum(1 for row in rows if len(row) == width)
        if width >= 2 and matching >= 0.8 * len(rows) and (best is None or width > best[1]):
            best = (delimiter, width)
    if best is None:
        return None
    try:
        return best[0], list(csv.reader(lines, delimiter=best[0]))
    except csv.Error:
        return None


def _names_from_columns(rows: list[list[str]]) -> set[str] | None:
    """Distinct names in the name column(s) the header row declares, or None if it declares none.

    Each "<who> name" column counts on its own ("child name", "parent name"); a forename and a
    surname column make one name. A column whose values are mostly not name-like (digits, "@",
    more than five words: "Name" over product codes) is not a name column.
    """
    header = [_header_key(cell) for cell in rows[0]]
    full = [i for i, h in enumerate(header) if _FULL_NAME.match(h)]
    fore = [i for i, h in enumerate(header) if _FORENAME.match(h) and i not in full]
    sur = [i for i, h in enumerate(header) if _SURNAME.match(h)]
    groups = [[i] for i in full] + ([fore[:1] + sur[:1]] if fore or sur else [])
    data = [row for row in rows[1:] if len(row) == len(header)]
    names: set[str] = set()
    declared = False
    for group in groups:
        values = [" ".join(row[i].strip() for i in group if row[i].strip()) for row in data]
        values = [v for v in values if v]
        if not values or sum(1 for v in values if _PLAIN_NAME.match(v)) < 0.5 * len(values):
            continue
        declared = True
        names.update(person_key(v) for v in values if any(ch.isalpha() for ch in v))
    return names if declared else None


def _read_line(line: str) -> tuple[bool, int]:
    """Whether a line is record-like, and how many e-mail addresses, phones and postcodes it holds
    beside a name candidate (a capitalised word pair). A reply header ("From: ...") is neither."""
    if _REPLY_HEADER.match(line):
        return False, 0
    pair = _CAPITALISED_PAIR.search(line) is not None
    short = len(line) <= 300
    if short and _NAME_ONLY.match(line):
        record = True
    elif not (short and pair):
        record = False
    else:
        record = bool(_FIELD.search(line) or _has_email(line) or _has_phone(line) or _postcodes(line, first=True)
                      or _DATE.search(line))
    if not pair:
        return record, 0
    return record, (len(_EMAIL.findall(line)) if "@" in line else 0) + len(_PHONE.findall(line)) + _postcodes(line)


def _has_email(line: str) -> bool:
    return "@" in line and _EMAIL.search(line) is not None


def _has_phone(line: str) -> bool:
    return _DIGITS3.search(line) is not None and _PHONE.search(line) is not None


def _postcodes(line: str, first: bool = False) -> int:
    """How many postcodes `line` holds (as len(_POSTCODE.findall(line)) says); with `first`, 0 or 1.

    _POSTCODE tries every letter of the line. Each postcode ends in an inward code, found by a
    scan that skips to digits; its outward digit stands 1 to 3 characters before the inward
    one, and _POSTCODE_AT_DIGIT, which reads the outward letters by a lookbehind, matches there
    exactly when _POSTCODE matches at those letters. Postcodes never overlap.
    """
    starts: set[int] = set()
    for inward in _INWARD.finditer(line):
        for at in range(max(0, inward.start() - 3), inward.start()):
            if at not in starts and _POSTCODE_AT_DIGIT.match(line, at):
                starts.add(at)
                if first:
                    return 1
    return len(starts)


def _lines_of_lists(lines: list[str], min_rows: int) -> tuple[list[int], list[int]]:
    """Indexes of (record-like lines in runs of at least _MIN_RUN, blank lines not breaking a run;
    lines holding a name candidate and e-mail addresses, phones or postcodes, when there are
    at least `min_rows` of those: "John Smith <js@x>; Jane Doe <jd@y>; ...")."""
    picked: list[int] = []
    run: list[int] = []
    hits: list[int] = []
    total = 0
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        record, found = _read_line(line)
        if found:
            hits.append(i)
            total += found
        if record:
            run.append(i)
            continue
        if len(run) >= _MIN_RUN:
            picked.extend(run)
        run = []
    if len(run) >= _MIN_RUN:
        picked.extend(run)
    return picked, (hits if total >= min_rows else [])


@dataclass(frozen=True)
class Plan:
    """Where NER must look in one segment, decided without NER."""

    counted: frozenset[str] = frozenset()                # names read from a declared name column
    columns: tuple[tuple[str, ...], ...] = ()            # values of columns (or lists) that may be names
    lines: tuple[str, ...] = ()                          # record lines NER reads whole

    @property
    def needs_ner(self) -> bool:
        return bool(self.columns or self.lines)


def plan(text: str, min_rows: int = DEFAULT_MIN_ROWS) -> Plan:
    """Decide, cheaply, whether and where NER must look in one segment."""
    lines = text.splitlines()
    filled = [ln for ln in lines if ln.strip()]
    table = _table(filled, min_rows)
    if table is not None:
        rows = table[1]
        names = _names_from_columns(rows)
        if names is not None:
            return Plan(counted=frozenset(names))
        width = len(rows[0])
        columns = []
        for i in range(width):
            cells = [row[i].strip() for row in rows if len(row) == width and row[i].strip()]
            values = tuple(v for v in cells if _NAME_SHAPE.match(v))   # never the header, never an ID
            if values and len(values) >= 0.5 * len(cells):
                columns.append(values)
        return Plan(columns=tuple(columns))
    records, identifiers = _lines_of_lists(lines, min_rows)
    if len(records) < min_rows and not identifiers:
        return Plan()
    name_only = tuple(lines[i].strip(" \t-*•·") for i in records if _NAME_ONLY.match(lines[i]))
    rest = tuple(lines[i] for i in sorted(set(records) | set(identifiers)) if not _NAME_ONLY.match(lines[i]))
    return Plan(columns=(name_only,) if len(name_only) >= _MIN_RUN else (), lines=rest)


def _cells_as_text(line: str) -> str:
    # "1,John Smith,0113..." is one token to the tokenizer at "1,John"; with tabs it is not.
    return line.translate(_CELLS_AS_TABS).strip()


def _whole_name(value: str, spans: list[EntitySpan]) -> bool:
    return any(s.label == PERSON and (s.end - s.start) >= 0.6 * len(value) for s in spans)


def _within(texts: tuple[str, ...], budget: int) -> list[str]:
    """The distinct texts, in order, while their total length stays within `budget`."""
    out: list[str] = []
    for text in dict.fromkeys(texts):
        if len(text) > budget:
            break
        budget -= len(text)
        out.append(text)
    return out


class PersonNameDetector:
    """Distinct names in lists and tables of people. WEAK: counts only for the bulk rule."""

    name = NAME

    def __init__(self, model: str = DEFAULT_MODEL, max_chars: int = DEFAULT_MAX_CHARS,
                 min_rows: int = DEFAULT_MIN_ROWS, preload: bool = True, ner: NerModel | None = None):
        self.max_chars = max_chars
        self.min_rows = min_rows
        self.ner = ner if ner is not None else ner_model(model, preload=preload)

    @property
    def status(self) -> str:
        return self.ner.status

    def detect(self, message: Message) -> list[Finding]:
        names: dict[str, set[str]] = {}
        budget = self.max_chars
        for segment in message.segments:
            needed = plan(segment.text, self.min_rows)
            found = names.setdefault(segment.location, set())
            found.update(needed.counted)
            if not needed.needs_ner or budget <= 0 or not self.ner.available:
                continue
            samples = [tuple(dict.fromkeys(column))[:_SAMPLE] for column in needed.columns]
            lines = [_cells_as_text(line) for line in needed.lines]
            # One document per value or line: names read far better than in one long text.
            texts = _within(sum(samples, ()) + tuple(lines), budget)
            budget -= sum(len(t) for t in texts)
            spans = dict(zip(texts, self.ner.entities(texts)))
            for column, sample in zip(needed.columns, samples):
                # A column is a name column when most of its values are, each on its own, a name.
                read = [v for v in sample if v in spans]      # the bound may have cut the sample short
                if read and sum(1 for v in read if _whole_name(v, spans[v])) >= 0.5 * len(read):
                    found.update(person_key(v) for v in column if any(ch.isalpha() for ch in v))
            for text in lines:
                for span in spans.get(text, ()):
                    raw = text[span.start:span.end]
                    if span.label == PERSON and is_plausible_name(raw):
                        found.add(person_key(raw))
        return personal_data_findings(NAME, KIND, {loc: found for loc, found in names.items() if found}, Strength.WEAK)
