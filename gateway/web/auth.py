"""Who is looking: sign-in, sessions, CSRF and the checks around them for the review UI.

Sessions live in the database (`admin_sessions`), so several gateways behind one
address share them; only a SHA-256 of the cookie's token is stored. A reverse proxy
may name the user in `admin.proxy_user_header`, but only from `admin.trusted_proxies`.
Nothing here logs a password, a token, or what a person typed as a user name.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import sqlalchemy as sa
from aiohttp import web

from gateway.config import AdminSettings
from gateway.store import admin_sessions, engine_for
from gateway.web.passwords import spend_equal_time, verify_password

COOKIE = "dlp-review"
SECURE_COOKIE = "__Host-dlp-review"     # the __Host- prefix: Secure, path /, no Domain: only this origin sets it
LOGIN_COOKIE = "dlp-login"              # ties a sign-in form to the browser that asked for it
MAX_USER_CHARS = 200


@dataclass(frozen=True)
class Session:
    token_hash: str
    user: str
    csrf: str
    expires_at: float
    filters: dict[str, str] = field(default_factory=dict)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


class SessionStore:
    """Sign-ins in the database: create, look up (unexpired only), end, and the list filters they carry."""

    def __init__(self, database_url: str, hours: float):
        self.engine = engine_for(database_url)
        self.seconds = hours * 3600

    def create(self, user: str, now: float | None = None) -> tuple[str, Session]:
        """A new session for `user`: the token for the cookie, and the session."""
        now = time.time() if now is None else now
        token = secrets.token_urlsafe(32)
        session = Session(_digest(token), user, secrets.token_urlsafe(32), now + self.seconds)
        with self.engine.begin() as conn:
            conn.execute(admin_sessions.delete().where(admin_sessions.c.expires_at < now))
            conn.execute(admin_sessions.insert().values(
                token_hash=session.token_hash, user=user, created_at=now, expires_at=session.expires_at,
                csrf=session.csrf, filters="{}",
            ))
        return token, session

    def get(self, token: str, now: float | None = None) -> Session | None:
        now = time.time() if now is None else now
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(admin_sessions).where(admin_sessions.c.token_hash == _digest(token))).first()
        if row is None or row.expires_at <= now:
            return None
        try:
            filters = {str(k): str(v) for k, v in json.loads(row.filters).items()}
        except (ValueError, AttributeError):
            filters = {}
        return Session(row.token_hash, row.user, row.csrf, row.expires_at, filters)

    def end(self, session: Session) -> None:
        with self.engine.begin() as conn:
            conn.execute(admin_sessions.delete().where(admin_sessions.c.token_hash == session.token_hash))

    def set_filters(self, session: Session, filters: dict[str, str]) -> None:
        with self.engine.begin() as conn:
            conn.execute(admin_sessions.update().where(admin_sessions.c.token_hash == session.token_hash)
                         .values(filters=json.dumps(filters)))


class LoginLimiter:
    """At most `attempts` failed sign-ins per client in `window` seconds; in memory, per gateway."""

    def __init__(self, attempts: int = 5, window: float = 300.0, max_clients: int = 10000):
        self.attempts = attempts
        self.window = window
        self.max_clients = max_clients
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, client: str, now: float) -> deque[float]:
        failures = self._failures.get(client, deque())
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        return failures

    def retry_after(self, client: str, now: float | None = None) -> float:
        """Seconds until `client` may try again; 0 when it may now."""
        now = time.monotonic() if now is None else now
        failures = self._recent(client, now)
        if len(failures) < self.attempts:
            return 0.0
        return max(0.0, failures[0] + self.window - now)

    def failed(self, client: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if len(self._failures) >= self.max_clients and client not in self._failures:
            for key in [k for k, v in self._failures.items() if not self._recent(k, now)]:
                del self._failures[key]
            if len(self._failures) >= self.max_clients:  # still full: forget the oldest client
                del self._failures[next(iter(self._failures))]
        failures = self._recent(client, now)
        failures.append(now)
        self._failures[client] = failures

    def succeeded(self, client: str) -> None:
        self._failures.pop(client, None)


class Authenticator:
    """The admin settings turned into decisions about one request."""

    def __init__(self, settings: AdminSettings, sessions: SessionStore, limiter: LoginLimiter | None = None):
        self.settings = settings
        self.sessions = sessions
        self.limiter = limiter or LoginLimiter()
        self._proxies = settings.proxies

    # --- where the request came from -----------------------------------------------------

    def from_trusted_proxy(self, request: web.Request) -> bool:
        try:
            address = ipaddress.ip_address((request.remote or "").split("%")[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
            address = address.ipv4_mapped
        return any(address in net for net in self._proxies)

    def client(self, request: web.Request) -> str:
        """The browser's address: the proxy's last X-Forwarded-For hop when a trusted proxy sent it."""
        if self.from_trusted_proxy(request):
            forwarded = request.headers.get("X-Forwarded-For", "").split(",")[-1].strip()
            if forwarded:
                return forwarded
        return request.remote or "unknown"

    def https(self, request: web.Request) -> bool:
        if request.secure:
            return True
        return self.from_trusted_proxy(request) and request.headers.get("X-Forwarded-Proto", "").lower() == "https"

    def host(self, request: web.Request) -> str:
        """The host:port the browser asked for."""
        if self.from_trusted_proxy(request) and request.headers.get("X-Forwarded-Host"):
            return request.headers["X-Forwarded-Host"].split(",")[0].strip().lower()
        return request.host.lower()

    def secure_cookie(self, request: web.Request) -> bool:
        setting = self.settings.secure_cookies
        if setting is True or setting is False:
            return setting
        if self.https(request):
            return True
        # auto: plain HTTP is accepted only where the browser is on this machine (http://127.0.0.1:9101).
        return not _loopback_host(self.host(request))

    def same_origin(self, request: web.Request) -> bool:
        """Whether a POST came from our own pages, as far as the browser tells (the CSRF token is checked too)."""
        site = request.headers.get("Sec-Fetch-Site")
        if site and site not in ("same-origin", "none"):
            return False
        for name in ("Origin", "Referer"):
            value = request.headers.get(name)
            if value and value != "null":   # Referrer-Policy no-referrer makes browsers send Origin: null
                return urlsplit(value).netloc.lower() == self.host(request)
        return True

    # --- who it is -----------------------------------------------------------------------

    def proxy_user(self, request: web.Request) -> str | None:
        header = self.settings.proxy_user_header
        if not header or not self.from_trusted_proxy(request):
            return None
        user = request.headers.get(header, "").strip()
        if not user or len(user) > MAX_USER_CHARS or not user.isprintable():
            return None
        return user

    def check_password(self, user: str, password: str) -> bool:
        """Constant-time in the password, and as slow for an unknown user as for a wrong password."""
        stored = self.settings.users.get(user)
        if stored is None or len(password) > 1024:
            spend_equal_time(password[:1024])
            return False
        return verify_password(stored, password)

    def session_token(self, request: web.Request) -> str | None:
        return request.cookies.get(SECURE_COOKIE) or request.cookies.get(COOKIE)

    def set_session_cookie(self, request: web.Request, response: web.StreamResponse, token: str) -> None:
        secure = self.secure_cookie(request)
        response.set_cookie(SECURE_COOKIE if secure else COOKIE, token, path="/", httponly=True, secure=secure,
                            samesite="Strict", max_age=int(self.sessions.seconds))

    def clear_session_cookie(self, response: web.StreamResponse) -> None:
        for name in (COOKIE, SECURE_COOKIE):
            response.del_cookie(name, path="/")


def csrf_matches(expected: str, given: Any) -> bool:
    return isinstance(given, str) and bool(given) and hmac.compare_digest(expected.encode(), given.encode())


def _loopback_host(host: str) -> bool:
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    name = name.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False
