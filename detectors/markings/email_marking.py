"""The X-Protective-Marking header: the email protective-marking syntax.

    X-Protective-Marking: VER=2018.1, NS=gov.uk, SEC=OFFICIAL-SENSITIVE, CAVEAT=..., ORIGIN=jane@example.gov.uk

Comma-separated KEY=VALUE fields; keys in any case, a key may repeat (CAVEAT).
This module only parses; which namespaces to trust is the detector's configuration.
"""

from __future__ import annotations

from dataclasses import dataclass

import regex

HEADER = "X-Protective-Marking"

_FIELD = regex.compile(r"(?:^|[,;])\s*(?P<key>[A-Za-z][A-Za-z\-]*)\s*=\s*(?P<value>[^,;]*)")


@dataclass(frozen=True)
class EmailMarking:
    """One X-Protective-Marking header, as written (values stripped, keys upper-cased)."""

    namespace: str = ""                     # NS=, e.g. "gov.uk"
    classification: str = ""                # SEC=, e.g. "OFFICIAL-SENSITIVE:PERSONAL"
    caveats: tuple[str, ...] = ()           # every CAVEAT= (and the older DLM=)
    version: str = ""                       # VER=
    origin: str = ""                        # ORIGIN=, the marker's address


def parse_email_marking(value: str) -> EmailMarking:
    """The fields of one header value; missing fields are empty. Never raises."""
    fields: dict[str, list[str]] = {}
    for m in _FIELD.finditer(value):
        fields.setdefault(m.group("key").upper(), []).append(m.group("value").strip())

    def first(key: str) -> str:
        return fields.get(key, [""])[0]

    return EmailMarking(
        namespace=first("NS"),
        classification=first("SEC"),
        caveats=tuple(fields.get("CAVEAT", []) + fields.get("DLM", [])),
        version=first("VER"),
        origin=first("ORIGIN"),
    )
