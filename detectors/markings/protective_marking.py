"""UK Government protective markings wherever senders and their tools put them:

- the subject line (location "subject");
- the first and last lines of each body part (location "body") and of each
  attachment's text (location "attachment:NAME"), where documents carry their
  header and footer; anywhere in them, a line holding nothing but a marking in
  capitals (a page header, a quoted message's marking) and a quoted "Subject:" line;
- the X-Protective-Marking header in a trusted namespace ("header:X-Protective-Marking");
- Microsoft sensitivity labels in msip_labels headers ("header:msip_labels"), by
  label GUID per tenant from configuration, else by the label's name.

How a marking is told from prose is in `grammar`. One finding per location, at the
highest level found there; plain OFFICIAL is never reported. A finding names the
level and the location only, never the text around it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import regex

from detectors.base import Category, Finding, MarkingLevel, Signal
from detectors.markings.email_marking import HEADER as EMAIL_MARKING_HEADER
from detectors.markings.email_marking import EmailMarking, parse_email_marking
from detectors.markings.grammar import DEFAULT_LEGACY, GPMS_LEVELS, MarkingReader, highest, parse_level
from detectors.markings.sensitivity_labels import HEADER as LABELS_HEADER
from detectors.markings.sensitivity_labels import canonical_guid, is_guid, labels_from_headers
from gateway.message import SUBJECT, Message, normalise_text

NAME = "protective_marking"

DEFAULT_NAMESPACES: tuple[str, ...] = ("gov.uk",)
# Non-empty lines at the top and at the bottom of a body part or attachment text read
# for a marking: room for a marking above or below a signature and a short disclaimer.
DEFAULT_EDGE_LINES = 5

_DEFAULT_READER = MarkingReader()
_FOLD = regex.compile(r"\r?\n(?=[ \t])")
_LINE_BREAK = regex.compile(r"[\r\n]+")
_PLAIN_OFFICIAL = regex.compile(r"\s*official\s*", regex.IGNORECASE)
_SENSITIVE_CAVEAT = regex.compile(r"\s*sensitive(?![\p{L}])", regex.IGNORECASE)


def _unfold(value: str) -> str:
    """A header value on one line: folding removed (RFC 5322), any other break a space."""
    return _LINE_BREAK.sub(" ", _FOLD.sub("", value))


def marking_level(text: str) -> MarkingLevel | None:
    """The highest marking written as a marking in `text`, read as a subject line
    (each line of `text` on its own), with the default configuration."""
    text = normalise_text(text)
    return highest(_DEFAULT_READER.read_line(line) for line in text.splitlines())


def _level_setting(key: str, value: str | MarkingLevel) -> MarkingLevel:
    try:
        return parse_level(value)
    except ValueError as e:
        raise ValueError(f"{key}: {e}") from None


class ProtectiveMarkingDetector:
    """Finds protective markings. Construct once; the arguments are the `markings:`
    configuration section, and the defaults are the shipped configuration."""

    name = NAME

    def __init__(
        self,
        *,
        namespaces: Iterable[str] = DEFAULT_NAMESPACES,
        msip_labels: Mapping[str, Mapping[str, str | MarkingLevel]] | None = None,
        legacy: Mapping[str, str | MarkingLevel] = DEFAULT_LEGACY,
        edge_lines: int = DEFAULT_EDGE_LINES,
    ) -> None:
        if isinstance(namespaces, str) or not all(isinstance(ns, str) for ns in namespaces):
            raise ValueError("markings.namespaces: must be a list of namespaces such as ['gov.uk']")
        self._namespaces = frozenset(ns.strip().lower() for ns in namespaces)
        legacy_levels: dict[str, MarkingLevel] = {}
        for word, level in legacy.items():
            if not isinstance(word, str) or not regex.fullmatch(r"\p{L}+", word):
                raise ValueError(f"markings.legacy: {word!r} is not a single word such as 'RESTRICTED'")
            legacy_levels[word] = _level_setting(f"markings.legacy.{word}", level)
        self._reader = MarkingReader(legacy_levels)
        # Structured SEC= values name GPMS levels outright, so all of them are read there.
        self._gpms_reader = MarkingReader({**GPMS_LEVELS, **legacy_levels})
        self._labels: dict[tuple[str, str], MarkingLevel] = {}
        for tenant, labels in (msip_labels or {}).items():
            if not is_guid(str(tenant)):
                raise ValueError(f"markings.msip_labels: {tenant!r} is not a tenant GUID (the label's SiteId)")
            for label, level in labels.items():
                if not is_guid(str(label)):
                    raise ValueError(f"markings.msip_labels.{tenant}: {label!r} is not a label GUID")
                key = (canonical_guid(tenant), canonical_guid(label))
                self._labels[key] = _level_setting(f"markings.msip_labels.{tenant}.{label}", level)
        if isinstance(edge_lines, bool) or not isinstance(edge_lines, int) or edge_lines < 0:
            raise ValueError("markings.edge_lines: must be a whole number of lines, 0 or more")
        self._edge_lines = edge_lines

    def detect(self, message: Message) -> list[Finding]:
        levels: dict[str, MarkingLevel | None] = {}
        for segment in message.segments:
            if segment.location == SUBJECT:
                level = self._reader.read_line(_unfold(segment.text))
            else:
                level = self._reader.read_text(segment.text, self._edge_lines)
            levels[segment.location] = highest((levels.get(segment.location), level))
        levels[f"header:{EMAIL_MARKING_HEADER}"] = self._email_marking_level(message)
        levels[f"header:{LABELS_HEADER}"] = self._label_level(message)
        return [
            Finding(
                detector=NAME,
                category=Category.PROTECTIVE_MARKING,
                kind=f"{level.value} protective marking",
                location=location,
                signal=Signal.MARKING,
                level=level,
            )
            for location, level in levels.items()
            if level is not None and level is not MarkingLevel.OFFICIAL
        ]

    def _email_marking_level(self, message: Message) -> MarkingLevel | None:
        found: list[MarkingLevel | None] = []
        for value in message.header(EMAIL_MARKING_HEADER):
            marking = parse_email_marking(normalise_text(_unfold(value)))
            if marking.namespace.lower() in self._namespaces:
                found.append(self._email_marking_to_level(marking))
        return highest(found)

    def _email_marking_to_level(self, marking: EmailMarking) -> MarkingLevel | None:
        level = self._gpms_reader.read_field(marking.classification)
        if level is None and _PLAIN_OFFICIAL.fullmatch(marking.classification):
            # SEC=OFFICIAL, CAVEAT=SENSITIVE[:...] is how some tools write OFFICIAL-SENSITIVE.
            if any(_SENSITIVE_CAVEAT.match(caveat) for caveat in marking.caveats):
                return MarkingLevel.OFFICIAL_SENSITIVE
        return level

    def _label_level(self, message: Message) -> MarkingLevel | None:
        found: list[MarkingLevel | None] = []
        for label in labels_from_headers(message.headers):
            if not label.enabled:
                continue
            configured = self._labels.get((label.site_id, label.label_id))
            found.append(configured if configured is not None else self._reader.read_field(normalise_text(label.name)))
        return highest(found)
