"""Domain names as a person reads them, and how closely one resembles another.

A domain is compared the way it looks, not the way DNS spells it: `xn--` labels decoded to
Unicode, compatibility forms folded (NFKC), case folded, and every label reduced to its UTS #39
confusable skeleton by ICU's SpoofChecker (so Cyrillic `е`, `0`/`o`, `1`/`l`, `rn`/`m` look
alike without a table of our own). Whether two names are the *same* domain is decided on the
DNS form (A-labels), never on looks: `xn--nhs-.net` decodes to "nhs.net" but is another name.

The public suffix (`net`, `gov.uk`, `police.uk`) is guessed, not looked up: suffixes the
organisation lists as wildcards are known, a two-letter country code under a label of at most
three letters is a second-level registry (`co.uk`, `gov.uk`, `nhs.uk`, `com.au`), and
otherwise the last label alone is the suffix. Pure: no I/O; nothing here raises on odd input.
"""

from __future__ import annotations

import enum
import functools
import unicodedata
from collections.abc import Collection
from dataclasses import dataclass

import icu

MAX_DOMAIN = 255          # longer is not a DNS name: nothing to compare
_MAX_SPELLING = 64        # longest run of pieces compared with a reference written together
_SPOOF = icu.SpoofChecker()


class How(enum.IntEnum):
    """How a domain resembles a reference, the most telling first (a lower value wins)."""

    HOMOGLYPH = 0        # the same to the eye: nhs.nеt (Cyrillic е), carnden.gov.uk, xn--nhs-.net
    SEPARATORS = 1       # dots and hyphens added, dropped or moved: nhs-net.com, camden.gov.uk.com
    INSERTED_LABEL = 2   # a short label slipped into the suffix: camden.gov.co.uk
    SWAPPED_SUFFIX = 3   # the same name under an open or mistyped suffix: nhs.com, camden.uk, nhs.ne
    TYPING_SLIP = 4      # one or two keystrokes in the name: camdem.gov.uk, gmial.com


def skeleton(label: str) -> str:
    """The case-folded UTS #39 skeleton: what `label` looks like, whatever script it is in."""
    try:
        return str(_SPOOF.getSkeleton(0, label)).casefold()
    except Exception:  # e.g. a lone surrogate ICU will not take: compare the label as written
        return label


def decode_label(label: str) -> str:
    """An `xn--` label as Unicode by plain RFC 3492 decoding (no IDNA validity check: a label
    IDNA would refuse still looks like something); undecodable punycode stays as written."""
    if not label.startswith("xn--") or not label.isascii():
        return label
    try:
        return label[4:].encode("ascii").decode("punycode") or label
    except Exception:  # UnicodeError for broken punycode; the codec is not promised to raise only that
        return label


def dns_name(domain: str) -> str:
    """The name DNS would look up: lower case, Unicode labels as `xn--` A-labels (without
    IDNA's mapping, so a full-width or other odd spelling stays a different name)."""
    out = []
    for label in domain.lower().split("."):
        if label.isascii():
            out.append(label)
            continue
        try:
            out.append("xn--" + unicodedata.normalize("NFC", label).encode("punycode").decode("ascii"))
        except Exception:  # unencodable (lone surrogates): keep it; it then matches nothing listed
            out.append(label)
    return ".".join(out)


def domain_key(address: str) -> str:
    """The domain of an envelope address as the classifier reads it, or "" when there is none to judge
    (no `@`, an address literal such as `[127.0.0.1]`, or longer than any DNS name)."""
    if not isinstance(address, str) or "@" not in address:
        return ""
    domain = address.rpartition("@")[2].strip().rstrip(".").lower()
    if not domain or domain.startswith("[") or len(domain) > MAX_DOMAIN:
        return ""
    return domain


def osa_distance(a: str, b: str, limit: int) -> int:
    """Damerau-Levenshtein distance (optimal string alignment), or limit + 1 once it exceeds `limit`."""
    if abs(len(a) - len(b)) > limit:
        return limit + 1
    before: list[int] = []
    previous = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        current = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] != b[j - 1]))
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                current[j] = min(current[j], before[j - 2] + 1)
        if min(current) > limit:
            return limit + 1
        before, previous = previous, current
    return previous[-1]


def allowed_slips(length: int) -> int:
    """Keystrokes a name of `length` characters may be off by and still be a slip for it: none for
    short names, where one letter makes another real organisation (bt.com, ft.com)."""
    return 2 if length >= 10 else 1 if length >= 5 else 0


