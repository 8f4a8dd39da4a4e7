"""A greeting that names someone other than the recipient ("Dear Sarah," to john.smith@...):
the sign of a message sent to the wrong person. The rule `greeting-mismatch` holds such a
message when it is also sensitive.

Only the opening of the message is read: the first non-empty lines (at most three, within the
first ten) of the first body part, stopping at a quoted reply or forwarded block. A greeting
is "Dear / Hi / Hello / Hey / Hiya / Good morning ..." followed by a capitalised name, with or
without a title ("Dear Dr Patel"); several names joined by "and" / "&" are all read. Group
and formal openings ("Dear all", "Hi team", "Dear Sir/Madam", "Hi there", "Dear colleagues")
and a greeting with no name ("Good morning") name nobody and are never findings. A bare name
line ("Sarah,") is not read as a greeting: too many first lines look like it.

The greeted person is among the recipients when any greeted name matches any recipient
(internal ones included: a colleague in Cc): a word of a To/Cc display name or of the name the
recipient history remembers, a part of a recipient's local part, or a name run together
with another in a local part (3+ letters at its start, "sarahjones"; 4+ at its end, "jsmith").
Names match when equal, when one starts the other (Jo / Joanna), when they share their first
three letters (Sam / Samantha, Kate / Katherine) or through a short table of common English
nicknames (Bob / Robert). Matching errs towards "same person": a missed mismatch costs less
than holding mail for a nickname the gateway does not know. When nobody matches, each non-internal
envelope recipient whose name is known and different gets a finding: a display name holding a
name-like word, or, with no display name, a local part of two or more name-like parts
(`john.smith`, not `info`, `accounts.payable` or `jsmith`, which could be anyone's) whose
first letter is not the greeted name's (`s.jones` could be Sarah). Role addresses and
internal recipients never get one.

The finding never holds the greeted name or any text of the message. Never does I/O.
"""

from __future__ import annotations

import re

from detectors.base import Category, Finding, Signal
from detectors.recipients.forwarding import ROLE_WORDS, TITLES, display_words, fold, local_segments, spellings
from gateway.message import BODY, Message
from gateway.policy import DomainList, domain_of

NAME = "greeting_mismatch"
KIND = "greeting names someone other than the recipient"

_LINES_READ = 10          # lines of the body's opening looked at
_GREETING_LINES = 3       # non-empty lines among them that may hold the greeting
_MAX_NAME_WORDS = 4

_GREETING = re.compile(
    r"^[\s\W_]*(?P<word>(?i:dear(?:est)?|hi|hello|hallo|hey|hiya|howdy|greetings|good\s+(?:morning|afternoon|evening|day)"
    r"|morning|afternoon|evening))\b(?P<rest>.*)$"
)
_BARE_TIME = re.compile(r"(?i:morning|afternoon|evening|greetings)")
_NAME_WORD = re.compile(r"[^\W\d_](?:[^\W\d_]|['\u2019\-](?=[^\W\d_]))*\.?")  # O'Neil, Sarah-Jane, Dr.
_CONNECTOR = re.compile(r"\s*(?:&|\+|\band\b)\s*", re.IGNORECASE)
# Where the writer's own text ends: quoted replies and forwarded blocks.
_QUOTE_START = re.compile(
    r"^\s*(?:>|-{3,}\s*(?:original|forwarded)|_{10,}|begin forwarded message|(?:from|sent|to|subject|date):\s"
    r"|on\b.{0,200}\bwrote:\s*$)",
    re.IGNORECASE,
)

# Words that make a greeting address a group, a role or nobody in particular.
_NOBODY = frozenset(
    "all everyone everybody anyone someone there again team teams both you yall y'all folks guys gang people friends "
    "friend colleague colleagues sir sirs madam madams sir/madam gents gentlemen ladies lady lord world members member "
    "partners partner customer customers client clients valued resident residents applicant applicants parent parents "
    "carer carers guardian tenant tenants supplier suppliers contractor contractors committee panel board council "
    "councillors officers officer manager managers director directors head headteacher teacher teachers editor chair "
    "chairman chairperson department dept service services support admissions recruitment hiring finance accounts "
    "housing planning school office reception staff sales enquiries enquiry hr it mum mom dad mummy daddy mother "
    "grandma grandad nan gran granny auntie uncle son daughter darling love dear hun mate buddy pal boss "
    "nurse whom concerned".split()
)
_NICKNAMES = {
    "bob": "robert", "rob": "robert", "bobby": "robert", "bill": "william", "will": "william", "liz": "elizabeth",
    "beth": "elizabeth", "betty": "elizabeth", "lizzie": "elizabeth", "peggy": "margaret", "maggie": "margaret",
    "meg": "margaret", "dick": "richard", "rick": "richard", "jim": "james", "jimmy": "james", "jack": "john",
    "johnny": "john", "ted": "edward", "ed": "edward", "eddie": "edward", "harry": "henry", "hal": "henry",
    "tony": "anthony", "andy": "andrew", "mike": "michael", "mick": "michael", "nick": "nicholas", "steve": "stephen",
    "pete": "peter", "tom": "thomas", "dave": "david", "becky": "rebecca", "jenny": "jennifer", "jen": "jennifer",
    "sue": "susan", "sally": "sarah", "kathy": "katherine", "kate": "katherine", "katie": "katherine",
    "cathy": "catherine", "debbie": "deborah", "dot": "dorothy", "polly": "mary", "molly": "mary", "ned": "edward",
    "sandy": "alexander", "alex": "alexander", "sasha": "alexander", "chuck": "charles", "charlie": "charles",
}


