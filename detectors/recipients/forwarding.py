"""Work mail going to the sender's own personal account: rule 6 (personal-account forwarding)
and rule 7 (auto-forwarded) of POLICY.md.

Two kinds of finding, both in category `personal_forwarding`:

- Per recipient, `Signal.NAME_LIKENESS`: an envelope recipient at a personal (webmail) domain
  whose local part is made of the sender's own name (`jane.doe@council.gov.uk` ->
  `janedoe84@gmail.com`, `j.doe@`, `doejane@`, `jane.d@`), or whose To/Cc display name is
  the sender's full name, or any recipient an operator registered as the sender's personal
  address (`message.history.personal_addresses`, whatever its domain).
- Per message, `Signal.AUTO_FORWARDED`: headers that a forwarding rule or a redirect stamps
  (`Auto-Submitted: auto-forwarded`, `Resent-*`, Exchange inbox-rule and mailbox-forwarding
  headers, `X-Forwarded-To`, `X-Forwarded-For` naming an address).

Name likeness, precisely: the recipient's local part (sub-address `+tag` and digits dropped,
case and accents folded, split on `. _ -`, digits and case changes) must be spelt out
completely by pieces of the sender's name tokens (from the From display name and the sender's
local part), each token used at most once, as a whole token, a prefix of 3+ letters
("sam" for Samantha) or an initial (at the start or end of a segment: `jmdoe`, `janed`),
plus whole filler segments ("home", "family"). It counts when at least two different name
tokens are used (name particles such as "de", "la", "al" do not count) and the match is more
than initials: two whole tokens (`liwu` for Li Wu), or one whole token of 3+ letters with an
initial or prefix of another (`j.doe`, `jane.d`). A first name or a surname alone never
counts (`jane84`, `doe.family`: a surname is shared by strangers, and a council officer may
well write to a resident's family account with the same surname; operators register such an
address as the sender's instead). Short names need both whole (`liwu`, not `l.wu`). One more
way: when the sender has a display name, the recipient's letters equal the sender's whole
local part of 4+ letters that is neither a role nor one of those names (`sunflower` ->
`sunflower77`; not `smith` -> `smith1`).

Judgement on `Auto-Submitted`: only a value that says "forward" counts. `auto-generated`
(notifications, calendar mail, reports) and `auto-replied` (RFC 3834 vacation replies) are
not forwarding: they carry the system's or the sender's own text, not mail received. Exchange
stamps the same inbox-rule headers (`X-MS-Exchange-Inbox-Rules-Loop`,
`X-MS-Exchange-Generated-Message-Source: Mailbox Rules Agent`) on rule forwards and on
rule-made automatic replies alike, so they count unless the message shows itself to be such
a reply (`Auto-Submitted: auto-replied`, or `In-Reply-To` naming the very message that
triggered the rule, `X-MS-Exchange-Parent-Message-Id`). `X-Forwarded-For` counts only when it
names an address: HTTP proxies and webmail put client IP addresses in a header of that name.

Never holds a name or an address other than the recipient's own; never does I/O.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

from detectors.base import Category, Finding, Signal
from gateway.message import Message
from gateway.policy import DomainList, domain_of

NAME = "personal_forwarding"
LIKENESS_KIND = "personal email account that looks like the sender's own"
FORWARDED_KIND = "automatically forwarded message"

_MAX_TOKENS = 8          # name tokens of one sender considered (display name + local part)
_MAX_LETTERS = 64        # letters of a local part judged; longer ones are not a person's name

# Words in display names that are not names: titles, honours and post-nominals.
TITLES = frozenset(
    "mr mrs ms miss mx dr doctor prof professor cllr councillor sir dame lord lady rev revd reverend "
    "fr father sister hon rt right honourable".split()
)
_SUFFIXES = frozenset("jr jnr sr snr ii iii iv phd mbe obe cbe kbe dbe msc bsc ba ma mba llb qc kc esq".split())
# Name particles: they may spell part of a local part but never count as a name on their own.
_PARTICLES = frozenset("de da di del della der den van von la le du dos das bin ibn al el st ni nic ap".split())
# Whole local-part segments that say nothing about who owns the account.
_FILLERS = frozenset("home personal private family work mail email inbox me my the uk gb mr mrs ms miss dr".split())
# Local parts (or parts of them) that name a role, not a person.
ROLE_WORDS = frozenset(
    "info information admin administrator office enquiries enquiry inquiries contact contacts mail email post "
    "hello help support sales team noreply donotreply reply bounce bounces postmaster webmaster hostmaster abuse "
    "reception accounts account finance billing invoices invoice payments payroll hr jobs careers recruitment "
    "service services customerservice customer customers feedback marketing press media news newsletter "
    "notifications notification alerts alert system root security it helpdesk servicedesk desk general "
    "bookings booking orders order legal compliance privacy dpo foi complaints council housing planning "
    "secretary clerk manager management director head department dept group all staff referrals referral duty "
    "safeguarding secure".split()
)

_WORD = re.compile(r"[^\W\d_]+(?:['\u2019][^\W\d_]+)*")
_BRACKETED = re.compile(r"\([^)]*\)?|\[[^\]]*\]?|\{[^}]*\}?|<[^>]*>?")
_TRAILER = re.compile(r"\s+[|\-\u2013\u2014]\s+|\s*\|\s*")
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")
_NOT_LETTER = re.compile(r"[^a-z]+")
_ADDRESS = re.compile(r"[^\s<>(),;:\"@]+@[^\s<>(),;:\"@]+\.[^\s<>(),;:\"@]+")
_UMLAUTS = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "Ä": "Ae", "Ö": "Oe", "Ü": "Ue"})


@functools.cache
def _transliterator() -> object | None:
    try:
        import icu

        return icu.Transliterator.createInstance("Any-Latin; Latin-ASCII")
    except Exception:  # no ICU: accents are still folded below, other scripts are left out
        return None


def fold(text: str) -> str:
    """Lower-case ASCII as a name is spelt in an address: 'Zoë Ó Briain' -> 'zoe o briain',
    'Łukasz' -> 'lukasz', 'Олег' -> 'oleg' (with ICU). Cheap for ASCII text."""
    if text.isascii():
        return text.lower()
    tr = _transliterator()
    if tr is not None:
        try:
            text = tr.transliterate(text)  # type: ignore[attr-defined]
        except Exception:
            pass
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c) and c.isascii())


def spellings(word: str) -> tuple[str, ...]:
    """The ways an address spells `word`: folded, and with German umlauts written out (Müller: muller, mueller)."""
    plain = _NOT_LETTER.sub("", fold(word))
    if word.isascii() or not any(c in word for c in "äöüÄÖÜ"):
        return (plain,) if plain else ()
    written_out = _NOT_LETTER.sub("", fold(word.translate(_UMLAUTS)))
    return tuple(dict.fromkeys(s for s in (plain, written_out) if s))


def display_words(display_name: str) -> list[str]:
    """The words of a display name that may be a person's name, in order: bracketed parts, what
    follows " | " or " - ", titles and post-nominals are left out. 'Doe, Jane (Housing)' -> [Doe, Jane]."""
    text = _BRACKETED.sub(" ", display_name)
    text = _TRAILER.split(text, maxsplit=1)[0]  # "Jane Doe | Housing Officer": the name comes first
    if "@" in text:  # a display name that is itself an address: its local part
        text = re.split(r"[@\s]", text.strip().strip("'\""), maxsplit=1)[0].replace(".", " ").replace("_", " ")
    words = [w.replace("'", "").replace("\u2019", "") for w in _WORD.findall(text)]
    return [w for w in words if fold(w) not in TITLES and fold(w) not in _SUFFIXES]


def local_part(address: str) -> str:
    """The local part without a `+tag` sub-address."""
    local = address.rpartition("@")[0] if "@" in address else address
    return local.strip().strip('"').split("+", 1)[0]


def local_segments(address: str) -> list[str]:
    """Folded letter runs of a local part, split at separators, digits and case changes:
    'Jane.Doe+news' -> [jane, doe], 'JaneDoe84' -> [jane, doe], 'jdoe_1979' -> [jdoe]."""
    local = local_part(address)[:_MAX_LETTERS * 2]
    return [s for part in _CAMEL.split(local) for s in _NOT_LETTER.split(fold(part)) if s]


@dataclass(frozen=True)
class NameToken:
    spellings: tuple[str, ...]
    minor: bool              # an initial or a particle: may spell part of a name, never counts as one


@dataclass(frozen=True)
class SenderName:
    tokens: tuple[NameToken, ...]
    local_letters: str       # the sender's whole local part as letters, "" when too short or a role


def sender_name(message: Message) -> SenderName:
    """The sender's name tokens: From display name, and the local part of the envelope sender
    (of From when the envelope sender is null)."""
    from_values = message.header("From")
    display, from_address = "", ""
    if from_values:
        value = from_values[0]
        lt = value.rfind("<")
        if lt > 0:
            display = value[:lt].strip().strip('"').strip()
        found = _ADDRESS.search(value)
        from_address = found.group() if found else ""
    address = message.envelope.mail_from or from_address
    words = display_words(display)
    local = local_segments(address) if "@" in address else []
    letters = "".join(local)
    # The whole local part stands for the sender ("jdoe") unless it is a role or one name alone ("smith").
    if (not words or len(letters) < 4 or any(s in ROLE_WORDS for s in local)
            or any(letters in spellings(w) for w in words)):
        letters = ""
    seen: dict[str, NameToken] = {}
    for spelt in [spellings(w) for w in words]:
        if spelt and spelt[0] not in seen:
            seen[spelt[0]] = NameToken(spelt, minor=len(spelt[0]) < 2 or spelt[0] in _PARTICLES)
    shown = tuple(seen.values())
    for segment in local:
        # A local-part segment the display name already spells ("jdoe", "delacruz") is not another name.
        if segment not in seen and segment not in ROLE_WORDS and not (shown and _spell([segment], shown, _any)):
            seen[segment] = NameToken((segment,), minor=len(segment) < 2 or segment in _PARTICLES)
    return SenderName(tuple(list(seen.values())[:_MAX_TOKENS]), letters)


_WHOLE, _PREFIX, _INITIAL = 0, 1, 2


def _any(tokens: tuple[NameToken, ...], kinds: tuple[int, ...]) -> bool:
    return True


def _enough(tokens: tuple[NameToken, ...], kinds: tuple[int, ...]) -> bool:
    """Two different names used, and more than initials: two whole, or one whole of 3+ letters."""
    major = [(i, k) for i, k in enumerate(kinds) if k >= 0 and not tokens[i].minor]
    if len(major) < 2:
        return False
    whole = [i for i, k in major if k == _WHOLE]
    return len(whole) >= 2 or any(len(tokens[i].spellings[0]) >= 3 for i in whole)


def spelt_by(segments: list[str], tokens: tuple[NameToken, ...]) -> bool:
    """Whether `segments` (a local part's letter runs) are spelt out completely by the name
    `tokens`, each used once, with at least two different tokens and more than initials
    (see the module docstring)."""
    return _spell([s for s in segments if s not in _FILLERS], tokens, _enough)


def _spell(segments: list[str], tokens: tuple[NameToken, ...],
           enough: Callable[[tuple[NameToken, ...], tuple[int, ...]], bool]) -> bool:
    """Whether some spelling of `segments` by pieces of `tokens` (whole, prefix or initial, each
    token once) satisfies `enough`; kinds[i] is how token i was used, -1 for not at all."""
    if not segments or not tokens or sum(map(len, segments)) > _MAX_LETTERS:
        return False
    failed: set[tuple[int, int, tuple[int, ...], bool]] = set()

    def search(seg: int, pos: int, kinds: tuple[int, ...], leading: bool) -> bool:
        # `leading`: every piece so far in this segment is an initial. Initials stand at the start
        # of a segment ("jmdoe") or end it ("janed"), never inside a run of names.
        if seg == len(segments):
            return enough(tokens, kinds)
        text = segments[seg]
        if pos == len(text):
            return search(seg + 1, 0, kinds, True)
        state = (seg, pos, kinds, leading)
        if state in failed:
            return False
        for i, token in enumerate(tokens):
            if kinds[i] >= 0:
                continue
            pieces: list[tuple[int, int]] = []  # (letters taken, kind)
            for spelling in token.spellings:
                if text.startswith(spelling, pos):
                    pieces.append((len(spelling), _WHOLE))
                elif not token.minor and len(spelling) >= 4:
                    pieces.extend((n, _PREFIX) for n in range(len(spelling) - 1, 2, -1)
                                  if text.startswith(spelling[:n], pos))
            particle = token.spellings[0] in _PARTICLES
            if text[pos] == token.spellings[0][0] and not particle and (leading or pos + 1 == len(text)):
                pieces.append((1, _INITIAL))
            for taken, kind in dict.fromkeys(pieces):
                if search(seg, pos + taken, kinds[:i] + (kind,) + kinds[i + 1:], leading and kind == _INITIAL):
                    return True
        failed.add(state)
        return False

    return search(0, 0, (-1,) * len(tokens), True)


def looks_like_sender(address: str, name: SenderName) -> bool:
    """Whether the local part of `address` is made of the sender's name (module docstring)."""
    segments = local_segments(address)
    if name.local_letters and "".join(segments) == name.local_letters:
        return True
    return spelt_by(segments, name.tokens)


def display_is_sender(display_name: str, name: SenderName) -> bool:
    """Whether a recipient's display name holds two of the sender's name tokens as whole words
    (first name and surname): 'Jane Doe (home)' for Jane Doe, not 'Mary Doe'."""
    words = {s for w in display_words(display_name) for s in spellings(w)}
    whole = [t for t in name.tokens if not t.minor and len(t.spellings[0]) >= 2 and words.intersection(t.spellings)]
    return len(whole) >= 2


# --- automatic forwarding ------------------------------------------------------------

_EXCHANGE_RULE_SOURCE = re.compile(r"mailbox rules agent", re.IGNORECASE)
_MESSAGE_ID = re.compile(r"<[^<>]*>")


def _first_token(value: str) -> str:
    return value.split(";", 1)[0].strip().lower()


def _is_rule_reply(message: Message) -> bool:
    """An automatic reply made by a mailbox rule: Exchange stamps the same headers on it as on a forward."""
    if _first_token(next(iter(message.header("Auto-Submitted")), "")) == "auto-replied":
        return True
    parents = {m.lower() for v in message.header("X-MS-Exchange-Parent-Message-Id") for m in _MESSAGE_ID.findall(v)}
    replied = {m.lower() for v in message.header("In-Reply-To") for m in _MESSAGE_ID.findall(v)}
    return bool(parents & replied)


def forwarding_evidence(message: Message) -> list[tuple[str, str]]:
    """(header name, reason) for every header that says the message was forwarded automatically."""
    evidence: list[tuple[str, str]] = []
    resent: str | None = None
    rule_reply: bool | None = None
    for name, value in message.headers:
        lname = name.lower()
        if lname == "auto-submitted":
            token = _first_token(value)
            if token != "no" and "forward" in token:
                evidence.append((name, "Auto-Submitted says the message was forwarded automatically"))
        elif lname.startswith("resent-"):
            resent = resent or name
        elif lname in ("x-ms-exchange-inbox-rules-loop", "x-ms-exchange-generated-message-source"):
            if lname.endswith("source") and not _EXCHANGE_RULE_SOURCE.search(value):
                continue
            if not value.strip():
                continue
            if rule_reply is None:
                rule_reply = _is_rule_reply(message)
            if not rule_reply:
                evidence.append((name, "an Exchange inbox rule sent it on"))
        elif lname == "x-ms-exchange-forwardingloop" and value.strip():
            evidence.append((name, "the mailbox forwards all its mail"))
        elif lname == "x-ms-exchange-organization-autoforwarded" and value.strip().lower() == "true":
            evidence.append((name, "Exchange marked it as forwarded automatically"))
        elif lname == "x-forwarded-to" and value.strip():
            evidence.append((name, "a mailbox forwarding setting sent it on"))
        elif lname == "x-forwarded-for" and "@" in value:
            evidence.append((name, "a mailbox forwarding setting sent it on"))
    if resent is not None:
        evidence.append((resent, "re-sent (redirected) by a rule or by hand"))
    return evidence


class ForwardingDetector:
    """Personal-account forwarding (rule 6) and automatic forwarding (rules 6 and 7)."""

    name = NAME

    def __init__(self, personal_domains: list[str]):
        self.personal = DomainList([d.strip().lower() for d in personal_domains])

    def detect(self, message: Message) -> list[Finding]:
        findings = self._likeness(message)
        evidence = forwarding_evidence(message)
        if evidence:
            header, reason = evidence[0]
            others = sorted({h for h, _ in evidence[1:]} - {header})
            detail = reason + (f" (also {', '.join(others)})" if others else "")
            findings.append(Finding(detector=NAME, category=Category.PERSONAL_FORWARDING, kind=FORWARDED_KIND,
                                    location=f"header:{header}", signal=Signal.AUTO_FORWARDED, detail=detail))
        return findings

    def _likeness(self, message: Message) -> list[Finding]:
        registered = set(message.history.personal_addresses)
        name: SenderName | None = None
        displays: dict[str, list[str]] | None = None
        findings: list[Finding] = []
        for address in dict.fromkeys(message.envelope.rcpt_tos):
            key = address.strip().lower()
            if key in registered:
                detail = "registered as the sender's personal address"
            elif domain_of(key) in self.personal:
                if name is None:
                    name = sender_name(message)
                    displays = {}
                    for dn, addr in message.addresses("To", "Cc"):
                        if dn:
                            displays.setdefault(addr.strip().lower(), []).append(dn)
                assert displays is not None
                if looks_like_sender(key, name):
                    detail = "matches the sender's name"
                elif any(display_is_sender(dn, name) for dn in displays.get(key, ())):
                    detail = "shown with the sender's name"
                else:
                    continue
            else:
                continue
            findings.append(Finding(detector=NAME, category=Category.PERSONAL_FORWARDING, kind=LIKENESS_KIND,
                                    location="envelope", signal=Signal.NAME_LIKENESS, recipients=(address,),
                                    detail=detail))
        return findings
