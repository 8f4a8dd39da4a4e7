"""UK bank account details: a sort code together with an account number.

Either half alone identifies nobody, and both are short numbers that turn up
everywhere (dates, references), so the finding is the pair:

- a sort code written `12-34-56` or `12 34 56`, or six digits run together
  (`123456`) only when labelled "sort code" (within 40 characters, or its column name);
- an eight-digit account number, or seven digits when labelled "account";
- the two within 60 characters of each other, or in the same line within 200,
  or both labelled ("sort code", "account number/no") within 200 characters,
  as on a form or in the columns of one table row;
- a sort code that also reads as a dd-mm-yy date (`12-03-24`) pairs only when it
  is labelled "sort code": "invoice 12-03-24, order 12345678" is a date and an
  order number;
- a word about banking near the pair (bank, account, a/c, BACS, payee, allowance ...)
  unless either half is labelled: "Time: 10-30-45 ... reference 47870227" is not
  bank details. The account number may also be written in two fours (`7337 9473`).

Each account number is paired with the nearest sort code. The count is the number
of distinct (sort code, account number) pairs. No bank modulus check is made:
VocaLink's rules need a per-bank table that changes. Never puts either number into
a finding.
"""

from __future__ import annotations

from bisect import bisect_left

import regex

from detectors.base import Finding, Strength, personal_data_findings
from detectors.personal_data.context import ContextWords
from gateway.message import Message

NAME = "uk_bank_account"
KIND = "bank account number"
DETAIL = "sort code with account number"

# Digit first, boundary checks after it: the engine skips non-digits without trying the lookbehinds.
_PATTERN = regex.compile(
    r"[0-9](?<!\w[0-9])(?<![0-9][\-.][0-9])(?:"
    # 12-34-56, not part of a longer run of such groups
    r"(?P<sort>[0-9]-[0-9]{2}-[0-9]{2})(?!-[0-9]{1,2}(?![0-9]))"
    # 12 34 56, likewise (and not the tail of "01 12 34 56")
    r"|(?<!(?<![0-9])[0-9]{1,2} [0-9])(?P<spaced_sort>[0-9] [0-9]{2} [0-9]{2})(?! [0-9]{1,2}(?![0-9]))"
    r"|(?P<split_account>[0-9]{3} [0-9]{4})(?![\-. ][0-9])"
    r"|(?P<account>[0-9]{6,7})(?![\-.][0-9])"
    r"|(?P<plain_sort>[0-9]{5})(?![\-.][0-9])"
    r")(?!\w)"
)
# Labels: within 40 characters (not anywhere in the line), or the column name.
_SORT_CODE_WORDS = ContextWords(r"sort\s*-?\s*codes?", r"s/c", window=40, same_line=False)
_ACCOUNT_WORDS = ContextWords(
    r"accounts?", r"acc", r"acct", r"a/c", r"account\s*(?:no|number|num)\.?", r"bank\s+details",
    window=40, same_line=False,
)
# Words that say the numbers are bank details at all; a pair with none of them near (and
# neither half labelled) is a time and a reference, a grid reference and a site number ...
_BANK_WORDS = ContextWords(
    r"banks?", r"banking", r"sort\s*-?\s*codes?", r"s/c", r"accounts?", r"acc", r"acct", r"a/c", r"bacs",
    r"payee", r"pay", r"paid", r"payments?", r"building\s+society", r"direct\s+debit", r"standing\s+order", r"paid\s+(?:in)?to",
    r"transfer", r"allowance", r"salary", r"wages", r"refund",
)
# A sort code written as one (12-34-56, 12 34 56): without one, and without a sort-code label
# anywhere, the text holds no sort code; one fast scan and a word check rule most text out.
_SORT_CODE_SHAPE = regex.compile(r"[0-9]{2}([\- ])[0-9]{2}\1[0-9]{2}")
NEAR = 60            # a sort code and account number this close belong together
SAME_LINE = 200      # ... or this close on one line, or both labelled
CONFIDENCE = 0.9


