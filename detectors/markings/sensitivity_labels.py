"""Microsoft sensitivity labels as Outlook and Exchange write them into headers.

    msip_labels: MSIP_Label_<label GUID>_Enabled=true; MSIP_Label_<label GUID>_Name=OFFICIAL-SENSITIVE;
     MSIP_Label_<label GUID>_SiteId=<tenant GUID>; MSIP_Label_<label GUID>_Method=Standard; ...

Older clients write one header per field instead (msip_label_<GUID>_name: ...); both
are read. This module only parses; mapping labels to levels is the detector's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import regex

HEADER = "msip_labels"

GUID = r"\{?[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\}?"
_GUID = regex.compile(GUID)
_FIELD = regex.compile(rf"MSIP_Label_(?P<label>{GUID})_(?P<key>[A-Za-z]+)\s*=\s*(?P<value>[^;]*)", regex.IGNORECASE)
_FIELD_HEADER = regex.compile(rf"MSIP_Label_(?P<label>{GUID})_(?P<key>[A-Za-z]+)", regex.IGNORECASE)


@dataclass(frozen=True)
class SensitivityLabel:
    label_id: str                           # lower-case GUID, no braces
    site_id: str = ""                       # the tenant's GUID, lower-case, no braces
    enabled: bool = False
    name: str = ""                          # the label's display name, if the client wrote it
    method: str = ""                        # Standard (default label) or Privileged (chosen by the user)


def canonical_guid(value: str) -> str:
    """A GUID as compared here: lower case, without braces or surrounding space."""
    return value.strip().strip("{}").lower()


def is_guid(value: str) -> bool:
    return bool(_GUID.fullmatch(value.strip()))


def _unfold(value: str) -> str:
    """Folding removed (RFC 5322: the line break goes, the space after it stays)."""
    return regex.sub(r"[\r\n]+(?=[ \t])", "", value).replace("\r", " ").replace("\n", " ")


def labels_from_headers(headers: Iterable[tuple[str, str]]) -> list[SensitivityLabel]:
    """Every label named in msip_labels headers or per-field msip_label_* headers, in order."""
    fields: dict[str, dict[str, str]] = {}
    for name, value in headers:
        if name.lower() == HEADER:
            for m in _FIELD.finditer(_unfold(value)):
                fields.setdefault(canonical_guid(m.group("label")), {}).setdefault(m.group("key").lower(), m.group("value").strip())
        elif (m := _FIELD_HEADER.fullmatch(name.strip())) is not None:
            fields.setdefault(canonical_guid(m.group("label")), {}).setdefault(m.group("key").lower(), _unfold(value).strip())
    return [
        SensitivityLabel(
            label_id=label,
            site_id=canonical_guid(f.get("siteid", "")),
            enabled=f.get("enabled", "").lower() == "true",
            name=f.get("name", ""),
            method=f.get("method", ""),
        )
        for label, f in fields.items()
    ]
