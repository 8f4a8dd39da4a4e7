"""Anchors: cheap proof that a set of patterns cannot match anywhere in a text.

The detectors' context words and special-category terms are regexes run by the `regex`
module, which reads ordinary prose slowly, and most mail holds none of the words they
need. `Anchors.build` writes each pattern out every way it can be written and picks,
for each way, one literal it must contain: a whole word ("criminal", not "of"), or a
piece of text ("a&e", "passport" in "passportno"). A text's `Vocabulary` (its whole
words and its bytes, lower-cased, worked out once per text and shared by every
detector) answers whether any of those literals is there with a set intersection and a
few substring tests, all in C. None there means no pattern can match anywhere in the
text, nor in any window of it, nor in any CSV cell of it.

The check never says "absent" where a pattern could match: `Vocabulary` holds the text
with ASCII letters lower-cased, and where a pattern asks for an ASCII letter, any case,
the only other characters it takes are "İ", "ſ" and "K"; text holding any of them has no
`Vocabulary` (callers then run their patterns). A pattern no literal can be found for
makes `Anchors.build` return None.

Pure: no I/O. A `Vocabulary` is cached with its text and never leaves the process.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable
from functools import lru_cache
from re import _constants as sre, _parser as sre_parse  # type: ignore[attr-defined]  # used at import only

# Characters a case-insensitive ASCII letter matches besides itself and its other case.
_CASE_TRAPS = ("\u0130", "\u017f", "\u212a")
# Bytes of ASCII letters, lower-cased; every other byte (non-ASCII included) is a space.
_WORD_BYTES = bytes(c | 0x20 if chr(c).isascii() and chr(c).isalpha() else 0x20 for c in range(256))
_ANY = "\x00"          # stands for a character that may be a letter
_GAP = "\x01"          # stands for a character that is never a letter (space, digit, punctuation)
_MAX_SPELLINGS = 5_000
_SMALL = 3             # a class of more letters than this may be any letter; a repeat above this, any count
_MIN_PREFIX = 4        # shortest word prefix offered as a piece of text
# Words nearly every message has: a rarer literal of the same pattern is chosen where there is one.
_FUNCTION_WORDS = frozenset("""
a an the is are was were be been being am has have had having do does did done of to in at on for from with by
as and or not no nor but if into out up down off over under his her their its our your my he she they it we you i
this that these those who whom whose which what when where why how all any some more most other such only own same
so than too very can will just should now new get got go goes went come came coming make made take taken see seen
know known give given used use also after before
""".split())
_MAIL_WORDS = frozenset("""
number date name review note notes meeting meetings record records letter register risk order support plan care
home family public form status needs need health medical report assessment application appointment referral
investigation enquiry strategy conference section court police leave signed self child children parent parents
mother father friends mum dad white black mixed british english positive learning hearing award claim placement
removal centre office work open subject recent document details
""".split())

_FUNCTION_PREFIXES = frozenset(w[:n] for w in _FUNCTION_WORDS for n in range(1, len(w) + 1))
_MAIL_PREFIXES = frozenset(w[:n] for w in _MAIL_WORDS for n in range(1, len(w) + 1))

_Literal = tuple[str, str]        # ("word", w): w is a whole word; ("text", s): s is a substring


class Vocabulary:
    """What one text can hold, for anchors: its bytes and its words, ASCII letters lower-cased.

    A CSV cell joins what its quotes separate ("so"rt reads as sort), so the text without its
    quotes is looked at too; it is made only when needed (and only if the text has quotes).
    """

    __slots__ = ("data", "_unquoted", "_words")

    def __init__(self, text: str):
        self.data = text.encode("utf-8", "surrogatepass").lower()
        self._unquoted: bytes | None = None if b'"' in self.data else b""
        self._words: frozenset[bytes] | None = None

    @property
    def unquoted(self) -> bytes:
        """The text without its quotes; empty when it has none."""
        if self._unquoted is None:
            self._unquoted = self.data.replace(b'"', b"")
        return self._unquoted

    @property
    def words(self) -> frozenset[bytes]:
        """Every run of ASCII letters in the text (or in it unquoted): each of its ASCII words, and a few more."""
        if self._words is None:
            self._words = frozenset(self.data.translate(_WORD_BYTES).split()
                                    + self.unquoted.translate(_WORD_BYTES).split())
        return self._words

    def holds(self, needle: bytes) -> bool:
        return needle in self.data or needle in self.unquoted


@lru_cache(maxsize=4)      # the segments of one message, like context.table_of
def vocabulary(text: str) -> Vocabulary | None:
    """The `Vocabulary` of `text`, or None when a character in it could make a check unsound."""
    if not text.isascii() and any(trap in text for trap in _CASE_TRAPS):
        return None
    return Vocabulary(text)


@lru_cache(maxsize=4)
def lowered(text: str) -> str:
    """`text.lower()`, shared: for text with a `Vocabulary`, it has the text's letters at the same offsets."""
    return text.lower()