def is_plausible_sort_code(candidate: str) -> bool:
    """True for six digits (hyphens or spaces allowed) that are not all one digit."""
    digits = candidate.replace("-", "").replace(" ", "")
    return len(digits) == 6 and digits.isascii() and digits.isdigit() and len(set(digits)) > 1


def is_plausible_account_number(candidate: str) -> bool:
    """True for seven or eight digits that are not all one digit."""
    return len(candidate) in (7, 8) and candidate.isascii() and candidate.isdigit() and len(set(candidate)) > 1


def _reads_as_date(sort_code: str) -> bool:
    day, month = int(sort_code[:2]), int(sort_code[2:4])
    return 1 <= day <= 31 and 1 <= month <= 12


def _gap(a: tuple[int, int], b: tuple[int, int]) -> int:
    return max(a[0], b[0]) - min(a[1], b[1])


def account_pairs(text: str) -> set[tuple[str, str]]:
    """The distinct (sort code, account number) pairs written in `text`, each as bare digits."""
    sort_codes: list[tuple[tuple[int, int], str, bool]] = []
    accounts: list[tuple[tuple[int, int], str]] = []
    labels = not _SORT_CODE_WORDS.absent_from(text)     # False: no sort code is labelled
    if not labels and not _SORT_CODE_SHAPE.search(text):
        return set()
    for m in _PATTERN.finditer(text):
        written = m.group()
        if m.group("sort") is not None or m.group("spaced_sort") is not None:
            value = written.replace("-", "").replace(" ", "")
            if is_plausible_sort_code(value):
                sort_codes.append((m.span(), value, labels and _SORT_CODE_WORDS.has_context(text, *m.span())))
        elif m.group("plain_sort") is not None:
            if labels and is_plausible_sort_code(written) and _SORT_CODE_WORDS.has_context(text, *m.span()):
                sort_codes.append((m.span(), written, True))
        elif m.group("split_account") is not None:
            value = written.replace(" ", "")
            if is_plausible_account_number(value):
                accounts.append((m.span(), value))
        elif is_plausible_account_number(written):
            accounts.append((m.span(), written))
    pairs: set[tuple[str, str]] = set()
    if not sort_codes:
        return pairs
    starts = [sc[0][0] for sc in sort_codes]
    for span, account in accounts:
        # The nearest sort code is the one just before or just after.
        i = bisect_left(starts, span[0])
        sort_span, sort_code, sort_labelled = min(sort_codes[max(0, i - 1) : i + 1], key=lambda sc: _gap(span, sc[0]))
        gap = _gap(span, sort_span)
        if gap > SAME_LINE:
            continue
        close = gap <= NEAR or "\n" not in text[min(span[1], sort_span[1]) : max(span[0], sort_span[0])]
        needs_label = len(account) == 7 or not close
        account_labelled = needs_label and _ACCOUNT_WORDS.has_context(text, *span)
        if len(account) == 7 and not account_labelled:
            continue
        if _reads_as_date(sort_code) and not sort_labelled:
            continue
        if not (close or (sort_labelled and account_labelled)):
            continue
        if sort_labelled or account_labelled or _BANK_WORDS.has_context(
            text, min(span[0], sort_span[0]), max(span[1], sort_span[1])
        ):
            pairs.add((sort_code, account))
    return pairs


class BankAccountDetector:
    name = NAME

    def detect(self, message: Message) -> list[Finding]:
        distinct: dict[str, set[tuple[str, str]]] = {}
        for segment in message.segments:
            pairs = account_pairs(segment.text)
            if pairs:
                distinct.setdefault(segment.location, set()).update(pairs)
        return personal_data_findings(NAME, KIND, distinct, Strength.STRONG, confidence=CONFIDENCE, detail=DETAIL)
