"""The review UI in a real browser: headless Chromium (Debian's chromium and chromium-driver, through
Selenium) against a real gateway holding mail sent over SMTP, releasing to a real sink.

One gateway and one browser serve the whole file; each test holds the messages it looks at.
Screenshots of the main pages go to test-artifacts/screenshots/.
"""

from __future__ import annotations

import csv
import hashlib
import http.client
import io
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from email import policy as email_policy
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import ConfigError, load_config
from gateway.web.auth import LoginLimiter
from gateway.web.passwords import PasswordHash, PasswordHashError, hash_password, verify_password
from tests.conftest import SENDER, make_message
from tests.support import BIN, REPO, GatewayProcess, Sink, smtp_route, wait_until

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
PASSWORD = "correct horse battery staple"
NINO_BODY = "Hi,\n\nHer National Insurance number is AB 12 34 56 C, as discussed.\n\nJane"


def referrals_csv(people: int = 27) -> bytes:
    return "".join(f"Client {n},AB{100000 + n:06d}C\n" for n in range(people)).encode()


# --- password hashes and sign-in limits (no browser) ----------------------------------------------

def test_a_password_hash_verifies_its_password_and_no_other() -> None:
    stored = hash_password(PASSWORD)
    assert stored.startswith("scrypt$n=32768,r=8,p=1$") and PASSWORD not in stored
    assert verify_password(stored, PASSWORD)
    assert not verify_password(stored, PASSWORD + " ")
    assert not verify_password(stored, "")
    assert hash_password(PASSWORD) != stored  # a new salt each time


def test_a_password_hash_carries_its_own_parameters() -> None:
    parsed = PasswordHash.parse(hash_password(PASSWORD))
    cheaper = PasswordHash(1024, 8, 1, parsed.salt,
                           hashlib.scrypt(PASSWORD.encode(), salt=parsed.salt, n=1024, r=8, p=1, dklen=32))
    assert verify_password(str(cheaper), PASSWORD)  # checked with the n it names, not today's default


@pytest.mark.parametrize("stored", [
    "", PASSWORD, "sha256$abc", "scrypt$n=1000,r=8,p=1$c2FsdHNhbHQ$" + "A" * 43,     # n not a power of 2
    "scrypt$n=4194304,r=8,p=1$c2FsdHNhbHQ$" + "A" * 43,                             # too much memory
    "scrypt$n=16384,r=8,p=1$c2Fs$" + "A" * 43,                                      # salt too short
])
def test_what_is_not_a_usable_hash_is_refused_and_never_matches(stored: str) -> None:
    with pytest.raises(PasswordHashError):
        PasswordHash.parse(stored)
    assert not verify_password(stored, PASSWORD)


def test_a_client_is_locked_out_after_repeated_failures_and_only_for_the_window() -> None:
    limiter = LoginLimiter(attempts=3, window=60)
    for t in (0, 1, 2):
        assert limiter.retry_after("192.0.2.1", now=t) == 0
        limiter.failed("192.0.2.1", now=t)
    assert limiter.retry_after("192.0.2.1", now=3) == pytest.approx(57)
    assert limiter.retry_after("192.0.2.2", now=3) == 0  # another client is not affected
    assert limiter.retry_after("192.0.2.1", now=61) == 0
    limiter.failed("192.0.2.1", now=62)
    limiter.succeeded("192.0.2.1")
    assert limiter.retry_after("192.0.2.1", now=63) == 0


def _request(remote: str, host: str = "127.0.0.1:9101", **headers: str) -> Any:
    from unittest import mock

    from aiohttp.test_utils import make_mocked_request

    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (remote, 40000) if name == "peername" else default
    return make_mocked_request("GET", "/quarantine", headers={"Host": host, **headers}, transport=transport)


def _authenticator(tmp_path: Path, **admin: Any) -> Any:
    from gateway.web.auth import Authenticator, SessionStore

    path = tmp_path / "auth.yaml"
    path.write_text(yaml.safe_dump({"admin": admin, "storage": {"database_url": f"sqlite:///{tmp_path}/a.db"}}))
    config = load_config(path)
    return Authenticator(config.admin, SessionStore(config.storage.database_url, config.admin.session_hours))