@dataclass(frozen=True)
class DomainForm:
    """One domain, ready to compare: labels as read and as they look, and its guessed suffix."""

    dns: str                      # the DNS name (A-labels): the identity of the domain
    labels: tuple[str, ...]       # as a person reads them: decoded, NFKC, case-folded; empty labels dropped
    looks: tuple[str, ...]        # the skeleton of each label
    suffix: int                   # how many trailing labels are the public suffix (a guess)
    tokens: tuple[str, ...]       # `looks` split at dots and hyphens
    shown: tuple[str, ...]        # the same pieces as they may be shown to the sender (see `display`)

    @classmethod
    def of(cls, domain: str, known_suffixes: Collection[tuple[str, ...]] = ()) -> "DomainForm | None":
        domain = domain.strip().rstrip(".").lower()
        if not domain or len(domain) > MAX_DOMAIN or domain.startswith("["):
            return None
        # Full-width and ideographic full stops separate labels too (as in IDNA's UTS #46 mapping).
        read = unicodedata.normalize("NFKC", domain).replace("\u3002", ".")
        labels = tuple(
            unicodedata.normalize("NFKC", decode_label(label)).casefold() for label in read.split(".") if label
        )
        if not labels:
            return None
        looks = tuple(skeleton(label) for label in labels)
        tokens: list[str] = []
        shown: list[str] = []
        for label, look in zip(labels, looks):
            pieces = [t for t in look.split("-") if t]
            words = [t for t in label.split("-") if t]
            tokens.extend(pieces)
            shown.extend(map(_shown, words, pieces) if len(words) == len(pieces) else pieces)
        return cls(dns_name(domain), labels, looks, _suffix_length(labels, known_suffixes), tuple(tokens),
                   tuple(shown))

    def spellings(self) -> dict[str, int]:
        """Every run of pieces written together (up to 64 letters), with where the first such run starts."""
        out: dict[str, int] = {}
        for start in range(len(self.tokens)):
            spelt = ""
            for token in self.tokens[start:]:
                spelt += token
                if len(spelt) > _MAX_SPELLING:
                    break
                out.setdefault(spelt, start)
        return out

    def display(self, end: int) -> str:
        """The first `end` labels as they may be shown to the sender."""
        return ".".join(map(_shown, self.labels[:end], self.looks[:end]))


def _shown(text: str, look: str) -> str:
    # As read when plain ASCII, else as it looks when that is ASCII: never echo a homoglyph back.
    return text if text.isascii() else look if look.isascii() else text


def _suffix_length(labels: tuple[str, ...], known: Collection[tuple[str, ...]]) -> int:
    n = len(labels)
    if n < 2:
        return 0
    for size in range(n - 1, 1, -1):  # the longest known suffix that leaves a name in front of it
        if labels[-size:] in known:
            return size
    if n >= 3 and len(labels[-1]) == 2 and len(labels[-2]) <= 3:
        return 2
    return 1


@dataclass(frozen=True)
class Reference:
    """A domain recipients are compared with: listed by the organisation, or one the sender writes to often."""

    domain: str                   # as configured or remembered; a wildcard entry's base ("police.uk")
    form: DomainForm
    wildcard: bool = False        # "*.x" / ".x": every subdomain of x is listed too

    @functools.cached_property
    def flat(self) -> str:
        """The reference's pieces written together: nhs.net -> "nhsnet"."""
        return "".join(self.form.tokens)

    @functools.cached_property
    def names(self) -> int:
        """Labels in front of the suffix: 1 for nhs.net and camden.gov.uk, 2 for met.police.uk."""
        return len(self.form.labels) - self.form.suffix

    @functools.cached_property
    def name(self) -> tuple[str, str]:
        """The name in front of the suffix (as read, as it looks): ("camden", "carnden")."""
        return ".".join(self.form.labels[: self.names]), ".".join(self.form.looks[: self.names])

    @functools.cached_property
    def suffix(self) -> tuple[str, str]:
        """The suffix (as read, as it looks): ("gov.uk", "gov.uk")."""
        return ".".join(self.form.labels[self.names:]), ".".join(self.form.looks[self.names:])


@dataclass(frozen=True)
class Resemblance:
    how: How
    resembles: str                # the listed domain the sender probably meant, e.g. "nhs.net", "met.police.uk"
    slips: int = 0                # keystrokes off, for TYPING_SLIP


