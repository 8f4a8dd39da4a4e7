"""The review UI's pages: sign-in, the held-message list, a message, its content, release, delete, the audit log.

Server-rendered HTML from Jinja2 templates with autoescape on; no script. Every page
with data is `no-store`; every change is a POST carrying the session's CSRF token, and
every change to held mail goes through Quarantine, which records who, when and why.
Personal data never goes in a URL (list filters are posted and kept in the session)
nor in the log (requests are logged as method and route name only).
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from gateway.actions.delivery import Route
from gateway.actions.notices import (
    CLASS_WORDS,
    Explanation,
    finding_from,
    base_notice,
    explain,
    grouped,
    location_words,
    plural,
    templates_in,
)
from gateway.actions.quarantine import HELD, STATUSES, HeldMessage, Quarantine, QuarantineError
from gateway.config import Config
from gateway.decision import Action, RecipientClass
from gateway.web import queries
from gateway.web.auth import LOGIN_COOKIE, Authenticator, Session, SessionStore, csrf_matches
from gateway.web.content import view_of

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
REFERENCE = r"[0-9A-Fa-f]{8,40}"
PAGE_SIZE = 25
AUDIT_PAGE_SIZE = 50
MAX_REASON = 2000
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cross-Origin-Opener-Policy": "same-origin",
}
PUBLIC = {"review.login", "review.login_post", "review.static"}   # reachable before signing in
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Outcome:
    """What one action did to one held message, for the results page."""

    reference: str
    action: str
    lines: tuple[tuple[str, str, bool], ...]   # (recipient or "", what happened, whether it succeeded)


@dataclass(frozen=True)
class FoundRow:
    what: str
    where: str
    category: str
    about: str


def when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def _reason(form: Any) -> str:
    return " ".join(str(form.get("reason", "")).split())[:MAX_REASON]


def _page_number(request: web.Request) -> int:
    value = request.query.get("page", "1")
    return int(value) if value.isdigit() and 0 < int(value) < 10**6 else 1


def _csv_cell(value: str) -> str:
    """A cell a spreadsheet will not run as a formula."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