def test_only_a_trusted_proxy_may_name_the_user_or_say_the_browser_used_https(tmp_path: Path) -> None:
    auth = _authenticator(tmp_path, proxy_user_header="X-Remote-User", trusted_proxies=["10.1.0.0/24"])
    assert auth.proxy_user(_request("10.1.0.7", **{"X-Remote-User": "carol"})) == "carol"
    assert auth.proxy_user(_request("10.2.0.7", **{"X-Remote-User": "carol"})) is None
    assert auth.proxy_user(_request("10.1.0.7", **{"X-Remote-User": "bad\nname"})) is None
    assert auth.https(_request("10.1.0.7", **{"X-Forwarded-Proto": "https"}))
    assert not auth.https(_request("10.2.0.7", **{"X-Forwarded-Proto": "https"}))
    assert auth.client(_request("10.1.0.7", **{"X-Forwarded-For": "203.0.113.9, 198.51.100.4"})) == "198.51.100.4"
    assert auth.client(_request("10.2.0.7", **{"X-Forwarded-For": "203.0.113.9"})) == "10.2.0.7"


def test_session_cookies_are_secure_unless_the_browser_is_on_this_machine(tmp_path: Path) -> None:
    auto = _authenticator(tmp_path, secure_cookies="auto")
    assert not auto.secure_cookie(_request("127.0.0.1", "127.0.0.1:9101"))
    assert not auto.secure_cookie(_request("127.0.0.1", "localhost:9101"))
    assert auto.secure_cookie(_request("192.0.2.5", "review.council.example.gov.uk:9101"))
    assert _authenticator(tmp_path, secure_cookies=True).secure_cookie(_request("127.0.0.1"))
    assert not _authenticator(tmp_path, secure_cookies=False).secure_cookie(_request("192.0.2.5", "x.example"))


def test_sessions_are_stored_hashed_expire_and_end(tmp_path: Path) -> None:
    import sqlalchemy as sa

    from gateway.store import admin_sessions

    sessions = _authenticator(tmp_path, session_hours=1).sessions
    token, session = sessions.create("alice", now=1000.0)
    with sessions.engine.connect() as conn:
        stored = conn.execute(sa.select(admin_sessions.c.token_hash)).scalars().all()
    assert token not in stored and session.token_hash in stored
    assert sessions.get(token, now=1000.0 + 3599) == session
    assert sessions.get(token, now=1000.0 + 3601) is None
    assert sessions.get(token + "x", now=1001.0) is None
    sessions.set_filters(session, {"domain": "example.com"})
    assert sessions.get(token, now=1001.0).filters == {"domain": "example.com"}
    sessions.end(session)
    assert sessions.get(token, now=1001.0) is None


def test_admin_passwd_prints_a_config_line_that_verifies(tmp_path: Path) -> None:
    out = subprocess.run([str(BIN / "dlp-gateway"), "admin-passwd", "alice"], input=f"{PASSWORD}\n{PASSWORD}\n",
                         capture_output=True, text=True, timeout=60, start_new_session=True)  # no tty: stdin
    assert out.returncode == 0, out.stderr
    assert PASSWORD not in out.stdout
    users = yaml.safe_load(out.stdout)["admin"]["users"]
    assert verify_password(users["alice"], PASSWORD)
    path = tmp_path / "gw.yaml"
    path.write_text(out.stdout)
    assert load_config(path).admin.users == users
    differ = subprocess.run([str(BIN / "dlp-gateway"), "admin-passwd", "alice"], input=f"{PASSWORD}\nother one!!\n",
                            capture_output=True, text=True, timeout=60, start_new_session=True)
    assert differ.returncode == 1 and "differ" in differ.stderr and "scrypt" not in differ.stdout


# --- configuration ----------------------------------------------------------------------------------

