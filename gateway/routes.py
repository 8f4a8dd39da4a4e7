"""Delivery route URLs: what `routes.relay` and `routes.secure` may say.

Parsing only; the code that delivers lives in `gateway.actions.delivery`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit


class TlsMode(str, enum.Enum):
    NONE = "none"                  # never STARTTLS
    OPPORTUNISTIC = "opportunistic"  # STARTTLS when offered, certificate not checked
    VERIFY = "verify"              # STARTTLS required, certificate verified; never plaintext


@dataclass(frozen=True)
class RouteSpec:
    """One parsed route URL."""

    kind: str                      # "maildir", "smtp" or "mx"
    url: str
    path: str = ""                 # maildir
    host: str = ""                 # smtp
    port: int = 25                 # smtp
    tls: TlsMode = TlsMode.OPPORTUNISTIC
    ca_file: str = ""              # verify against this CA bundle instead of the system one

    @property
    def requires_tls(self) -> bool:
        return self.tls is TlsMode.VERIFY


def parse_route(url: str) -> RouteSpec:
    """Parse a route URL, raising ValueError with a message a person can act on."""
    if not isinstance(url, str) or not url:
        raise ValueError("a route must be a URL such as 'maildir:var/outbox' or 'smtp://127.0.0.1:10026'")
    if url.startswith("maildir:"):
        path = url[len("maildir:"):]
        if path.startswith("//"):
            path = path[2:]
        if not path:
            raise ValueError("'maildir:' needs a directory, e.g. 'maildir:var/outbox'")
        return RouteSpec(kind="maildir", url=url, path=path, tls=TlsMode.NONE)
    parts = urlsplit(url)
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    unknown = set(query) - {"tls", "ca"}
    if unknown:
        raise ValueError(f"unknown route option(s) {sorted(unknown)}; allowed: tls, ca")
    try:
        tls = TlsMode(query.get("tls", "verify" if parts.scheme == "mx" else "opportunistic"))
    except ValueError:
        raise ValueError(f"tls={query.get('tls')!r} is not one of none, opportunistic, verify") from None
    ca_file = query.get("ca", "")
    if parts.scheme == "smtp":
        if not parts.hostname:
            raise ValueError("an smtp route needs a host, e.g. 'smtp://127.0.0.1:10026'")
        try:
            port = parts.port or 25
        except ValueError:
            raise ValueError("the port of an smtp route must be a number from 1 to 65535") from None
        return RouteSpec(kind="smtp", url=url, host=parts.hostname, port=port, tls=tls, ca_file=ca_file)
    if parts.scheme == "mx":
        if tls is not TlsMode.VERIFY:
            raise ValueError("an mx route delivers to the internet and must use tls=verify")
        return RouteSpec(kind="mx", url=url, tls=tls, ca_file=ca_file)
    raise ValueError(f"unknown route scheme {parts.scheme or url!r}; use maildir:, smtp:// or mx:")