class ReviewUI:
    """The pages, mounted on the admin listener's application by AdminServer."""

    def __init__(self, config: Config, quarantine: Quarantine, routes: dict[str, Route]):
        self.config = config
        self.quarantine = quarantine
        self.routes = routes
        self.engine = quarantine.engine
        self.sessions = SessionStore(config.storage.database_url, config.admin.session_hours)
        self.auth = Authenticator(config.admin, self.sessions)
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(str(HERE / "templates")),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.globals.update(when=when, location_words=location_words)
        self.css = (HERE / "static" / "review.css").read_bytes()

    def mount(self, app: web.Application) -> None:
        app.middlewares.append(self.middleware)
        add = app.router.add_route
        add("GET", "/", self.home, name="review.home")
        add("GET", "/static/review.css", self.static, name="review.static")
        add("GET", "/login", self.login, name="review.login")
        add("POST", "/login", self.login_post, name="review.login_post")
        add("POST", "/logout", self.logout, name="review.logout")
        add("GET", "/quarantine", self.listing, name="review.list")
        add("POST", "/quarantine/filter", self.filter, name="review.filter")
        add("POST", "/quarantine/bulk", self.bulk, name="review.bulk")
        add("GET", f"/quarantine/{{ref:{REFERENCE}}}", self.detail, name="review.detail")
        add("POST", f"/quarantine/{{ref:{REFERENCE}}}/read", self.read, name="review.read")
        add("POST", f"/quarantine/{{ref:{REFERENCE}}}/release", self.release, name="review.release")
        add("POST", f"/quarantine/{{ref:{REFERENCE}}}/delete", self.delete, name="review.delete")
        add("GET", "/audit", self.audit, name="review.audit")
        add("GET", "/audit.csv", self.audit_csv, name="review.audit_csv")

    # --- around every request ----------------------------------------------------------------

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route.name or ""
        if route.startswith("review."):
            log.debug("%s %s", request.method, route)
        try:
            if route.startswith("review.") and route not in PUBLIC:
                response = await self._signed_in(request, handler)
            else:
                response = await handler(request)
        except web.HTTPException as e:   # the router's 404 and 405: a plain page, no path echoed back
            response = web.Response(status=e.status, text=f"{e.status} {e.reason}\n")
        except Exception as e:
            # The message could hold an address; the log gets the route and the kind of failure only.
            log.error("admin: %s %s failed: %s", request.method, route or "(no route)", type(e).__name__)
            response = web.Response(status=500, text="500 the request failed; the gateway log says where\n")
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if route != "review.static":
            response.headers["Cache-Control"] = "no-store"
        return response

    async def _signed_in(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        token = self.auth.session_token(request)
        session = await asyncio.to_thread(self.sessions.get, token) if token else None
        new_token = None
        proxy_user = self.auth.proxy_user(request)
        if proxy_user is not None and (session is None or session.user != proxy_user):
            new_token, session = await asyncio.to_thread(self.sessions.create, proxy_user)
            log.info("admin: %s signed in through the proxy", proxy_user)
        if session is None:
            if request.method == "GET":
                response: web.StreamResponse = _redirect("/login")
            else:
                response = self._page("message.html", None, status=403, title="Signed out",
                                      text="Your session has ended. Sign in again; nothing was changed.")
            self.auth.clear_session_cookie(response)
            return response
        request["session"] = session
        if request.method == "POST":
            form = await request.post()
            if not self.auth.same_origin(request) or not csrf_matches(session.csrf, form.get("csrf")):
                return self._page("message.html", session, status=403, title="Refused",
                                  text="This form did not come from this review page (its security token is "
                                       "missing or out of date). Go back, reload the page and try again; "
                                       "nothing was changed.")
        response = await handler(request)
        if new_token is not None:
            self.auth.set_session_cookie(request, response, new_token)
        return response

    def _page(self, template: str, session: Session | None, status: int = 200, **context: Any) -> web.Response:
        body = self.templates.get_template(template).render(
            reviewer=session.user if session else "", csrf=session.csrf if session else "", **context)
        return web.Response(text=body, status=status, content_type="text/html", charset="utf-8")

    # --- signing in and out ------------------------------------------------------------------

    async def home(self, request: web.Request) -> web.StreamResponse:
        return _redirect("/quarantine")

    async def static(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=self.css, content_type="text/css",
                            headers={"Cache-Control": "max-age=3600"})

    def _login_page(self, request: web.Request, status: int = 200, error: str = "") -> web.Response:
        nonce = request.cookies.get(LOGIN_COOKIE) or ""
        if not re.fullmatch(r"[A-Za-z0-9_-]{32,64}", nonce):
            nonce = secrets.token_urlsafe(32)
        settings = self.config.admin
        response = self._page("login.html", None, status=status, title="Sign in", error=error, login_token=nonce,
                              local=bool(settings.users), proxy=bool(settings.proxy_user_header))
        response.set_cookie(LOGIN_COOKIE, nonce, path="/login", httponly=True, samesite="Strict",
                            secure=self.auth.secure_cookie(request), max_age=3600)
        return response

    async def login(self, request: web.Request) -> web.StreamResponse:
        token = self.auth.session_token(request)
        if (token and await asyncio.to_thread(self.sessions.get, token)) or self.auth.proxy_user(request):
            return _redirect("/quarantine")
        return self._login_page(request)

    async def login_post(self, request: web.Request) -> web.StreamResponse:
        form = await request.post()
        client = self.auth.client(request)
        if not self.auth.same_origin(request) or not csrf_matches(request.cookies.get(LOGIN_COOKIE, ""),
                                                                 form.get("login_token")):
            return self._login_page(request, 403, "The sign-in form had expired or came from elsewhere. "
                                                  "Try again from this page.")
        wait = self.auth.limiter.retry_after(client)
        if wait:
            log.warning("admin: sign-in refused: too many failed attempts from one client")
            return self._login_page(request, 429, f"Too many failed sign-ins from your address. Try again in "
                                                  f"{max(1, round(wait / 60))} minute(s).")
        user = str(form.get("user", "")).strip()
        password = str(form.get("password", ""))
        if not await asyncio.to_thread(self.auth.check_password, user, password):
            self.auth.limiter.failed(client)
            log.info("admin: a sign-in failed (wrong user name or password)")
            return self._login_page(request, 401, "That user name and password do not match a reviewer "
                                                  "in admin.users.")
        if self.auth.secure_cookie(request) and not self.auth.https(request):
            return self._login_page(request, 400, "This address is plain HTTP, and the session cookie is sent "
                                                  "only over HTTPS (admin.secure_cookies). Open the review UI "
                                                  "through its HTTPS address.")
        self.auth.limiter.succeeded(client)
        old = self.auth.session_token(request)
        if old:
            previous = await asyncio.to_thread(self.sessions.get, old)
            if previous is not None:
                await asyncio.to_thread(self.sessions.end, previous)
        token, _ = await asyncio.to_thread(self.sessions.create, user)
        log.info("admin: %s signed in", user)
        response = _redirect("/quarantine")
        self.auth.set_session_cookie(request, response, token)
        response.del_cookie(LOGIN_COOKIE, path="/login")
        return response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        await asyncio.to_thread(self.sessions.end, request["session"])
        response = _redirect("/login")
        self.auth.clear_session_cookie(response)
        return response

    # --- the list ------------------------------------------------------------------------------

    async def listing(self, request: web.Request, status: int = 200, error: str = "") -> web.StreamResponse:
        session: Session = request["session"]
        filters = queries.ListFilters.of(session.filters)
        page = await asyncio.to_thread(queries.held_page, self.engine, filters, _page_number(request), PAGE_SIZE)
        counts = await asyncio.to_thread(queries.rule_counts, self.engine, filters)
        seen = await asyncio.to_thread(queries.known_rules, self.engine)
        rules = sorted({r.name for r in self.config.policy.rules} | set(seen))
        return self._page("list.html", session, status=status, title="Held messages", page=page, filters=filters,
                          counts=counts, rules=rules, statuses=STATUSES, error=error)

    async def filter(self, request: web.Request) -> web.StreamResponse:
        session: Session = request["session"]
        form = await request.post()
        if "clear" in form:
            values: dict[str, str] = {}
        elif "only_rule" in form:   # a rule's count was pressed: that rule, the other filters as they were
            values = {**session.filters, "rule": str(form.get("only_rule", ""))}
        else:
            values = {k: str(form.get(k, "")) for k in queries.FILTER_KEYS}
        await asyncio.to_thread(self.sessions.set_filters, session, queries.ListFilters.of(values).to_dict())
        return _redirect("/quarantine")

    async def bulk(self, request: web.Request) -> web.StreamResponse:
        session: Session = request["session"]
        form = await request.post()
        refs = [str(r) for r in form.getall("ref", []) if re.fullmatch(REFERENCE, str(r))]
        action = str(form.get("action", ""))
        reason = _reason(form)
        if action not in ("release", "delete"):
            return await self.listing(request, 400, "Choose release or delete.")
        if not refs:
            return await self.listing(request, 400, "Tick the messages to act on first; nothing was changed.")
        if not reason:
            return await self.listing(request, 400, f"Give a reason to {action} these messages; it is recorded with "
                                                 "your name. Nothing was changed.")
        outcomes = []
        for ref in dict.fromkeys(refs):
            if action == "release":
                outcomes.append(await self._release(ref, session.user, reason, None))
            else:
                outcomes.append(await self._delete(ref, session.user, reason))
        return self._page("results.html", session, title=f"Bulk {action}", outcomes=outcomes, reason=reason)

    # --- one message -----------------------------------------------------------------------------

    async def _held(self, request: web.Request) -> HeldMessage | None:
        return await asyncio.to_thread(self.quarantine.get, request.match_info["ref"].upper())

    def _not_found(self, session: Session) -> web.Response:
        return self._page("message.html", session, status=404, title="Not found",
                          text="There is no held message with that reference.")

    async def detail(self, request: web.Request, status: int = 200, error: str = "") -> web.StreamResponse:
        session: Session = request["session"]
        held = await self._held(request)
        if held is None:
            return self._not_found(session)
        events = await asyncio.to_thread(self.quarantine.events, held.id)
        explanations, notice = self._guidance(held)
        found = [_found_row(f) for f in held.findings]
        titles = {r.name: r.title for r in self.config.policy.rules}
        return self._page("detail.html", session, status=status, title=f"Held message {held.id}", held=held,
                          events=events, explanations=explanations, notice=notice, found=found, titles=titles,
                          class_words={c.value: w for c, w in CLASS_WORDS.items()}, error=error,
                          notify_held=self.config.bounce.notify_held, HELD=HELD)

    def _guidance(self, held: HeldMessage) -> tuple[tuple[Explanation, ...], str]:
        """What the sender was told: the rules' guidance per recipient, and the held notice's text as sent
        (without the subject, which is content: it is shown only once a reason is given)."""
        findings = [f for f in (finding_from(r) for r in held.findings) if f is not None]
        explanations = []
        for r in held.recipients:
            try:
                rclass: RecipientClass | None = RecipientClass(r.rclass)
            except ValueError:
                rclass = None
            explanations.append(explain(self.config, r.address, rclass, r.rules, Action.QUARANTINE, findings))
        groups = grouped(explanations)
        try:
            notice = replace(base_notice(self.config, held.id, "", held.message_id, held.created_at), held=groups)
            text = templates_in(self.config.bounce.templates).render("notice-held", notice).text
        except Exception as e:  # the guidance above still shows; the page does not fail for the notice
            log.warning("admin: the held notice for the review page did not render: %s", type(e).__name__)
            text = ""
        return groups, text

    async def read(self, request: web.Request) -> web.StreamResponse:
        session: Session = request["session"]
        form = await request.post()
        reason = _reason(form)
        if not reason:
            return await self.detail(request, 400, "Give a reason for reading this message: it is recorded with "
                                                   "your name. The message was not opened.")
        ref = request.match_info["ref"].upper()
        try:
            raw = await asyncio.to_thread(self.quarantine.read, ref, session.user, reason)
        except QuarantineError as e:
            return await self.detail(request, 409, str(e))
        view = await asyncio.to_thread(view_of, raw)
        return self._page("content.html", session, title=f"Content of {ref}", ref=ref, view=view, reason=reason)

    async def release(self, request: web.Request) -> web.StreamResponse:
        session: Session = request["session"]
        form = await request.post()
        reason = _reason(form)
        addresses = [str(a) for a in form.getall("rcpt", [])]
        if not addresses:
            return await self.detail(request, 400, "Tick at least one recipient to release to; nothing was sent.")
        if not reason:
            return await self.detail(request, 400, "Give a reason for releasing this message: it is recorded "
                                                   "with your name. Nothing was sent.")
        outcome = await self._release(request.match_info["ref"].upper(), session.user, reason, addresses)
        return self._page("results.html", session, title="Release", outcomes=[outcome], reason=reason)

    async def delete(self, request: web.Request) -> web.StreamResponse:
        session: Session = request["session"]
        reason = _reason(await request.post())
        if not reason:
            return await self.detail(request, 400, "Give a reason for deleting this message: it is recorded "
                                                   "with your name. Nothing was deleted.")
        outcome = await self._delete(request.match_info["ref"].upper(), session.user, reason)
        return self._page("results.html", session, title="Delete", outcomes=[outcome], reason=reason)

    async def _release(self, ref: str, user: str, reason: str, addresses: list[str] | None) -> Outcome:
        try:
            results = await self.quarantine.release(ref, self.routes, user, reason, addresses)
        except QuarantineError as e:
            return Outcome(ref, "release", (("", str(e), False),))
        lines = tuple((address, ("released: " if r.ok else "still held: ") + r.reply, r.ok)
                      for address, r in sorted(results.items()))
        return Outcome(ref, "release", lines)

    async def _delete(self, ref: str, user: str, reason: str) -> Outcome:
        try:
            await asyncio.to_thread(self.quarantine.delete, ref, user, reason)
        except QuarantineError as e:
            return Outcome(ref, "delete", (("", str(e), False),))
        return Outcome(ref, "delete", (("", "deleted: the content is gone; the decision and the log stay", True),))

    # --- the audit log -----------------------------------------------------------------------------

    async def audit(self, request: web.Request) -> web.StreamResponse:
        session: Session = request["session"]
        number = _page_number(request)
        events, total = await asyncio.to_thread(queries.events_page, self.engine, number, AUDIT_PAGE_SIZE)
        pages = max(1, -(-total // AUDIT_PAGE_SIZE))
        return self._page("audit.html", session, title="Audit log", events=events, total=total,
                          number=min(number, pages), pages=pages, detail_of=_detail_words)

    async def audit_csv(self, request: web.Request) -> web.StreamResponse:
        def build() -> bytes:
            out = io.StringIO()
            writer = csv.writer(out)
            writer.writerow(["time", "reference", "action", "actor", "reason", "detail"])
            for e in queries.all_events(self.engine):
                writer.writerow([_csv_cell(v) for v in (when(e.at), e.item_id, e.action, e.actor, e.reason,
                                                        e.detail)])
            return out.getvalue().encode("utf-8-sig")   # the BOM: spreadsheets then read it as UTF-8

        body = await asyncio.to_thread(build)
        day = time.strftime("%Y%m%d", time.gmtime())
        return web.Response(body=body, content_type="text/csv", charset="utf-8", headers={
            "Content-Disposition": f'attachment; filename="quarantine-audit-{day}.csv"'})


def _found_row(record: dict[str, object]) -> FoundRow:
    """One finding as the index keeps it (kinds, counts, locations; never values), in words."""
    count = record.get("count", 1)
    n = count if isinstance(count, int) else 1
    about = record.get("recipients") or ()
    return FoundRow(
        what=f"{n} {plural(str(record.get('kind', '')), n)}",
        where=location_words(str(record.get("location", "message"))),
        category=str(record.get("category", "")),
        about=", ".join(str(r) for r in about) if isinstance(about, list) else "",
    )


def _detail_words(detail: str) -> str:
    """A release's per-recipient replies in words; other details as they are."""
    try:
        data = json.loads(detail)
    except ValueError:
        return detail
    if isinstance(data, dict):
        return "; ".join(f"{k}: {v}" for k, v in data.items())
    return detail


def _redirect(location: str) -> web.Response:
    return web.Response(status=303, headers={"Location": location})