class _TooMany(Exception):
    pass


def _join(heads: set[str], tails: set[str]) -> set[str]:
    out = {h + t for h in heads for t in tails}
    if len(out) > _MAX_SPELLINGS:
        raise _TooMany
    return out


def _char(ch: str) -> str:
    if ch.isascii():
        return ch.lower() if ch.isalpha() else ch
    # A non-ASCII letter (or anything with case, like "Ⓐ") may match more than itself; punctuation stays.
    return _ANY if ch.isalnum() or ch.lower() != ch or ch.upper() != ch else ch


def _spellings(seq: "sre_parse.SubPattern") -> set[str]:
    """Every way `seq` can be written out, letters lower-cased, with _ANY and _GAP for what varies."""
    out = {""}
    for op, av in seq:
        if op is sre.LITERAL:
            out = _join(out, {_char(chr(av))})
        elif op is sre.IN:
            choices: set[str] = set()
            for member, value in av:
                if member is sre.LITERAL:
                    choices.add(_char(chr(value)))
                elif member is sre.RANGE:
                    choices |= {_char(chr(c)) for c in range(value[0], value[1] + 1)}
                elif member is sre.CATEGORY and value in (sre.CATEGORY_DIGIT, sre.CATEGORY_SPACE):
                    choices.add(_GAP)
                else:                                   # negation, \w, ...: may be anything
                    choices.add(_ANY)
            letters = {c for c in choices if c.isalpha()}
            others = choices - letters
            if len(others - {_ANY}) > 1:                # several non-letters: one gap
                others = (others & {_ANY}) | {_GAP}
            if len(letters) > _SMALL:
                letters, others = set(), others | {_ANY}
            out = _join(out, letters | others)
        elif op is sre.SUBPATTERN:
            out = _join(out, _spellings(av[3]))
        elif op is sre.BRANCH:
            alternatives: set[str] = set()
            for branch in av[1]:
                alternatives |= _spellings(branch)
            out = _join(out, alternatives)
        elif op in (sre.MAX_REPEAT, sre.MIN_REPEAT, sre.POSSESSIVE_REPEAT):
            least, most, item = av
            once = _spellings(item)
            if most > _SMALL:
                # Any count: a run of non-letters is one gap, anything with a letter may be any letters.
                once = {_GAP if all(not c.isalpha() and c != _ANY for c in s) else _ANY for s in once if s}
                least, most = min(least, 1), 1
            repeated, current = ({""} if least == 0 else set()), {""}
            for i in range(1, most + 1):
                current = _join(current, once)
                if i >= least:
                    repeated |= current
            out = _join(out, repeated)
        elif op in (sre.AT, sre.ASSERT, sre.ASSERT_NOT):
            continue                                    # consume nothing
        else:
            out = _join(out, {_ANY})
    return out


def _literals(spelling: str, end_bounded: bool, words: bool = True) -> set[_Literal]:
    """The literals one spelling must contain.

    Any piece of the spelling between gaps and _ANY (a literal space is part of a piece), and
    any prefix of a run of its letters, is a substring of every match. A run of letters is a
    whole word when a non-letter (or the start of the pattern, which follows none) stands
    before it and a non-letter after it, or it ends the pattern and `end_bounded` (the pattern
    is followed by no letter). Not otherwise: context words are also looked for in windows of
    text, and a window may cut a word short.
    """
    out: set[_Literal] = set()
    for piece in re.finditer(r"[^\x01\x00]+", spelling):
        text = piece.group()
        out.add(("text", text))
        for run in re.finditer(r"[a-z]+", text):
            start, end = piece.start() + run.start(), piece.start() + run.end()
            before = spelling[start - 1] if start else ""
            after = spelling[end] if end < len(spelling) else ""
            whole_before = before != _ANY and not before.isalpha()
            whole_after = (after != _ANY and not after.isalpha()) if after else end_bounded
            word = run.group()
            if words and whole_before and whole_after:
                out.add(("word", word))
            out.update(("text", word[:n]) for n in range(_MIN_PREFIX, len(word) + 1))
    return out


def _cost(literal: _Literal) -> float:
    kind, s = literal
    if kind == "word":
        if s in _FUNCTION_WORDS:
            return 1000.0
        if s in _MAIL_WORDS:
            return 30.0
        return 200.0 if len(s) == 1 else 30.0 if len(s) == 2 else 8.0 if len(s) == 3 else 1.0
    # A substring test costs more than a word lookup, and finds its text inside other words
    # ("medica" in "medical"): never cheaper than the common word it begins.
    # Each is one more scan of the text, so even a long phrase costs more than a common word.
    cost = 1000.0 if len(s) == 1 else 200.0 if len(s) == 2 else 80.0 if len(s) == 4 else 50.0
    if s in _FUNCTION_PREFIXES:
        return max(cost, 1000.0)
    if s in _MAIL_PREFIXES:
        return max(cost, 60.0)
    return cost