def _config_error(tmp_path: Path, admin: dict[str, Any]) -> str:
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump({"admin": admin}))
    with pytest.raises(ConfigError) as e:
        load_config(path)
    return str(e.value)


def test_admin_listen_beyond_loopback_without_sign_in_is_a_config_error(tmp_path: Path) -> None:
    error = _config_error(tmp_path, {"listen": "0.0.0.0:9101"})
    assert f"{tmp_path / 'gw.yaml'}: admin.listen:" in error and "admin.users" in error
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump({"admin": {"listen": "0.0.0.0:9101", "users": {"alice": hash_password("x")}}}))
    assert load_config(path).admin.listen == "0.0.0.0:9101"
    path.write_text(yaml.safe_dump({"admin": {"listen": "[::1]:9101"}}))
    assert load_config(path).admin.listen == "[::1]:9101"  # loopback needs no sign-in configured


def test_proxy_header_needs_trusted_proxies_and_users_need_real_hashes(tmp_path: Path) -> None:
    assert "admin.trusted_proxies:" in _config_error(tmp_path, {"proxy_user_header": "X-Remote-User"})
    error = _config_error(tmp_path, {"users": {"alice": "hunter2"}})
    assert "admin.users: alice:" in error and "admin-passwd" in error and "hunter2" not in error
    assert "admin.trusted_proxies:" in _config_error(tmp_path, {"trusted_proxies": ["not a network"]})
    assert "admin.secure_cookies:" in _config_error(tmp_path, {"secure_cookies": "sometimes"})


# --- the filters, on the real index (no browser) -------------------------------------------------------

def test_list_filters_select_by_sender_domain_date_and_status(tmp_path: Path) -> None:
    from gateway.actions.quarantine import Quarantine
    from gateway.message import Envelope
    from gateway.pipeline import Pipeline
    from gateway.web.queries import ListFilters, held_page, rule_counts

    config = load_config()
    quarantine = Quarantine(f"sqlite:///{tmp_path}/gw.db", str(tmp_path / "held"))
    pipeline = Pipeline(config)
    refs = []
    for sender, rcpt in (("ann@council.example.gov.uk", "a@supplier.example.com"),
                         ("bob@council.example.gov.uk", "b@other.example.org")):
        raw = make_message(subject="SECRET: plans", sender=sender, to=[rcpt])
        envelope = Envelope(sender, (rcpt,))
        inspection = pipeline.inspect(raw, envelope)
        refs.append(quarantine.hold(inspection, raw, envelope, list(inspection.decision.recipients)))
    today = time.strftime("%Y-%m-%d", time.gmtime())

    def ids(**values: str) -> list[str]:
        return [r.id for r in held_page(quarantine.engine, ListFilters.of(values), 1).rows]

    assert sorted(ids()) == sorted(refs)
    assert ids(sender="ANN@") == [refs[0]]
    assert ids(domain="@Other.example.org") == [refs[1]]
    assert ids(domain="example.org%") == []            # a wildcard typed is a character, not a pattern
    assert sorted(ids(since=today, until=today)) == sorted(refs)
    assert ids(until="2001-01-01") == []
    assert ids(rule="secret-marking", sender="bob") == [refs[1]]
    assert ids(status="released") == [] and sorted(ids(status="all")) == sorted(refs)
    assert rule_counts(quarantine.engine, ListFilters.of({"rule": "personal-data"})) == [("secret-marking", 2)]


# --- the gateway and the browser ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def sinks() -> Iterator[tuple[Sink, Sink]]:
    relay, secure = Sink().start(), Sink().start()   # `secure` offers no TLS: nothing may reach it
    yield relay, secure
    relay.stop()
    secure.stop()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, sinks: tuple[Sink, Sink], test_ca: Any) -> Iterator[GatewayProcess]:
    relay, secure = sinks
    workdir = tmp_path_factory.mktemp("review")
    gateway = GatewayProcess(workdir, {
        "routes": {"relay": smtp_route(relay), "secure": smtp_route(secure, "verify", test_ca.ca_file)},
        "admin": {"users": {"alice": hash_password(PASSWORD), "bob": hash_password(PASSWORD + "2")},
                  "proxy_user_header": "X-Remote-User", "trusted_proxies": ["127.0.0.1/32"]},
    })
    gateway.start()
    yield gateway
    gateway.stop()


