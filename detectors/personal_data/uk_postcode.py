"""UK postcodes, validated against Royal Mail's format rules and the list of postcode areas.

A postcode is an outward code (area letters and district, e.g. SW1A, M1, B33, EC1A)
and an inward code (a digit and two letters, e.g. 1AA), with or without a space,
in any case. The format rules: the first letter is never Q, V or X; the second
never I, J or Z; a letter in third place (A9A) is one of A-H, J, K, P, S, T, U, W;
in fourth place (AA9A) one of A, B, E, H, M, N, P, R, V, W, X, Y; the inward
letters never C, I, K, M, O or V. The area must be one of the UK's postcode areas
(plus BF for BFPO and BX for non-geographic codes). GIR 0AA is also valid.
A weak signal: personal data only in bulk. Never puts the postcode into a finding.
"""

from __future__ import annotations

import regex

from detectors.base import Finding, Strength, personal_data_findings
from gateway.message import Message

NAME = "uk_postcode"
KIND = "postcode"

POSTCODE_AREAS = frozenset(
    """
    AB AL B BA BB BD BF BH BL BN BR BS BT BX CA CB CF CH CM CO CR CT CV CW DA DD DE DG DH DL DN
    DT DY E EC EH EN EX FK FY G GL GU GY HA HD HG HP HR HS HU HX IG IM IP IV JE KA KT KW KY L LA
    LD LE LL LN LS LU M ME MK ML N NE NG NN NP NR NW OL OX PA PE PH PL PO PR RG RH RM S SA SE SG
    SK SL SM SN SO SP SR SS ST SW SY TA TD TF TN TQ TR TS TW UB W WA WC WD WF WN WR WS WV YO ZE
    """.split()
)



def _any_case(letters: str) -> str:
    """A character class of `letters` (ranges allowed) in upper and lower case, e.g. "A-C" -> "[A-Ca-c]"."""
    return f"[{letters}{letters.lower()}]"


_FIRST, _SECOND = _any_case("A-PR-UWYZ"), _any_case("A-HK-Y")
_OUTWARD = (
    f"{_FIRST}[0-9][0-9]?"                                  # A9, A99
    f"|{_FIRST}{_SECOND}[0-9][0-9]?"                        # AA9, AA99
    f"|{_FIRST}[0-9]{_any_case('A-HJKPSTUW')}"              # A9A
    f"|{_FIRST}{_SECOND}[0-9]{_any_case('ABEHMNPRVWXY')}"   # AA9A
    f"|{_any_case('G')}{_any_case('I')}{_any_case('R')}"    # GIR 0AA, checked below
)
_INWARD = f"[0-9]{_any_case('ABD-HJLNP-UW-Z')}{{2}}"
# The outward code is read by a lookbehind so that every match starts at a digit (fast to find).
_PATTERN = regex.compile(r"(?<=(?<!\w)(?P<out>" + _OUTWARD + r") ?)(?P<in>" + _INWARD + r")(?!\w)")
_AREA = regex.compile(r"[A-Z]{1,2}")
# Where an inward code can start: a scan that skips to digits finds these, and _PATTERN (whose
# lookbehind makes it try every character) is tried only there. A match is exactly an inward
# code, and two inward codes never overlap, so this finds what _PATTERN.finditer finds.
_INWARD_START = regex.compile(_INWARD)


def normalise_postcode(candidate: str) -> str | None:
    """The postcode in its standard form ("SW1A 1AA"), or None when `candidate` is not a valid one."""
    text = candidate.strip()
    m = _PATTERN.search(text)
    return _normalised(m) if m and m.start("out") == 0 and m.end() == len(text) else None


def is_valid_postcode(candidate: str) -> bool:
    return normalise_postcode(candidate) is not None


def _normalised(m: regex.Match[str]) -> str | None:
    outward, inward = m.group("out").upper(), m.group("in").upper()
    if outward == "GIR":
        return "GIR 0AA" if inward == "0AA" else None
    area = _AREA.match(outward)
    if area is None or area.group() not in POSTCODE_AREAS:
        return None
    return f"{outward} {inward}"


class PostcodeDetector:
    name = NAME

    def detect(self, message: Message) -> list[Finding]:
        distinct: dict[str, set[str]] = {}
        for segment in message.segments:
            text = segment.text
            for start in _INWARD_START.finditer(text):
                m = _PATTERN.match(text, start.start())
                if m is None:
                    continue
                value = _normalised(m)
                if value is not None:
                    distinct.setdefault(segment.location, set()).add(value)
        return personal_data_findings(NAME, KIND, distinct, Strength.WEAK, confidence=0.9)
