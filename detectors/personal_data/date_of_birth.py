"""Dates of birth: a real calendar date standing next to DOB, date of birth, born ...

Dates are written many ways: 01/03/1980, 1-3-80, 01.03.1980, 1980-03-01,
1 March 1980, 1st of Mar 1980, March 1st, 1980. Numeric dates are read day first
(the UK order) and month first only when day first is impossible (03/25/1980).
A date on its own is a meeting, an invoice or a deadline; it is a date of birth
only with DOB, D.O.B, date of birth, born, birthday ... in the same line, within
60 characters, or as its column name in a table. A weak signal: personal data
only in bulk. Never puts the date into a finding.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterator

import regex

from detectors.base import Finding, Strength, personal_data_findings
from detectors.personal_data.context import ContextWords
from gateway.message import Message

NAME = "date_of_birth"
KIND = "birth date"              # the bounce pluralises by adding "s": "3 birth dates"

_MONTHS = {
    "january": 1, "february": 2, "march": 3, "april": 4, "may": 5, "june": 6, "july": 7,
    "august": 8, "september": 9, "october": 10, "november": 11, "december": 12,
    "jan": 1, "feb": 2, "mar": 3, "apr": 4, "jun": 6, "jul": 7, "aug": 8, "sep": 9, "sept": 9,
    "oct": 10, "nov": 11, "dec": 12,
}
_MONTH = "(?i:" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + ")"
_ORDINAL = r"(?i:st|nd|rd|th)?"

# Every branch starts at a digit (the month of "March 1st, 1980" is read by a lookbehind),
# so the engine skips all other characters cheaply.
_PATTERN = regex.compile(
    r"(?<!\w)(?:"
    # 01/03/1980, 1-3-80, 01.03.1980
    r"(?<![0-9][/.\-])(?P<d>[0-9]{1,2})(?P<s>[/.\-])(?P<m>[0-9]{1,2})(?P=s)(?P<y>[0-9]{4}|[0-9]{2})(?![/.\-][0-9])"
    # 1980-03-01, 1980/03/01
    r"|(?<![0-9][/.\-])(?P<iy>[0-9]{4})(?P<is>[/.\-])(?P<im>[0-9]{1,2})(?P=is)(?P<id>[0-9]{1,2})(?![/.\-][0-9])"
    # 1 March 1980, 1st of Mar. 1980
    r"|(?P<td>[0-9]{1,2})" + _ORDINAL + r"\s+(?:(?i:of)\s+)?(?P<tm>" + _MONTH + r")\.?,?\s+(?P<ty>[0-9]{4})"
    # March 1st, 1980
    r"|(?<=(?<!\w)(?P<um>" + _MONTH + r")\.?\s+)(?P<ud>[0-9]{1,2})" + _ORDINAL + r",?\s+(?P<uy>[0-9]{4})"
    r")(?!\w)"
)
# Every match starts a run of digits (nothing word-like before it), so _PATTERN, which starts with
# a lookbehind and would be tried at every character, is tried only where a run of digits starts.
_DIGIT_RUN = regex.compile(r"[0-9]+")
_CONTEXT = ContextWords(
    r"d\.?\s?o\.?\s?b\.?", r"date\s+of\s+birth", r"date-of-birth", r"birth\s*date", r"birthdate",
    r"born", r"birthday", r"birth",
)
EARLIEST_YEAR = 1900
LATEST_YEAR = 2099


def _date(year: int, month: int, day: int) -> datetime.date | None:
    try:
        return datetime.date(year, month, day)
    except ValueError:
        return None


def _two_digit_year_date(yy: int, month: int, day: int) -> datetime.date | None:
    # Whichever century makes it a date (29 February needs a leap year).
    return _date(1900 + yy, month, day) or _date(2000 + yy, month, day)


def parse_date(text: str) -> datetime.date | None:
    """The calendar date `text` writes, or None; day-first unless only month-first is possible."""
    text = text.strip()
    m = _PATTERN.search(text)
    if m is None or m.end() != len(text) or (m.start("um") if m.group("um") else m.start()) != 0:
        return None
    return _date_of(m)


def _date_of(m: regex.Match[str]) -> datetime.date | None:
    if m.group("d") is not None:
        day, month, year_text = int(m.group("d")), int(m.group("m")), m.group("y")
        for d, mo in ((day, month), (month, day)):
            found = _two_digit_year_date(int(year_text), mo, d) if len(year_text) == 2 else _date(int(year_text), mo, d)
            if found is not None:
                break
    elif m.group("iy") is not None:
        found = _date(int(m.group("iy")), int(m.group("im")), int(m.group("id")))
    elif m.group("td") is not None:
        found = _date(int(m.group("ty")), _MONTHS[m.group("tm").lower()], int(m.group("td")))
    else:
        found = _date(int(m.group("uy")), _MONTHS[m.group("um").lower()], int(m.group("ud")))
    if found is None or not EARLIEST_YEAR <= found.year <= LATEST_YEAR:
        return None
    return found


def _matches(text: str) -> Iterator[regex.Match[str]]:
    """What _PATTERN.finditer(text) yields, trying only the starts of runs of digits."""
    end = 0
    for run in _DIGIT_RUN.finditer(text):
        if run.start() < end:
            continue
        m = _PATTERN.match(text, run.start())
        if m is not None:
            end = m.end()
            yield m


class DateOfBirthDetector:
    name = NAME

    def detect(self, message: Message) -> list[Finding]:
        distinct: dict[str, set[datetime.date]] = {}
        for segment in message.segments:
            text = segment.text
            if not _CONTEXT.in_text(text):
                continue
            for m in _matches(text):
                found = _date_of(m)
                start = m.start("um") if m.group("um") is not None else m.start()
                if found is not None and _CONTEXT.has_context(text, start, m.end()):
                    distinct.setdefault(segment.location, set()).add(found)
        return personal_data_findings(NAME, KIND, distinct, Strength.WEAK, confidence=0.8)
