"""International Bank Account Numbers, validated by ISO 7064 mod-97 and the SWIFT registry.

An IBAN is a country code, two check digits and a national account number (BBAN),
written run together or in groups of four separated by single spaces, in any case.
It is valid when its length is the one the SWIFT IBAN registry gives for its
country and the whole number, rearranged (first four characters moved to the end,
letters as 10..35), leaves remainder 1 modulo 97. Both checks together make a
chance match practically impossible, so no context words are needed.
Never puts the IBAN into a finding.
"""

from __future__ import annotations

import regex

from detectors.base import Finding, Strength, personal_data_findings
from gateway.message import Message

NAME = "iban"
KIND = "IBAN"

# IBAN length per country: every country in the SWIFT IBAN registry (89 of them, as of 2024).
IBAN_LENGTHS: dict[str, int] = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HN": 28, "HR": 21, "HU": 28,
    "IE": 22, "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28,
    "LC": 32, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22,
    "MK": 19, "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23,
    "PK": 24, "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24,
    "SC": 31, "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28,
    "TL": 23, "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}

# Country, check digits, then up to eight more groups of four (the last may be short),
# each optionally after one space; the exact length comes from the registry afterwards.
# The country code is read by a lookbehind so that every match starts at a digit (fast to find).
_PATTERN = regex.compile(
    r"(?<=(?<!\w)(?P<country>[A-Za-z]{2}))"
    r"[0-9]{2}(?: ?[A-Za-z0-9]{4}){2,7}(?: ?[A-Za-z0-9]{1,4})?"
    r"(?!\w)"
)
_SPACE_GROUPS = regex.compile(r"[A-Z0-9]{4}(?: [A-Z0-9]{4})*(?: [A-Z0-9]{1,4})?")


def is_valid_iban(candidate: str) -> bool:
    """True when `candidate` (any case, spaces allowed) has its country's registry length and mod-97 == 1."""
    compact = candidate.replace(" ", "").upper()
    if not compact.isascii() or not compact.isalnum() or len(compact) < 5:
        return False
    if not (compact[:2].isalpha() and compact[2:4].isdigit()):
        return False
    if IBAN_LENGTHS.get(compact[:2]) != len(compact):
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(ch, 36)) for ch in rearranged)) % 97 == 1


def _iban_in(written: str) -> str | None:
    """The IBAN at the start of a match, cut to its country's length, or None.

    The pattern may run on into a following four-letter word ("... 7034 then"); the
    registry length says where the IBAN ends, and the cut must fall between groups.
    """
    compact_chars = [i for i, ch in enumerate(written) if ch != " "]
    length = IBAN_LENGTHS.get(written[:2].upper())
    if length is None or len(compact_chars) < length:
        return None
    end = compact_chars[length - 1] + 1
    if end < len(written) and written[end] != " ":
        return None
    text = written[:end]
    if " " in text and not _SPACE_GROUPS.fullmatch(text.upper()):
        return None                     # spaces, but not in groups of four
    compact = text.replace(" ", "").upper()
    return compact if is_valid_iban(compact) else None


class IbanDetector:
    name = NAME

    def detect(self, message: Message) -> list[Finding]:
        distinct: dict[str, set[str]] = {}
        for segment in message.segments:
            for m in _PATTERN.finditer(segment.text):
                value = _iban_in(m.group("country") + m.group())
                if value is not None:
                    distinct.setdefault(segment.location, set()).add(value)
        return personal_data_findings(NAME, KIND, distinct, Strength.STRONG, confidence=0.99)
