"""How a UK Government protective marking is written, and how to tell one from prose.

This module only reads text: it knows the words of the Government Security
Classifications and where people write them. It never decides what happens to a
message and never keeps the text it reads.

A *line* is a subject, or one line at the top or bottom of a body part or of an
attachment's text. A marking *position* in a line is its opening (after reply
prefixes, quote marks, bullets, opening brackets or a short bracketed tag such as
[EXTERNAL]) or the place after a separator (" - ", ":", "|", "(" or "["). A marking
*ends* at the end of the line, a colon, a closing bracket, a spaced dash or a
descriptor (PERSONAL, COMMERCIAL, LOCSEN, UK EYES ONLY, ...). In a line:

- OFFICIAL-SENSITIVE (and the Welsh SWYDDOGOL-SENSITIF): the two words joined by
  a hyphen or en dash, underscore, colon, slash, bracket or space, in any case.
  Written like a marking it counts wherever it stands: joined by a bare hyphen or
  underscore ("official-sensitive", a compound only the classification uses), or
  both words in capitals, or both in Title Case, where the rest of the line is not
  written that way too ("HANDLING OFFICIAL SENSITIVE INFORMATION" and "Handling
  Official Sensitive Information" are prose). Written any other way ("official
  sensitive") it counts only in a marking position. After a colon or a spaced dash
  OFFICIAL is a complete marking and what follows is the subject ("OFFICIAL:
  Sensitive issue" is baseline OFFICIAL), so there the pair counts only with both
  words in capitals or both in Title Case, or when SENSITIVE ends the marking
  ("OFFICIAL: Sensitive"). "official" or "sensitive" alone, and the two apart
  ("official, sensitive and personal"), are prose. A mention of the marking by
  name in a marking position ("Guidance on handling OFFICIAL-SENSITIVE
  information") cannot be told from a marking and is read as one: the safe side.
- SECRET and TOP SECRET are ordinary words. In capitals they count, except in a
  line that is all capitals, where they count only in a marking position. In any
  other case they count only in a marking position and ending the marking ("Top
  Secret: plans", "[Secret] budget"). "Secret Santa", "the secret to a good
  referral", "top secret recipe", "trade secret", "Secretary" are prose.
- Pre-2014 GPMS markings (RESTRICTED and PROTECT by default; see DEFAULT_LEGACY)
  count only in capitals, in a marking position, ending the marking ("PROTECT -
  PERSONAL", "[RESTRICTED]"), never "RESTRICTED ACCESS" or "will be restricted".
- After a label ("Classification:", "Protective marking:", "Security
  classification:", "SEC=") every form counts in any case.
- Plain OFFICIAL is the baseline for all public-sector mail and is never reported.

In a body part or attachment text, a first or last line of more than twelve words is
a sentence, and there only a marking opening it or set off by a separator counts
("This email may contain OFFICIAL-SENSITIVE information and is intended solely for
the addressee..." is a disclaimer, not a marking). Besides those lines, two kinds of
line count wherever they stand, because neither is prose: a line holding nothing
but OFFICIAL-SENSITIVE, SECRET or TOP SECRET in capitals (with descriptors), as a
document's page header or a quoted message's marking; and a quoted "Subject:" line,
read as a subject.

A *field* (an X-Protective-Marking SEC= value, a sensitivity label's name) holds
nothing but a marking, so there every form counts in any case.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cached_property
from types import MappingProxyType

import regex

from detectors.base import MarkingLevel

_ORDER = {level: rank for rank, level in enumerate(MarkingLevel)}

# Pre-2014 GPMS markings read in text and label names, and the level each is handled
# at. RESTRICTED and PROTECT became OFFICIAL with a need-to-know; handling them as
# OFFICIAL-SENSITIVE errs to the safe side. CONFIDENTIAL is left out: in council
# mail it is the everyday handling word ("PRIVATE & CONFIDENTIAL"), not the level.
DEFAULT_LEGACY: Mapping[str, MarkingLevel] = MappingProxyType({
    "RESTRICTED": MarkingLevel.OFFICIAL_SENSITIVE,
    "PROTECT": MarkingLevel.OFFICIAL_SENSITIVE,
})
# The GPMS levels as HMG's 2014 transition guidance maps them, for structured fields
# whose vocabulary is the classification itself (X-Protective-Marking SEC=).
GPMS_LEVELS: Mapping[str, MarkingLevel] = MappingProxyType({
    "PROTECT": MarkingLevel.OFFICIAL_SENSITIVE,
    "RESTRICTED": MarkingLevel.OFFICIAL_SENSITIVE,
    "CONFIDENTIAL": MarkingLevel.SECRET,
})

# Descriptors and handling caveats written after a level in UK practice.
DESCRIPTORS = (
    "PERSONAL", "COMMERCIAL", "LOCSEN", "MEDICAL", "HR", "LEGAL", "POLICY", "SECURITY",
    "MANAGEMENT", "STAFF", "CONTRACTS", "INVESTIGATION", "APPOINTMENTS", "HONOURS",
    "FINANCE", "FINANCIAL", "OPERATIONAL", "MARKET SENSITIVE", "EMBARGOED",
    "UK EYES ONLY", "UK/US EYES ONLY", "EYES ONLY", "RECIPIENTS ONLY",
    "ADDRESSEE ONLY", "PERSONOL", "MASNACHOL",
)
_DESC = "|".join(regex.escape(d).replace(r"\ ", r"[ \t\-]+") for d in sorted(DESCRIPTORS, key=len, reverse=True))

_WORD_START = r"(?<![\p{L}\p{N}])(?<![\p{L}\p{N}][\-'\u2019])"   # not inside a word nor a compound ("non-secret")
_WORD_END = r"(?![\p{L}\p{N}])"
_OS = r"(?P<off>official|swyddogol)(?P<join>[ \t\-_:/(\[]{0,6})(?P<sens>sensitive|sensitif)"
_TOP = r"top[ \t\-_]{0,3}secret"

# What may stand before a marking that opens a line: reply and forward prefixes,
# quote marks, bullets, opening brackets and short bracketed tags such as [EXTERNAL].
_OPENER = regex.compile(
    r"(?:\s|(?:re|fw|fwd|aw|sv|vs|wg|tr|rv|rif|antw|ref|subject)\s*(?:\[\d+\]|\(\d+\))?\s*:"
    r"|\[[^\[\]\n]{0,40}\]|[>*#\"'\u00ab\u00bb\u201c\u201d\u2018\u2019\[({<_=|\u2022\u00b7~+\-])*",
    regex.IGNORECASE,
)
_LABEL = regex.compile(
    r"(?:^|[^\p{L}])(?:(?:government\s+)?security\s+(?:classification|marking)|protective\s+marking"
    r"|classification(?:\s+level)?|sec)\s*[:=]\s*[\[(]?\s*$",
    regex.IGNORECASE,
)
# What ends a marking: the end of the line, a colon or closing bracket, a spaced dash,
# or a descriptor (in capitals, or in any case when it ends the marking itself).
_END = r"(?:\s*$|\s*[:;\])}>|/]|\s*-(?=\s|$)|\s+-)"
_TERMINATOR = regex.compile(
    rf"{_END}|[\s\-_:/]+(?:{_DESC}){_WORD_END}|[\s\-_:/]+(?i:{_DESC}){_END}"
)
_NOT_A_MARKING_AFTER = regex.compile(r"[ \t\-]+(?:santas?|shoppers?|ballots?|admirers?|service|agents?)" + _WORD_END,
                                     regex.IGNORECASE)
_NOT_A_MARKING_BEFORE = regex.compile(r"(?:trade|open|kept|little|dirty)[ \t\-]+$", regex.IGNORECASE)
_WORD = regex.compile(r"\p{L}[\p{L}'\u2019]*")
_REPLY_TAGS = frozenset({"re", "fw", "fwd", "aw", "sv", "vs", "wg", "tr", "rv", "rif", "antw", "ref"})
# A line quoting another message's subject: "Subject: ..." in a forwarded header block.
_QUOTED_SUBJECT = regex.compile(r"[> \t]*subject[ \t]*:[ \t]*(?P<subject>.*)", regex.IGNORECASE)
_NW = r"[^\p{L}\p{N}]"
# How much of a line either side of a candidate its judgement looks at: a marking's
# context is short, and a bound keeps a long line linear.
_CONTEXT = 160
_CUT = "\u2026"   # stands for the rest of a line cut at _CONTEXT; matches no terminator
# A line of a body or attachment with more words than this is a sentence: prose.
_SENTENCE_WORDS = 12
# Characters read at each end of a longer line: bounds the work on a pathological line.
_LONG_LINE = 4096
# Read this many characters from each end of a very large text for its edge lines.
_EDGE_SLICE = 1 << 16


def highest(levels: Iterable[MarkingLevel | None]) -> MarkingLevel | None:
    """The highest of `levels`, ignoring None."""
    return max((level for level in levels if level is not None), key=_ORDER.__getitem__, default=None)


def parse_level(value: str | MarkingLevel) -> MarkingLevel:
    """A level as configuration writes it ("OFFICIAL-SENSITIVE", "top secret"); ValueError otherwise."""
    if isinstance(value, MarkingLevel):
        return value
    wanted = regex.sub(r"[\s_\-]+", " ", str(value).strip().upper())
    for level in MarkingLevel:
        if level.value.replace("-", " ") == wanted:
            return level
    raise ValueError(f"{value!r} is not a marking level; use one of {', '.join(level.value for level in MarkingLevel)}")


def edge_lines(text: str, count: int) -> list[str]:
    """The first and last `count` non-empty lines of `text` (all of them when there are few)."""
    if count <= 0:
        return []
    if len(text) <= 2 * _EDGE_SLICE:
        lines = [line for line in text.splitlines() if line.strip()]
        return lines if len(lines) <= 2 * count else lines[:count] + lines[-count:]
    head, tail = text[:_EDGE_SLICE].splitlines(), text[-_EDGE_SLICE:].splitlines()
    head, tail = head[:-1] or head, tail[1:] or tail    # the line at a cut is partial: keep it only if alone
    head, tail = [line for line in head if line.strip()], [line for line in tail if line.strip()]
    return head[:count] + tail[-count:]


def _is_upper(word: str) -> bool:
    return word == word.upper()


def _case(word: str) -> str:
    if word.isupper():
        return "upper"
    if word.islower():
        return "lower"
    return "title" if word[0].isupper() and word[1:].islower() else "mixed"


def _after_separator(prefix: str) -> bool:
    """The text before ends with a separator a marking may follow: ' - ', ':', '|', '(', '['."""
    p = prefix.rstrip()
    if not p:
        return False
    if p[-1] in ":;|[({<":
        return True
    stripped = p.rstrip("-/~|")
    return len(stripped) < len(p) and (not stripped or stripped[-1].isspace())


class MarkingReader:
    """Reads markings in lines and fields. Construct once: the patterns are compiled here."""

    def __init__(self, legacy: Mapping[str, MarkingLevel] = DEFAULT_LEGACY) -> None:
        self._legacy = {word.upper(): parse_level(level) for word, level in legacy.items()}
        for word in self._legacy:
            if not regex.fullmatch(r"\p{L}+", word):
                raise ValueError(f"{word!r} is not a single word such as 'RESTRICTED'")
        alternatives = [rf"(?P<os>{_OS})", rf"(?P<top>{_TOP})", r"(?P<secret>secret)"]
        if self._legacy:
            words = "|".join(regex.escape(w) for w in sorted(self._legacy, key=len, reverse=True))
            alternatives.append(rf"(?P<legacy>{words})")
        body = "|".join(alternatives)
        self._candidate = regex.compile(rf"{_WORD_START}(?:{body}){_WORD_END}", regex.IGNORECASE)
        caps = r"(?:OFFICIAL|SWYDDOGOL)[ \t\-_:/(\[]{0,6}(?:SENSITIVE|SENSITIF)|TOP[ \t\-_]{0,3}SECRET|SECRET"
        # A line holding nothing but a marking in capitals: a document's page header or
        # footer, or a quoted message's marking, wherever it stands in the text. Not the
        # legacy words: alone in capitals they are also spreadsheet values ("RESTRICTED").
        self._standalone = regex.compile(rf"{_NW}*+(?:{caps})(?:{_NW}++(?:{_DESC}))*+{_NW}*+")
        self._keywords = ("official", "swyddogol", "secret", *(w.lower() for w in self._legacy))
        self._keyword = regex.compile("|".join(self._keywords), regex.IGNORECASE)

    def may_hold(self, text: str) -> bool:
        """False when `text` cannot hold any marking: a cheap test before the patterns run."""
        lowered = text.lower()
        return any(word in lowered for word in self._keywords)

    def _keyword_lines(self, text: str) -> list[str]:
        """Every line of `text` holding a marking word, once each, found with plain
        substring search so that a large text costs one pass."""
        lowered = text.lower()
        starts: set[int] = set()
        if len(lowered) == len(text):
            for word in self._keywords:
                at = lowered.find(word)
                while at != -1:                  # each line found once: one pass per word
                    starts.add(text.rfind("\n", 0, at) + 1)
                    end = text.find("\n", at)
                    at = -1 if end == -1 else lowered.find(word, end)
        else:                                # lower() changed offsets: rare letters such as U+0130
            at = 0
            while (m := self._keyword.search(text, at)) is not None:
                starts.add(text.rfind("\n", 0, m.start()) + 1)
                end = text.find("\n", m.end())
                at = len(text) if end == -1 else end
        lines: list[str] = []
        for start in sorted(starts):
            end = text.find("\n", start)
            pieces = text[start: None if end == -1 else end].splitlines()
            lines.extend(pieces if len(pieces) == 1 else (p for p in pieces if self.may_hold(p)))
        return lines

    def read_field(self, value: str) -> MarkingLevel | None:
        """The highest level named anywhere in a field that holds only a marking, in any case."""
        return highest(self._level(m) for m in self._candidate.finditer(value))

    def read_line(self, line: str, *, in_text: bool = False) -> MarkingLevel | None:
        """The highest marking written as a marking in one line: a subject, or (`in_text`)
        a line at the top or bottom of a body part or attachment, where a line that is a
        sentence is prose and only a marking opening it or set off by a separator counts."""
        if len(line) > 2 * _LONG_LINE:           # a marking stands at a line's ends: read only those
            ends = (line[:_LONG_LINE] + _CUT, _CUT + line[-_LONG_LINE:])
            return highest(self.read_line(end, in_text=in_text) for end in ends)
        if not self.may_hold(line):
            return None
        candidates = list(self._candidate.finditer(line))
        sentence = in_text and bool(candidates) and len(line.split(maxsplit=_SENTENCE_WORDS)) > _SENTENCE_WORDS
        return highest(self._judge(m, line, sentence) for m in candidates)

    def read_text(self, text: str, edge_count: int) -> MarkingLevel | None:
        """The highest marking in a body part or an attachment's text: its first and last
        `edge_count` non-empty lines, lines holding nothing but a marking in capitals,
        and quoted "Subject:" lines."""
        lines = self._keyword_lines(text)
        if not lines:
            return None
        found = highest(self.read_line(line, in_text=True) for line in edge_lines(text, edge_count))
        for line in dict.fromkeys(lines):        # each distinct line once
            if found is MarkingLevel.TOP_SECRET:
                break
            if self._standalone.fullmatch(line):
                found = highest((found, self.read_field(line)))
            elif (quoted := _QUOTED_SUBJECT.match(line)) is not None:
                found = highest((found, self.read_line(quoted.group("subject"))))
        return found

    def _level(self, m: regex.Match[str]) -> MarkingLevel:
        if m.group("os"):
            return MarkingLevel.OFFICIAL_SENSITIVE
        if m.group("top"):
            return MarkingLevel.TOP_SECRET
        if m.group("secret"):
            return MarkingLevel.SECRET
        return self._legacy[m.group("legacy").upper()]

    def _judge(self, m: regex.Match[str], line: str, sentence: bool) -> MarkingLevel | None:
        start, end = m.span()
        word, level = m.group(), self._level(m)
        around = _Context(line, start, end)
        if _LABEL.search(around.prefix[-60:]):
            return level                     # "Classification: Secret"
        if sentence and not around.positioned:
            return None                      # "This email may contain OFFICIAL-SENSITIVE information and ..."
        if m.group("legacy") and not _is_upper(word):
            return None                      # "restricted between 7am and 9am"
        if m.group("os"):
            return level if _reads_as_official_sensitive(m, around) else None
        if m.group("legacy"):
            return level if around.positioned and around.ends_marking else None
        if _NOT_A_MARKING_AFTER.match(around.suffix) or _NOT_A_MARKING_BEFORE.search(around.prefix[-20:]):
            return None                      # "Secret Santa", "trade secret"
        if _is_upper(word):
            if not around.shouting or around.positioned:
                return level
            return None
        return level if around.positioned and around.ends_marking else None


class _Context:
    """The text around one candidate, and what it says; each fact worked out once, when asked."""

    def __init__(self, line: str, start: int, end: int) -> None:
        self.prefix = line[max(0, start - _CONTEXT): start]
        self.suffix = line[end: end + _CONTEXT] + (_CUT if len(line) > end + _CONTEXT else "")
        self._at_start = start <= _CONTEXT

    @cached_property
    def positioned(self) -> bool:
        """Opening the line, or after a separator: where a marking is written."""
        return self._at_start and bool(_OPENER.fullmatch(self.prefix)) or _after_separator(self.prefix)

    @cached_property
    def ends_marking(self) -> bool:
        return bool(_TERMINATOR.match(self.suffix))

    @cached_property
    def others(self) -> list[str]:
        """The other words of the line (near the candidate), reply prefixes left out."""
        words = _WORD.findall(self.prefix) + _WORD.findall(self.suffix)
        return [w for w in words if len(w) > 4 or w.lower() not in _REPLY_TAGS]

    @cached_property
    def shouting(self) -> bool:
        """The rest of the line is in capitals too, so capitals say nothing."""
        return bool(self.others) and all(_is_upper(w) for w in self.others)

    @cached_property
    def title_case(self) -> bool:
        """The rest of the line is in Title Case too, so Title Case says nothing."""
        long_words = [w for w in self.others if len(w) >= 4]
        return len(long_words) >= 2 and all(w[0].isupper() for w in long_words)


def _reads_as_official_sensitive(m: regex.Match[str], around: _Context) -> bool:
    join = m.group("join")
    if all(c in "-_" for c in join):
        return True                          # "OFFICIAL-SENSITIVE", "official_sensitive", any case
    off, sens = _case(m.group("off")), _case(m.group("sens"))
    if off == sens == "upper" and not around.shouting or off == sens == "title" and not around.title_case:
        return True
    if not around.positioned:
        return False
    if join.strip() == "":
        return True                          # "official sensitive" opening the line
    # After a colon or a spaced dash OFFICIAL is complete on its own; SENSITIVE
    # belongs to it only written the same way or ending the marking.
    return off == sens != "lower" or around.ends_marking
