"""Payment card numbers (PANs): Luhn-valid, in a known issuer range, printed like a card.

A candidate is 13-19 digits, run together or grouped with one kind of separator
(space or hyphen) in a way cards are printed: 4-4-4-4 (16), 4-6-5 (Amex, 15),
4-6-4 (Diners, 14), 4-4-4-4-1/2/3 (17-19). A card inside a longer run of digit
groups (a card followed by its expiry or security code) is found too.

The rule, in order:
1. The Luhn check must pass and the number must lie in a known issuer range with a
   length that issuer uses (Visa 4: 13/16/19; Mastercard 51-55, 2221-2720: 16;
   Amex 34, 37: 15; Discover 6011, 644-649, 65: 16-19; UnionPay 62: 16-19;
   JCB 3528-3589: 16-19; Diners 300-305, 36, 38, 39: 14-19; Maestro 50, 56-69:
   13-19). Numbers of one repeated digit are rejected. An order or phone number
   that happens to pass Luhn but starts outside these ranges is never a finding.
2. With card context (card, visa, expiry, CVV, payment, debit, credit ...) in the
   same line, within 60 characters or as the column name of a table: a finding,
   confidence 0.95, however the digits are grouped.
3. Without context: a finding only when grouped the way cards are embossed,
   4-4-4-4 for 16 digits or Amex's 4-6-5 (confidence 0.7). A bare run of digits
   or any other grouping without context is a reference number, not a card.

12-digit Maestro numbers are not looked for: too many other 12-digit numbers pass.
Never puts the number into a finding.
"""

from __future__ import annotations

import regex

from detectors.base import Category, Finding, Strength
from detectors.personal_data.context import ContextWords
from gateway.message import Message

NAME = "payment_card"
KIND = "payment card number"

# A run of digit groups joined by one or two spaces or hyphens; card numbers are looked for inside it,
# so "4111 1111 1111 1111 12/27 123" still yields the card in front of the expiry date.
# It starts with four digits and a separator or with 13 digits run together (every card does).
_RUN = regex.compile(r"[0-9](?<!\w[0-9])(?:[0-9]{3}[ \-]{1,2}[0-9]|[0-9]{12})[0-9]*(?:[ \-]{1,2}[0-9]+)*(?!\w)")
_GROUP = regex.compile(r"[0-9]+")
_CONTEXT = ContextWords(
    r"cards?", r"card\s*(?:no|number|holder)\.?", r"cardholder", r"credit", r"debit", r"visa",
    r"master\s?card", r"amex", r"american\s+express", r"maestro", r"discover", r"jcb", r"diners",
    r"union\s?pay", r"expiry", r"expires?", r"exp\s*date", r"valid\s+(?:thru|through|until|to)",
    r"cvv2?", r"cvc2?", r"cv2", r"csc", r"security\s+code", r"payments?", r"pan", r"paid",
    r"transactions?", r"charged", r"refunds?", r"purchases?",
)
_PRINTED_GROUPINGS = {(4, 4, 4, 4), (4, 6, 5), (4, 6, 4), (4, 4, 4, 4, 1), (4, 4, 4, 4, 2), (4, 4, 4, 4, 3)}
# Window sizes (in groups) tried at each position, most likely first: a 16-digit card
# followed by a three-digit security code is commoner than a 19-digit card.
_WINDOW_SIZES = (4, 3, 5)
# Groupings that on their own, without any card word nearby, look like a card.
_EMBOSSED_GROUPINGS = {(4, 4, 4, 4), (4, 6, 5)}
CONFIDENCE_IN_CONTEXT = 0.95
CONFIDENCE_WITHOUT_CONTEXT = 0.7


def luhn_valid(digits: str) -> bool:
    """The Luhn (mod 10) check over a string of ASCII digits."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def card_issuer(digits: str) -> str | None:
    """The card scheme whose range and lengths `digits` falls in, or None."""
    n = len(digits)
    p1, p2, p3, p4 = int(digits[:1]), int(digits[:2]), int(digits[:3]), int(digits[:4])
    if p1 == 4:
        return "Visa" if n in (13, 16, 19) else None
    if 51 <= p2 <= 55 or 2221 <= p4 <= 2720:
        return "Mastercard" if n == 16 else None
    if p2 in (34, 37):
        return "American Express" if n == 15 else None
    if p4 == 6011 or 644 <= p3 <= 649 or p2 == 65:
        return "Discover" if 16 <= n <= 19 else None
    if p2 == 62:
        return "UnionPay" if 16 <= n <= 19 else None
    if 3528 <= p4 <= 3589:
        return "JCB" if 16 <= n <= 19 else None
    if 300 <= p3 <= 305 or p2 in (36, 38, 39):
        return "Diners Club" if 14 <= n <= 19 else None
    if p2 == 50 or 56 <= p2 <= 69:
        return "Maestro" if 13 <= n <= 19 else None
    return None


def is_valid_card_number(candidate: str) -> bool:
    """True when `candidate` (spaces or hyphens allowed) is 13-19 digits, Luhn-valid, in an issuer range."""
    digits = candidate.replace(" ", "").replace("-", "")
    if not (13 <= len(digits) <= 19) or not digits.isdigit() or not digits.isascii():
        return False
    if len(set(digits)) == 1:
        return False
    return card_issuer(digits) is not None and luhn_valid(digits)


def _candidates(run_start: int, run: str) -> list[tuple[int, int, str, tuple[int, ...]]]:
    """(start, end, digits, grouping) of each printed-card-shaped stretch of a digit run, left to right."""
    groups = [(g.start(), g.end()) for g in _GROUP.finditer(run)]
    lengths = [b - a for a, b in groups]
    out = []
    i = 0
    while i < len(groups):
        first = lengths[i]
        # Every printed grouping starts with four digits; a lone group is a card of 13-19.
        sizes = _WINDOW_SIZES if first == 4 else (1,) if 13 <= first <= 19 else ()
        for size in sizes:
            grouping = tuple(lengths[i : i + size])
            if size > 1 and grouping not in _PRINTED_GROUPINGS:
                continue
            window = groups[i : i + size]
            if size > 1 and len({run[b] for _, b in window[:-1]}) != 1:
                continue                # mixed separators: not one number
            digits = "".join(run[a:b] for a, b in window)
            if is_valid_card_number(digits):
                out.append((run_start + window[0][0], run_start + window[-1][1], digits, grouping))
                i += size
                break
        else:
            i += 1
    return out


class PaymentCardDetector:
    name = NAME

    def detect(self, message: Message) -> list[Finding]:
        distinct: dict[str, dict[str, float]] = {}
        for segment in message.segments:
            text = segment.text
            for run in _RUN.finditer(text):
                for start, end, digits, grouping in _candidates(run.start(), run.group()):
                    if _CONTEXT.has_context(text, start, end):
                        confidence = CONFIDENCE_IN_CONTEXT
                    elif grouping in _EMBOSSED_GROUPINGS:
                        confidence = CONFIDENCE_WITHOUT_CONTEXT
                    else:
                        continue
                    values = distinct.setdefault(segment.location, {})
                    values[digits] = max(confidence, values.get(digits, 0.0))
        return [
            Finding(
                detector=NAME,
                category=Category.PERSONAL_DATA,
                kind=KIND,
                location=location,
                count=len(values),
                confidence=max(values.values()),
                strength=Strength.STRONG,
            )
            for location, values in distinct.items()
        ]