def alternation(words: Iterable[str]) -> str:
    """A regex alternation of literal `words`, shared prefixes factored out (a trie):
    the stdlib engine then tries a few characters per offset instead of every word."""
    root: dict[str, dict] = {}
    for word in words:
        node = root
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict[str, dict]) -> str:
        alternatives = [re.escape(ch) + emit(child) for ch, child in sorted(node.items()) if ch]
        if "" in node:
            alternatives.append("")                     # a word ending here: after the longer ones
        return alternatives[0] if len(alternatives) == 1 else "(?:" + "|".join(alternatives) + ")"
    return emit(root)


class Anchors:
    """Literals to look for in a `Vocabulary`; `found` says which are there."""

    def __init__(self, words: Iterable[str], texts: Iterable[str]):
        self._words = frozenset(w.encode() for w in words)
        # A text containing another is there whenever it is: look for the shorter only.
        texts = set(texts)
        kept = [t for t in texts if not any(o != t and o in t for o in texts)]
        self._texts = tuple((t, t.encode()) for t in sorted(kept, key=len))
        self._covers = {t: frozenset(o for o in texts if t in o) for t in kept}

    @classmethod
    def build(cls, patterns: Iterable[str], end_bounded: bool = False,
              words: bool = True) -> tuple["Anchors", list[frozenset[_Literal]]] | None:
        """Anchors for `patterns` (regex source, matched case-insensitively after no letter or
        digit, and, when `end_bounded`, before none), with the literals each pattern is looked
        for by (`found` reports one of them wherever the pattern matches); None when some
        pattern has none. Without `words`, only pieces of text: checking them does not need
        the text's words (`Vocabulary.words`)."""
        patterns = list(patterns)
        spellings: list[tuple[int, set[_Literal]]] = []
        for i, pattern in enumerate(patterns):
            source = pattern.replace(r"\p{Lu}", "[A-Z]").replace(r"\p{L}", "[a-z]")
            try:
                written = _spellings(sre_parse.parse(source))
            except (_TooMany, re.error, OverflowError, RecursionError):
                return None
            for spelling in written:
                literals = _literals(spelling, end_bounded, words)
                if not literals:
                    return None
                spellings.append((i, literals))
        # Greedy cover: the literal that covers most spellings for its cost, until all are covered
        # (a heap of stale scores, each refreshed when it comes to the top).
        holders: dict[_Literal, set[int]] = {}
        for k, (_, literals) in enumerate(spellings):
            for literal in literals:
                holders.setdefault(literal, set()).add(k)
        costs = {literal: _cost(literal) for literal in holders}

        def rank(literal: _Literal, count: int) -> tuple[float, int, _Literal]:
            return (-count / costs[literal], -len(literal[1]), literal)

        heap = [rank(literal, len(ks)) for literal, ks in holders.items()]
        heapq.heapify(heap)
        uncovered = set(range(len(spellings)))
        per_pattern: list[set[_Literal]] = [set() for _ in patterns]
        while uncovered:
            _, _, best = heapq.heappop(heap)
            holders[best] &= uncovered
            fresh = rank(best, len(holders[best]))
            if heap and fresh > heap[0]:
                if holders[best]:
                    heapq.heappush(heap, fresh)
                continue
            for k in holders[best]:
                per_pattern[spellings[k][0]].add(best)
            uncovered -= holders[best]
        chosen = set().union(*per_pattern)
        anchors = cls((s for kind, s in chosen if kind == "word"), (s for kind, s in chosen if kind == "text"))
        return anchors, [frozenset(p) for p in per_pattern]

    @property
    def texts(self) -> tuple[str, ...]:
        return tuple(t for t, _ in self._texts)

    def found(self, vocab: Vocabulary) -> set[_Literal]:
        """The chosen literals `vocab` holds (a text holding another counts as held with it)."""
        out: set[_Literal] = {("word", w.decode()) for w in self._words.intersection(vocab.words)}
        for text, needle in self._texts:
            if vocab.holds(needle):
                out.update(("text", t) for t in self._covers[text])
        return out

    def any_in(self, vocab: Vocabulary) -> bool:
        """False only when no pattern can match anywhere in the text `vocab` was made from."""
        if any(vocab.holds(needle) for _, needle in self._texts):
            return True
        return bool(self._words) and not self._words.isdisjoint(vocab.words)