class Browser:
    """Headless Chromium driven like a person: open pages, fill forms, press buttons, look."""

    def __init__(self, base: str):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.base = base
        self.profile = tempfile.mkdtemp(prefix="review-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                     "--disable-background-networking", "--disable-component-update", "--disable-sync",
                     "--disable-dev-shm-usage", "--window-size=1280,900", f"--user-data-dir={self.profile}"):
            options.add_argument(flag)
        self.driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
        self.driver.set_page_load_timeout(30)

    def quit(self) -> None:
        self.driver.quit()
        shutil.rmtree(self.profile, ignore_errors=True)

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    @property
    def path(self) -> str:
        return self.driver.current_url.removeprefix(self.base)

    @property
    def text(self) -> str:
        return self.driver.find_element("tag name", "body").text

    def find(self, css: str) -> Any:
        return self.driver.find_element("css selector", css)

    def all(self, css: str) -> list[Any]:
        return self.driver.find_elements("css selector", css)

    def fill(self, css: str, value: str) -> None:
        field = self.find(css)
        field.clear()
        field.send_keys(value)

    def select(self, css: str, value: str) -> None:
        from selenium.webdriver.support.ui import Select

        Select(self.find(css)).select_by_value(value)

    def press(self, css: str) -> None:
        """Press a button and wait for the page it leads to (a new document, fully loaded)."""
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver.execute_script("window.__previousPage = true")   # WebDriver's scripts are not the page's

        def arrived(driver: Any) -> bool:
            try:
                return bool(driver.execute_script(
                    "return !window.__previousPage && document.readyState === 'complete'"))
            except WebDriverException:   # asked in the middle of the navigation
                return False

        self.find(css).click()
        WebDriverWait(self.driver, 30, poll_frequency=0.05).until(arrived)

    def sign_in(self, user: str = "alice", password: str = PASSWORD) -> None:
        self.open("/login")
        self.fill("input[name=user]", user)
        self.fill("input[name=password]", password)
        self.press("#login button")

    def cookie(self) -> str:
        return "; ".join(f"{c['name']}={c['value']}" for c in self.driver.get_cookies())

    def shot(self, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        height = self.driver.execute_script("return document.documentElement.scrollHeight")
        self.driver.set_window_size(1280, max(900, min(int(height) + 40, 6000)))
        self.driver.save_screenshot(str(SCREENSHOTS / f"{name}.png"))
        self.driver.set_window_size(1280, 900)


@pytest.fixture(scope="module")
def browser(gw: GatewayProcess) -> Iterator[Browser]:
    if not (CHROMIUM.exists() and CHROMEDRIVER.exists()):
        pytest.fail("Debian's chromium and chromium-driver are needed: apt-get install chromium chromium-driver "
                    "(make test-deps installs them)")
    b = Browser(f"http://127.0.0.1:{gw.admin_port}")
    yield b
    b.quit()


@pytest.fixture
def alice(browser: Browser) -> Browser:
    """The browser, signed in as alice."""
    browser.open("/quarantine")
    if browser.path != "/quarantine":
        browser.sign_in()
        assert browser.path == "/quarantine"
    return browser


def hold(gw: GatewayProcess, rcpts: list[str], raw: bytes | None = None, **kwargs: Any) -> str:
    """Send a message the policy holds; its quarantine reference."""
    raw = raw or make_message(to=rcpts, **kwargs)
    message_id = re.search(rb"(?im)^Message-ID:\s*(\S+)", raw).group(1).decode()  # type: ignore[union-attr]
    with gw.smtp() as client:
        client.sendmail(SENDER, rcpts, raw)
    records = [r for r in gw.audit() if r["message_id"] == message_id]
    assert records and records[0]["verdict"] == "quarantine", records
    return records[0]["reference"]


def secret(gw: GatewayProcess, rcpts: list[str], body: str = "The plans for the depot.") -> str:
    return hold(gw, rcpts, subject="SECRET: plans", body=body)


def bulk(gw: GatewayProcess, rcpts: list[str]) -> str:
    return hold(gw, rcpts, body="Referrals attached.", attachments=[("referrals.csv", referrals_csv(), "text/csv")])


def listed(b: Browser) -> set[str]:
    return {row.get_attribute("id").removeprefix("row-") for row in b.all("table.held tbody tr")}


def events(gw: GatewayProcess, ref: str) -> list[tuple[str, str, str]]:
    import json

    out = gw.cli("quarantine", "show", ref)
    assert out.returncode == 0, out.stderr
    return [(e["action"], e["actor"], e["reason"]) for e in json.loads(out.stdout)["events"]]


def request(gw: GatewayProcess, method: str, path: str, body: str = "",
            headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection("127.0.0.1", gw.admin_port, timeout=30)
    try:
        hdrs = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
        conn.request(method, path, body=body.encode() if body else None, headers=hdrs)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read().decode("utf-8")
    finally:
        conn.close()


def csrf_of(gw: GatewayProcess, cookie: str) -> str:
    _, _, page = request(gw, "GET", "/quarantine", headers={"Cookie": cookie})
    match = re.search(r'name="csrf" value="([^"]+)"', page)
    assert match, page[:500]
    return match.group(1)


# --- signing in --------------------------------------------------------------------------------------

def test_sign_in_refuses_a_wrong_password_and_admits_the_right_one(browser: Browser, gw: GatewayProcess) -> None:
    browser.driver.delete_all_cookies()
    browser.open("/quarantine")
    assert browser.path == "/login"   # not signed in: sent to sign in
    browser.shot("login")
    browser.sign_in("alice", "not the password")
    assert browser.path == "/login" and "do not match" in browser.find("#error").text
    browser.sign_in("mallory", PASSWORD)
    assert browser.path == "/login" and "do not match" in browser.find("#error").text
    browser.sign_in("alice", PASSWORD)
    assert browser.path == "/quarantine" and browser.find("#reviewer").text == "alice"
    cookie = next(c for c in browser.driver.get_cookies() if c["name"] == "dlp-review")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert PASSWORD not in gw.log_file.read_text()


# --- the list ----------------------------------------------------------------------------------------

def test_filters_by_rule_and_recipient_domain_keep_addresses_out_of_the_url(alice: Browser,
                                                                            gw: GatewayProcess) -> None:
    marked = secret(gw, ["partner@filter-a.example.com", "friend@gmail.com"])
    many = bulk(gw, ["records@nhs.net"])
    alice.open("/quarantine")
    assert {marked, many} <= listed(alice)
    assert int(alice.find('.count[data-rule="bulk-personal-data"]').text) >= 1

    alice.select("#filters select[name=rule]", "bulk-personal-data")
    alice.press("#filters button[name=apply]")
    assert alice.path == "/quarantine"
    assert many in listed(alice) and marked not in listed(alice)

    alice.press("#filters button[name=clear]")
    alice.fill("#filters input[name=domain]", "filter-a.example.com")
    alice.press("#filters button[name=apply]")
    assert listed(alice) == {marked}
    assert alice.path == "/quarantine" and "@" not in alice.driver.current_url
    assert "filter-a" not in alice.driver.current_url
    assert alice.find("#filters input[name=domain]").get_attribute("value") == "filter-a.example.com"
    alice.shot("list-filtered")

    alice.press("#filters button[name=clear]")
    alice.press('#rule-counts button[value="secret-marking"]')   # a rule's count selects that rule
    assert marked in listed(alice) and many not in listed(alice)
    alice.press("#filters button[name=clear]")
    alice.shot("list")


# --- one message -------------------------------------------------------------------------------------

def test_the_detail_page_shows_the_decision_and_what_the_sender_was_told(alice: Browser,
                                                                       gw: GatewayProcess) -> None:
    ref = bulk(gw, ["records@nhs.net"])
    alice.open(f"/quarantine/{ref}")
    envelope = alice.find("#envelope").text
    assert ref in envelope and SENDER in envelope and "held" in envelope
    recipients = alice.find("#recipients").text
    assert "records@nhs.net" in recipients and "trusted" in recipients and "only over verified TLS" in recipients
    assert "bulk-personal-data" in alice.find("#rules").text
    findings = alice.find("#findings").text
    assert "27 National Insurance numbers" in findings and "attachment 'referrals.csv'" in findings
    guidance = alice.find("#guidance").text
    assert "personal data about many people" in guidance and "data-sharing" in guidance
    assert "AB100001C" not in alice.driver.page_source   # the data itself is not on the page
    alice.shot("detail")


def test_reading_the_content_needs_a_reason_which_is_recorded(alice: Browser, gw: GatewayProcess) -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = SENDER, "partner@read.example.com", "SECRET: depot <plans>"
    msg["Message-ID"] = make_msgid(domain="council.example.gov.uk")
    msg.set_content("MARKER-R4d the depot plans\n")
    msg.add_alternative('<p>MARKER-R4d <b id="injected">bold</b><script>document.title="pwned"</script></p>',
                        subtype="html")
    msg.add_attachment(b"%PDF-1.4 plans", maintype="application", subtype="pdf", filename="plans.pdf")
    ref = hold(gw, ["partner@read.example.com"], msg.as_bytes(policy=email_policy.SMTP))

    alice.open(f"/quarantine/{ref}")
    assert "MARKER-R4d" not in alice.driver.page_source and "depot" not in alice.text
    alice.fill("#read input[name=reason]", "   ")
    alice.press("#read button")
    assert "Give a reason" in alice.find("#error").text and "MARKER-R4d" not in alice.driver.page_source
    assert [e[0] for e in events(gw, ref)] == ["held"]

    alice.fill("#read input[name=reason]", "complaint from the recipient, ticket 4411")
    alice.press("#read button")
    assert "MARKER-R4d the depot plans" in alice.text
    assert "SECRET: depot <plans>" in alice.find("#headers").text
    assert '<b id="injected">bold</b>' in alice.text          # the HTML part as source text...
    assert alice.all("#injected") == [] and alice.driver.title != "pwned"   # ...never rendered or run
    assert "plans.pdf" in alice.find("#attachments").text
    assert alice.all("a[href*='plans.pdf']") == []              # listed, not downloadable
    assert alice.path == f"/quarantine/{ref}/read"                # the reason went in the body, not the URL
    alice.shot("content")
    assert events(gw, ref)[-1] == ("viewed", "alice", "complaint from the recipient, ticket 4411")


# --- release and delete ------------------------------------------------------------------------------

def test_release_to_some_recipients_delivers_them_through_the_relay(alice: Browser, gw: GatewayProcess,
                                                                   sinks: tuple[Sink, Sink]) -> None:
    relay, _ = sinks
    ref = secret(gw, ["partner@release.example.com", "friend@gmail.com"], body="MARKER-Rel1 plans")
    alice.open(f"/quarantine/{ref}")
    alice.find('#release input[value="friend@gmail.com"]').click()   # untick: release to the partner only
    alice.fill("#release input[name=reason]", "agreed with the partner's security officer")
    alice.press("#release button")
    results = alice.find("#results").text
    assert "partner@release.example.com" in results and "released: 250" in results
    assert "friend@gmail.com" not in results
    alice.shot("release-results")
    wait_until(lambda: relay.to("partner@release.example.com"), timeout=15)
    (received,) = relay.to("partner@release.example.com")
    assert b"MARKER-Rel1" in received.data and received.mail_from == SENDER
    assert relay.to("friend@gmail.com") == []
    alice.open(f"/quarantine/{ref}")
    assert "friend@gmail.com" in alice.find("#release").text      # still held for the other
    assert events(gw, ref)[-1] == ("released", "alice", "agreed with the partner's security officer")


def test_a_deliver_tls_recipient_is_released_only_over_verified_tls(alice: Browser, gw: GatewayProcess,
                                                                    sinks: tuple[Sink, Sink]) -> None:
    relay, plain_secure = sinks
    ref = bulk(gw, ["records@nhs.net"])
    alice.open(f"/quarantine/{ref}")
    alice.fill("#release input[name=reason]", "data-sharing agreement DSA-12 covers it")
    alice.press("#release button")
    results = alice.find("#results").text
    assert "records@nhs.net" in results and "still held: 4" in results   # the secure hop has no TLS: 4xx
    time.sleep(0.5)
    assert plain_secure.messages == [] and relay.to("records@nhs.net") == []
    alice.open(f"/quarantine/{ref}")
    assert "held" in alice.find("#envelope").text


def test_delete_removes_it_and_records_who_and_why(alice: Browser, gw: GatewayProcess) -> None:
    ref = secret(gw, ["partner@delete.example.com"])
    alice.open(f"/quarantine/{ref}")
    alice.fill("#delete input[name=reason]", "=HYPERLINK(\"http://x\") sent in error, sender asked")
    alice.press("#delete button")
    assert "deleted" in alice.find("#results").text
    alice.open(f"/quarantine/{ref}")
    assert "deleted" in alice.find("#envelope").text and alice.all("#read") == []
    assert events(gw, ref)[-1] == ("deleted", "alice", "=HYPERLINK(\"http://x\") sent in error, sender asked")


def test_bulk_release_needs_a_reason_then_releases_every_ticked_message(alice: Browser, gw: GatewayProcess,
                                                                        sinks: tuple[Sink, Sink]) -> None:
    relay, _ = sinks
    refs = [secret(gw, [f"partner{n}@bulk.example.com"], body=f"MARKER-Bulk{n}") for n in range(2)]
    alice.open("/quarantine")
    for ref in refs:
        alice.find(f'#bulk input[value="{ref}"]').click()
    alice.fill("#bulk input[name=reason]", " ")
    alice.press('#bulk button[value="release"]')
    assert "Give a reason" in alice.find("#error").text
    assert all(events(gw, ref)[-1][0] == "held" for ref in refs)

    for ref in refs:
        alice.find(f'#bulk input[value="{ref}"]').click()
    alice.fill("#bulk input[name=reason]", "false positives: public plans")
    alice.press('#bulk button[value="release"]')
    results = alice.find("#results").text
    assert all(ref in results for ref in refs) and results.count("released: 250") == 2
    alice.shot("bulk-results")
    for n in range(2):
        wait_until(lambda n=n: relay.to(f"partner{n}@bulk.example.com"), timeout=15)
        assert b"MARKER-Bulk%d" % n in relay.to(f"partner{n}@bulk.example.com")[0].data
    assert all(events(gw, ref)[-1] == ("released", "alice", "false positives: public plans") for ref in refs)


# --- the audit log --------------------------------------------------------------------------------------

def test_the_audit_page_and_its_csv_list_who_did_what_and_why(alice: Browser, gw: GatewayProcess) -> None:
    ref = secret(gw, ["partner@audit.example.com"])
    alice.open(f"/quarantine/{ref}")
    alice.fill("#delete input[name=reason]", "-1+2 duplicate of another message")
    alice.press("#delete button")
    alice.open("/audit")
    rows = [r.text for r in alice.all("#audit tbody tr")]
    assert any(ref in r and "deleted" in r and "alice" in r and "-1+2 duplicate" in r for r in rows)
    assert any(ref in r and "held" in r and "gateway" in r for r in rows)
    alice.shot("audit")

    status, headers, body = request(gw, "GET", "/audit.csv", headers={"Cookie": alice.cookie()})
    assert status == 200 and headers["content-type"].startswith("text/csv")
    assert "attachment" in headers["content-disposition"] and headers["cache-control"] == "no-store"
    table = list(csv.reader(io.StringIO(body.lstrip("\ufeff"))))
    assert table[0] == ["time", "reference", "action", "actor", "reason", "detail"]
    mine = [row for row in table[1:] if row[1] == ref]
    assert [row[2] for row in mine] == ["held", "deleted"]
    assert mine[1][3:5] == ["alice", "'-1+2 duplicate of another message"]   # a formula is not run
    assert any(row[4].startswith("'=HYPERLINK") for row in table[1:])
    status, headers, _ = request(gw, "GET", "/audit.csv")
    assert status == 303 and headers["location"] == "/login"      # not signed in: nothing


# --- requests a browser would not make -----------------------------------------------------------------

def test_a_post_without_the_csrf_token_or_from_elsewhere_is_refused(alice: Browser, gw: GatewayProcess) -> None:
    ref = secret(gw, ["partner@csrf.example.com"])
    cookie = alice.cookie()
    token = csrf_of(gw, cookie)
    status, _, page = request(gw, "POST", f"/quarantine/{ref}/delete", "reason=forged", {"Cookie": cookie})
    assert status == 403 and "security token" in page
    status, _, _ = request(gw, "POST", f"/quarantine/{ref}/delete", f"reason=forged&csrf={token}x",
                           {"Cookie": cookie})
    assert status == 403
    status, _, _ = request(gw, "POST", f"/quarantine/{ref}/delete", f"reason=forged&csrf={token}",
                           {"Cookie": cookie, "Origin": "http://evil.example"})
    assert status == 403
    status, _, _ = request(gw, "POST", f"/quarantine/{ref}/delete", f"reason=forged&csrf={token}",
                           {"Cookie": cookie, "Sec-Fetch-Site": "cross-site"})
    assert status == 403
    status, _, _ = request(gw, "POST", f"/quarantine/{ref}/delete", f"reason=forged&csrf={token}")
    assert status == 403                                           # no session at all
    assert [e[0] for e in events(gw, ref)] == ["held"]
    status, _, _ = request(gw, "POST", "/login", f"user=alice&password={PASSWORD}")
    assert status == 403                                           # a sign-in form not from our page
    status, _, page = request(gw, "POST", f"/quarantine/{ref}/delete", f"reason=by+hand&csrf={token}",
                              {"Cookie": cookie, "Origin": f"http://127.0.0.1:{gw.admin_port}"})
    assert status == 200 and events(gw, ref)[-1] == ("deleted", "alice", "by hand")


def test_pages_carry_security_headers_and_metrics_stay_open(alice: Browser, gw: GatewayProcess) -> None:
    status, headers, _ = request(gw, "GET", "/quarantine", headers={"Cookie": alice.cookie()})
    assert status == 200
    assert headers["content-security-policy"].startswith("default-src 'self'")
    assert headers["x-frame-options"] == "DENY" and headers["referrer-policy"] == "no-referrer"
    assert headers["cache-control"] == "no-store"
    for path in ("/metrics", "/healthz", "/readyz"):
        assert request(gw, "GET", path)[0] == 200
    assert request(gw, "GET", "/quarantine")[0] == 303
    assert request(gw, "GET", "/quarantine/0123456789ABCDEF", headers={"Cookie": alice.cookie()})[0] == 404


def test_a_trusted_proxy_may_name_the_user(gw: GatewayProcess) -> None:
    status, headers, page = request(gw, "GET", "/quarantine", headers={"X-Remote-User": "carol"})
    assert status == 200 and 'id="reviewer">carol<' in page
    assert "dlp-review=" in headers.get("set-cookie", "") and "HttpOnly" in headers["set-cookie"]


def test_the_gateway_log_has_no_review_personal_data(gw: GatewayProcess) -> None:
    ui_lines = [line for line in gw.log_file.read_text().splitlines() if "admin" in line]
    assert any("alice signed in" in line for line in ui_lines)
    assert not [line for line in ui_lines if "@" in line or "example.com" in line or "reason" in line.lower()]