def resemblance(d: DomainForm, r: Reference, swap_suffixes: Collection[str],
                spellings: dict[str, int] | None = None) -> Resemblance | None:
    """How `d` resembles `r`, or None. `d` is never the reference itself nor a subdomain of it.
    `swap_suffixes` are skeletons of the suffixes a swapped-suffix lookalike is believed in;
    `spellings` is `d.spellings()`, passed in when `d` is compared with many references."""
    ref = r.form
    if d.dns == ref.dns or d.dns.endswith("." + ref.dns) or not ref.looks or not d.looks:
        return None
    n = len(ref.looks)

    def found(how: How, head: str, slips: int = 0) -> Resemblance:
        # A wildcard's base is not an address: name the subdomain of it the recipient points at.
        meant = f"{head}.{r.domain}" if r.wildcard and head else r.domain
        return Resemblance(how, meant, slips)

    # Looks the same, as the whole name or its last labels: nhs.nеt, mail.nhs.nеt, met.p0lice.uk.
    if len(d.looks) >= n and d.looks[-n:] == ref.looks:
        return found(How.HOMOGLYPH, d.display(len(d.looks) - n))

    # Dots and hyphens: some run of the recipient's pieces spells the reference (nhs-net.com,
    # nhsnet.com, camden-gov.uk, nhs.net.example.com). Short names spell too much by chance.
    if len(r.flat) >= 5:
        start = (d.spellings() if spellings is None else spellings).get(r.flat)
        if start is not None:  # for a wildcard the pieces in front name the subdomain: met-police.uk
            return found(How.SEPARATORS, ".".join(d.shown[:start]))

    # One short label slipped into the suffix: camden.gov.uk -> camden.gov.co.uk. Not in front of
    # it: hmrc.gsi.gov.uk is a name under gov.uk, a restricted registry, not a slip.
    names = r.names
    if len(d.looks) > n:
        tail = d.looks[-(n + 1):]
        for i in range(names + 1, n + 1):
            if len(tail[i]) <= 3 and tail[:i] + tail[i + 1:] == ref.looks:
                return found(How.INSERTED_LABEL, d.display(len(d.looks) - n - 1))

    # The name in front of the suffix, as many labels of it as the reference has.
    end = len(d.looks) - d.suffix
    head = end - names
    if names < 1 or head < 0:
        return None
    same_name = d.looks[head:end] == ref.looks[:names]
    same_suffix = d.looks[end:] == ref.looks[names:]
    (text_r, look_r), (suffix_text_r, suffix_look_r) = r.name, r.suffix
    if same_name:
        # The same name under another suffix: open to anyone (nhs.com, camden.uk, gmail.co.uk), or
        # one keystroke off a suffix of 3+ letters (nhs.ne, gmail.cm). Not a restricted or national
        # registry (nhs.scot, gov.scot, camden.ac.uk): those are other real organisations.
        if len(text_r) < 3 or same_suffix:
            return None
        suffix_look = ".".join(d.looks[end:])
        if suffix_look in swap_suffixes or (len(suffix_text_r) >= 3 and min(
                osa_distance(".".join(d.labels[end:]), suffix_text_r, 1),
                osa_distance(suffix_look, suffix_look_r, 1)) <= 1):
            return found(How.SWAPPED_SUFFIX, d.display(head))
        return None
    if not same_suffix:
        return None
    # Same suffix, a name a slip away: camdem.gov.uk, gmial.com; in a short name only a swap of
    # two neighbouring letters (nsh.net), as any other change there spells another name.
    text_d, look_d = ".".join(d.labels[head:end]), ".".join(d.looks[head:end])
    limit = allowed_slips(len(text_r))
    slips = min(osa_distance(text_d, text_r, max(limit, 1)), osa_distance(look_d, look_r, max(limit, 1)))
    if 0 < slips <= limit or (limit == 0 and len(text_r) >= 3 and slips == 1 and sorted(look_d) == sorted(look_r)):
        return found(How.TYPING_SLIP, d.display(head), slips)
    # A wildcard's base with a subdomain run into it: metpolice.uk, camdengov.uk.
    if r.wildcard and names == 1 and len(look_d) > len(look_r) and look_d.endswith(look_r):
        look_rest = look_d[: -len(look_r)].rstrip("-")
        text_rest = text_d[: -len(text_r)].rstrip("-") if text_d.endswith(text_r) else look_rest
        return found(How.SEPARATORS, ".".join(p for p in (d.display(head), _shown(text_rest, look_rest)) if p))
    return None