def greeted_names(message: Message) -> list[list[str]]:
    """The names the message opens by greeting, each as folded name tokens; [] when it greets nobody."""
    body = next((s.text for s in message.segments if s.location == BODY), "")
    seen = 0
    for line in body[:4000].splitlines()[:_LINES_READ]:
        if not line.strip():
            continue
        if _QUOTE_START.match(line) or seen == _GREETING_LINES:
            return []
        seen += 1
        match = _GREETING.match(line)
        if match:
            bare = bool(_BARE_TIME.fullmatch(match.group("word")))
            return _names(match.group("rest"), strict_end=bare)
    return []


def _names(rest: str, strict_end: bool) -> list[list[str]]:
    """The names in what follows a greeting word: 'Dr Patel,' -> [[patel]]; 'Sarah and Tom' -> [[sarah], [tom]]."""
    names: list[list[str]] = []
    current: list[str] = []
    pos = 0
    rest = rest.lstrip(" \t,:;-")
    while True:
        connector = _CONNECTOR.match(rest, pos)
        if connector and current:
            names.append(current)
            current = []
            pos = connector.end()
        word = _NAME_WORD.match(rest, pos)
        if not word:
            break
        text = word.group().rstrip(".")
        folded = fold(text)
        if folded in _NOBODY or "/" in rest[word.end():word.end() + 1]:
            return []
        if not text[0].isupper():
            if strict_end:
                return []
            break  # "Hi Sarah thanks for ..." ends the name at the first lower-case word
        if folded not in TITLES:
            current.extend(s for part in text.split("-") for s in spellings(part) if len(s) >= 2)
            if len(current) > _MAX_NAME_WORDS:
                return []
        pos = word.end()
        gap = re.match(r"[ \t]+", rest[pos:])
        if not gap:
            if strict_end and rest[pos:].strip() and rest[pos:].strip()[0] not in ",!.:;-":
                return []
            break
        pos += gap.end()
    if current:
        names.append(current)
    return names


def _same_name(a: str, b: str) -> bool:
    """Equal, one a short form of the other (Jo / Joanna), sharing their first three letters
    (Sam / Samantha, Kate / Katherine), or a common nickname (Bob / Robert)."""
    if a == b:
        return True
    short, long = sorted((a, b), key=len)
    if len(short) >= 2 and long.startswith(short) or len(short) >= 3 and short[:3] == long[:3]:
        return True
    return _NICKNAMES.get(a, a) == _NICKNAMES.get(b, b)


class _Recipients:
    """What the message says about each recipient's name."""

    def __init__(self, message: Message):
        self.displays: dict[str, list[str]] = {}
        for dn, addr in message.addresses("To", "Cc"):
            words = [s for w in display_words(dn) for s in spellings(w) if len(s) >= 2]
            self.displays.setdefault(addr.strip().lower(), []).extend(words)
        for addr in message.envelope.rcpt_tos:
            known = message.history.get(addr)
            if known is not None and known.display_name:
                words = [s for w in display_words(known.display_name) for s in spellings(w) if len(s) >= 2]
                self.displays.setdefault(addr.strip().lower(), []).extend(words)
        self.addresses = list(dict.fromkeys([*self.displays, *(a.strip().lower() for a in message.envelope.rcpt_tos)]))

    def display_name_words(self, address: str) -> list[str]:
        return [w for w in self.displays.get(address, ()) if w not in _NOBODY and w not in ROLE_WORDS]

    def matches(self, token: str, address: str) -> bool:
        if any(_same_name(token, w) for w in self.displays.get(address, ())):
            return True
        segments = local_segments(address)
        if any(_same_name(token, s) for s in segments if len(s) >= 2):
            return True
        # A name spelt together with another: "sarahjones", "jsmith" (after an initial).
        return len(token) >= 3 and any(s.startswith(token) or len(token) >= 4 and s.endswith(token) for s in segments)


def _name_like_local_part(address: str) -> list[str]:
    """The parts of a local part that reads as a person's name ('john.smith', 'j_smith'); [] otherwise."""
    segments = local_segments(address)
    if len(segments) < 2 or len(segments) > 4 or any(s in ROLE_WORDS or s in _NOBODY for s in segments):
        return []
    if max(len(s) for s in segments) < 2:
        return []
    return segments


class GreetingDetector:
    """The opening greeting names nobody among the recipients while an outside recipient has another name."""

    name = NAME

    def __init__(self, internal_domains: list[str]):
        self.internal = DomainList([d.strip().lower() for d in internal_domains])

    def detect(self, message: Message) -> list[Finding]:
        outside = [a for a in dict.fromkeys(message.envelope.rcpt_tos) if domain_of(a) not in self.internal]
        if not outside:
            return []
        names = greeted_names(message)
        if not names:
            return []
        recipients = _Recipients(message)
        tokens = [t for name in names for t in name]
        if any(recipients.matches(t, a) for t in tokens for a in recipients.addresses):
            return []
        initials = {t[0] for t in tokens}
        findings = []
        for address in outside:
            key = address.strip().lower()
            if recipients.display_name_words(key):
                different = True
            else:
                parts = _name_like_local_part(key)
                # "s.jones" may be the Sarah greeted: only an initial that differs is a different name.
                different = bool(parts) and not any(len(p) == 1 and p in initials for p in parts)
            if different:
                findings.append(Finding(detector=NAME, category=Category.MISADDRESSED, kind=KIND, location="body",
                                        signal=Signal.GREETING_MISMATCH, recipients=(address,)))
        return findings
