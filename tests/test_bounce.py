"""What the sender is told, and what delivered mail carries: bounces (RFC 3464 DSNs), held
notices, release and delete notices, and the X-DLP-* headers.

Relay behaviour is tested end to end (real SMTP into a gateway process, a real sink);
the wording of explanations for facts no shipped detector establishes end to end
(lookalike domains, first-time recipients) is tested on a constructed Inspection.
"""

from __future__ import annotations

import email
import email.policy
import html
import re
import shutil
import smtplib
import subprocess
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pytest

from detectors.base import Category, Finding, Signal, Strength
from gateway.actions import without_dlp_headers
from gateway.actions.bounce import Refusal, build_bounce, should_bounce
from gateway.actions.notices import DEFAULT_TEMPLATES, TEMPLATE_FILES, build_held_notice, build_outcome_notice
from gateway.actions.quarantine import HeldMessage, HeldRecipient
from gateway.config import Config, ConfigError, load_config
from gateway.decision import Action, Decision, RecipientClass, RecipientDecision
from gateway.pipeline import Inspection
from tests.conftest import SENDER, make_message
from tests.support import BIN, GatewayProcess, Sink, smtp_route, wait_until

NINO = "AB 12 34 56 C"
NINO_BODY = f"Hi,\n\nHer National Insurance number is {NINO}, as discussed.\n\nJane"
SECRET_SUBJECT = "SECRET: operation details"
POLICY_NAME = "Anytown Council's email and information security policy"


def referrals_csv(people: int = 27) -> bytes:
    """A spreadsheet of `people` clients, each with a National Insurance number HMRC could issue."""
    return "".join(f"Client {n},AB{100000 + n:06d}C\n" for n in range(people)).encode()


def parsed(data: bytes) -> EmailMessage:
    return email.message_from_bytes(data, policy=email.policy.default)  # type: ignore[return-value]


def text_and_html(message: EmailMessage) -> tuple[str, str]:
    return message.get_body(("plain",)).get_content(), message.get_body(("html",)).get_content()


def flat(text: str) -> str:
    """Text with its line wrapping undone, to look for a sentence the template wrapped."""
    return " ".join(text.split())


def shown(html_text: str) -> str:
    """What a reader of the HTML part sees, as flat text."""
    return flat(html.unescape(re.sub(r"<[^>]+>", "", html_text)))


def every_decoded_part(message: EmailMessage) -> str:
    out = []
    for part in message.walk():
        if not part.is_multipart() and part.get_content_type() != "message/delivery-status":
            out.append(part.get_payload(decode=True).decode("utf-8", "replace"))
    return "\n".join(out)


@pytest.fixture
def settings(sink: Sink) -> dict[str, object]:
    return {"routes": {"relay": smtp_route(sink), "secure": smtp_route(sink)},
            "organisation": {"name": "Anytown Council"},
            "bounce": {"policy_name": POLICY_NAME, "policy_url": "https://intranet.example.gov.uk/email-policy",
                       "contact": "the IT service desk"}}


@pytest.fixture
def gw(gateway_factory, settings: dict[str, object]) -> GatewayProcess:
    return gateway_factory(settings)


def from_gateway(sink: Sink) -> list[EmailMessage]:
    """What the gateway sent to the sender itself (bounces and notices), parsed."""
    return [parsed(m.data) for m in sink.bounces_to(SENDER)]


# --- bounces ------------------------------------------------------------------------------

def test_a_refusal_bounce_is_a_dsn_with_readable_parts_and_only_the_original_headers(
    gw: GatewayProcess, sink: Sink
) -> None:
    raw = make_message(body=NINO_BODY, to=["someone@gmail.com"],
                       attachments=[("referrals.csv", referrals_csv(), "text/csv")])
    with gw.smtp() as client:
        client.sendmail(SENDER, ["someone@gmail.com"], raw)
    (received,) = sink.wait_for(1)
    assert received.mail_from in ("", "<>") and received.rcpt_tos == [SENDER]
    bounce = parsed(received.data)
    assert bounce.get_content_type() == "multipart/report"
    assert bounce.get_param("report-type") == "delivery-status"
    assert bounce["From"].addresses[0].addr_spec == "postmaster@council.example.gov.uk"
    assert bounce["To"].addresses[0].addr_spec == SENDER
    human, status, headers = bounce.iter_parts()
    assert human.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in human.iter_parts()] == ["text/plain", "text/html"]
    assert status.get_content_type() == "message/delivery-status"
    assert b"Final-Recipient: rfc822; someone@gmail.com" in received.data and b"Action: failed" in received.data
    assert headers.get_content_type() == "text/rfc822-headers"
    original_head = raw.split(b"\r\n\r\n", 1)[0]
    assert original_head in received.data
    # Never the body, the attachment or the data itself, in any part or encoding.
    everything = received.data.decode("utf-8", "replace") + every_decoded_part(bounce)
    assert "as discussed" not in everything and "Client 3" not in everything
    for value in (NINO, NINO.replace(" ", ""), "AB100003C"):
        assert value not in everything


def test_the_bounce_says_what_was_found_where_which_rule_and_what_to_do(gw: GatewayProcess, sink: Sink) -> None:
    raw = make_message(body=NINO_BODY, to=["someone@gmail.com"],
                       attachments=[("referrals.csv", referrals_csv(), "text/csv")])
    with gw.smtp() as client:
        client.sendmail(SENDER, ["someone@gmail.com"], raw)
    sink.wait_for(1)
    (bounce,) = from_gateway(sink)
    text, html_part = text_and_html(bounce)
    rule = next(r for r in load_config().policy.rules if r.name == "personal-data")
    (record,) = gw.audit()
    for words in (flat(text), shown(html_part)):
        assert "someone@gmail.com (personal email account)" in words
        assert "attachment 'referrals.csv': 27 National Insurance numbers" in words
        assert "the message text: 1 National Insurance number" in words
        assert rule.title in words and flat(rule.guidance) in words
        assert record["reference"] in words
        assert POLICY_NAME in words and "the IT service desk" in words
    assert 'href="https://intranet.example.gov.uk/email-policy"' in html_part
    assert bounce["X-DLP-Reference"] == record["reference"]


def test_blocked_and_held_recipients_of_one_message_are_told_in_one_bounce(
    gw: GatewayProcess, sink: Sink
) -> None:
    # 27 people's NI numbers: refused to a personal account, held for a secure partner (bulk).
    raw = make_message(body="Referrals attached.", to=["someone@gmail.com", "gp.practice@nhs.net"],
                       attachments=[("referrals.csv", referrals_csv(), "text/csv")])
    with gw.smtp() as client:
        client.sendmail(SENDER, ["someone@gmail.com", "gp.practice@nhs.net"], raw)
    sink.wait_for(1)
    time.sleep(0.5)  # long enough for a second message to the sender, had one been sent
    (bounce,) = from_gateway(sink)
    assert bounce.get_content_type() == "multipart/report"
    text = flat(text_and_html(bounce)[0])
    blocked, held = text.split("HELD FOR REVIEW ---", 1)
    assert "someone@gmail.com" in blocked and "gp.practice@nhs.net" not in blocked
    assert "gp.practice@nhs.net (secure partner address)" in held
    assert "Why: personal data about many people" in held and "security team will review" in held
    assert b"Final-Recipient: rfc822; gp.practice@nhs.net" not in sink.messages[0].data  # held is not failed


def test_html_part_escapes_what_came_from_the_message(gw: GatewayProcess, sink: Sink) -> None:
    raw = make_message(subject='Referral <script>alert("x")</script><img src=x onerror=alert(1)>',
                       body=NINO_BODY, to=["someone@gmail.com"])
    with gw.smtp() as client:
        client.sendmail(SENDER, ["someone@gmail.com"], raw)
    sink.wait_for(1)
    (bounce,) = from_gateway(sink)
    text, html_part = text_and_html(bounce)
    assert "<script" not in html_part and "<img" not in html_part
    assert "&lt;script&gt;" in html_part
    assert '<script>alert("x")</script>' in text  # plain text shows it as the sender wrote it


def test_no_bounce_to_the_null_sender_or_about_automatic_mail(gw: GatewayProcess, sink: Sink) -> None:
    auto = make_message(body=NINO_BODY, to=["someone@gmail.com"], headers={"Auto-Submitted": "auto-generated"})
    with gw.smtp() as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail(SENDER, ["someone@gmail.com"], auto)
        assert refused.value.smtp_code == 550
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("<>", ["someone@gmail.com"], make_message(body=NINO_BODY, to=["someone@gmail.com"]))
        assert refused.value.smtp_code == 550
    assert sink.messages == []


def test_should_bounce_refuses_null_and_automatic_senders_only() -> None:
    assert should_bounce(SENDER, make_message())
    assert should_bounce(SENDER, make_message(headers={"Auto-Submitted": "no"}))
    assert not should_bounce("", make_message())
    assert not should_bounce(SENDER, make_message(headers={"Auto-Submitted": "auto-replied"}))


# --- held notices -------------------------------------------------------------------------

def test_a_held_message_gets_one_notice_from_the_postmaster_that_cannot_loop(
    gw: GatewayProcess, sink: Sink
) -> None:
    raw = make_message(subject=SECRET_SUBJECT, to=["partner@supplier.example.com"])
    with gw.smtp() as client:
        assert client.sendmail(SENDER, ["partner@supplier.example.com"], raw) == {}
    sink.wait_for(1)
    time.sleep(0.5)
    (notice,) = from_gateway(sink)
    (record,) = gw.audit()
    assert notice.get_content_type() == "multipart/alternative"  # a notice, not a DSN
    assert notice["Auto-Submitted"] == "auto-generated"
    assert notice["From"].addresses[0].addr_spec == "postmaster@council.example.gov.uk"
    assert notice["To"].addresses[0].addr_spec == SENDER
    assert notice["In-Reply-To"] == parsed(raw)["Message-ID"]
    assert record["reference"] in notice["Subject"]
    text, html_part = text_and_html(notice)
    rule = next(r for r in load_config().policy.rules if r.name == "secret-marking")
    for words in (flat(text), shown(html_part)):
        assert "is held for review" in words and "partner@supplier.example.com (external address)" in words
        assert rule.title in words and flat(rule.guidance) in words
        assert "the subject line: 1 SECRET protective marking" in words
        assert "security team will review" in words and record["reference"] in words
    assert "The minutes of Tuesday" not in every_decoded_part(notice)


def test_no_held_notice_when_it_is_turned_off_or_the_mail_is_automatic(
    gateway_factory, settings: dict[str, object], sink: Sink
) -> None:
    raw = make_message(subject=SECRET_SUBJECT, to=["partner@supplier.example.com"])
    gw = gateway_factory(settings)
    with gw.smtp() as client:
        assert client.sendmail("<>", ["partner@supplier.example.com"], raw) == {}
        automatic = make_message(subject=SECRET_SUBJECT, headers={"Auto-Submitted": "auto-generated"})
        assert client.sendmail(SENDER, ["partner@supplier.example.com"], automatic) == {}
    quiet = gateway_factory({**settings, "bounce": {**settings["bounce"], "notify_held": False}})  # type: ignore[dict-item]
    with quiet.smtp() as client:
        assert client.sendmail(SENDER, ["partner@supplier.example.com"], raw) == {}
    assert wait_until(lambda: len(gw.audit()) == 2 and len(quiet.audit()) == 1)
    time.sleep(0.5)
    assert sink.messages == []


# --- verdict headers ----------------------------------------------------------------------

def test_delivered_mail_carries_the_verdict_and_reference(gw: GatewayProcess, sink: Sink) -> None:
    with gw.smtp() as client:
        client.sendmail(SENDER, ["partner@supplier.example.com"], make_message())
    (received,) = sink.wait_for(1)
    (record,) = gw.audit()
    assert received.message.get_all("X-DLP-Verdict") == ["deliver"]
    assert received.message.get_all("X-DLP-Reference") == [record["reference"]]
    assert received.message["X-DLP-Gateway"] is None


def test_verdict_headers_can_be_turned_off(gateway_factory, settings: dict[str, object], sink: Sink) -> None:
    gw = gateway_factory({**settings, "headers": {"verdict": False, "reference": False}})
    with gw.smtp() as client:
        client.sendmail(SENDER, ["partner@supplier.example.com"], make_message())
    (received,) = sink.wait_for(1)
    assert not [k for k in received.message.keys() if k.lower().startswith("x-dlp-") and k != "X-DLP-Disclaimer"]


def test_strip_for_external_sends_internal_recipients_a_copy_that_keeps_the_headers(
    gateway_factory, settings: dict[str, object], sink: Sink
) -> None:
    gw = gateway_factory({**settings, "headers": {"strip_for_external": True}})
    rcpts = ["colleague@council.example.gov.uk", "partner@supplier.example.com"]
    with gw.smtp() as client:
        assert client.sendmail(SENDER, rcpts, make_message(to=rcpts)) == {}
    copies = {tuple(m.rcpt_tos): m.message for m in sink.wait_for(2)}
    assert set(copies) == {("colleague@council.example.gov.uk",), ("partner@supplier.example.com",)}
    inside, outside = copies[("colleague@council.example.gov.uk",)], copies[("partner@supplier.example.com",)]
    assert inside["X-DLP-Verdict"] == "deliver" and inside["X-DLP-Reference"]
    assert outside["X-DLP-Verdict"] is None and outside["X-DLP-Reference"] is None
    assert outside["Received"]  # the trace header stays


def test_a_verdict_forged_by_the_client_is_removed_and_dkim_still_verifies(
    gateway_factory, settings: dict[str, object], sink: Sink, tmp_path: Path
) -> None:
    import dkim

    keygen = subprocess.run([str(BIN / "dlp-gateway"), "dkim-keygen", "council.example.gov.uk", "s2026",
                             "--directory", str(tmp_path / "keys")], capture_output=True, text=True, timeout=60)
    assert keygen.returncode == 0, keygen.stderr
    (key_file,) = (tmp_path / "keys").glob("*.key")
    (line,) = [line for line in keygen.stdout.splitlines() if " IN TXT " in line]
    txt = "".join(re.findall(r'"([^"]*)"', line)).encode()
    gw = gateway_factory({**settings, "dkim": {"domains": {"council.example.gov.uk": {
        "selector": "s2026", "key_file": str(key_file)}}}})
    forged = (b"X-DLP-Verdict: deliver\r\nx-dlp-reference: NOT-OURS\r\n"
              b"X-DLP-Disclaimer: added\r\nX-Dlp-Note: folded\r\n\tover two lines\r\n") + make_message()
    with gw.smtp() as client:
        client.sendmail(SENDER, ["partner@supplier.example.com"], forged)
    (received,) = sink.wait_for(1)
    (record,) = gw.audit()
    message = received.message
    assert message.get_all("X-DLP-Verdict") == ["deliver"]
    assert message.get_all("X-DLP-Reference") == [record["reference"]]
    assert b"NOT-OURS" not in received.data and b"over two lines" not in received.data
    # The forged disclaimer marker no longer keeps the disclaimer off.
    assert "is monitored and recorded" in message.get_body(("plain",)).get_content()
    def dns(name: bytes, timeout: int = 5) -> bytes:
        return txt if name == b"s2026._domainkey.council.example.gov.uk." else b""

    assert dkim.verify(received.data, dnsfunc=dns)


def test_without_dlp_headers_removes_whole_fields_and_leaves_every_other_byte() -> None:
    body = b"X-DLP-Verdict: this line is in the body\r\n"
    raw = (b"Subject: s\r\nX-DLP-Verdict: deliver\r\n continued\r\nX-DLP-Reference:x\r\nTo: a@b.example\r\n"
           b"X-DLPish: not ours\r\n\r\n" + body)
    assert without_dlp_headers(raw) == b"Subject: s\r\nTo: a@b.example\r\nX-DLPish: not ours\r\n\r\n" + body
    plain = make_message()
    assert without_dlp_headers(plain) is plain


# --- explanations (constructed inspections) -----------------------------------------------

@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Config:
    path = tmp_path_factory.mktemp("config") / "c.yaml"
    path.write_text("organisation: {name: Anytown Council, internal_domains: [council.example.gov.uk],"
                    " trusted_domains: [nhs.net]}\nbounce: {postmaster: it-security@council.example.gov.uk}\n")
    return load_config(path)


def inspection(findings: list[Finding], *recipients: RecipientDecision) -> Inspection:
    return Inspection("REF123", "<m1@council.example.gov.uk>", 100, tuple(findings),
                      Decision(tuple(recipients), False), 0.0)


def decided(address: str, rclass: RecipientClass, action: Action, *rules: str) -> RecipientDecision:
    return RecipientDecision(address, rclass, action, rules, "relay")


NINO_FINDING = Finding("uk_nino", Category.PERSONAL_DATA, "National Insurance number", "body", 1,
                       strength=Strength.STRONG)


def test_a_lookalike_recipient_is_asked_did_you_mean_and_others_do_not_see_its_findings(config: Config) -> None:
    lookalike = Finding("lookalike", Category.MISADDRESSED, "recipient domain like a trusted one", "envelope",
                        signal=Signal.LOOKALIKE, recipients=("dr.jones@nhs.net.co",), detail="nhs.net")
    first = Finding("first_time", Category.MISADDRESSED, "outside address the sender has not written to before",
                    "envelope", signal=Signal.FIRST_TIME, recipients=("someone@gmail.com",))
    held = [decided("dr.jones@nhs.net.co", RecipientClass.EXTERNAL, Action.QUARANTINE, "lookalike-domain"),
            decided("partner@supplier.example.com", RecipientClass.EXTERNAL, Action.QUARANTINE, "lookalike-domain")]
    rejected = decided("someone@gmail.com", RecipientClass.PERSONAL, Action.REJECT, "personal-data",
                       "first-time-recipient")
    found = inspection([NINO_FINDING, lookalike, first], *held, rejected)
    raw = make_message(body=NINO_BODY)
    text = flat(text_and_html(parsed(build_held_notice(config, found, SENDER, raw, held)))[0])
    assert "Did you mean dr.jones@nhs.net?" in text
    assert text.count("Did you mean") == 1  # not for partner@supplier.example.com
    assert "have not sent email to this address before" not in text  # that finding is about someone else
    bounce = parsed(build_bounce(config, found, SENDER, raw,
                                 [Refusal(rejected.address, "5.7.1", "550 5.7.1 refused", rejected)]))
    text = flat(text_and_html(bounce)[0])
    assert "You have not sent email to this address before" in text
    assert "Did you mean" not in text
    # The rule that refused leads; the one that only noted the new address is mentioned after it.
    assert text.index("Why: personal data about an identifiable person") < text.index(
        "Also noted: sensitive message to an address you have not written to before")
    assert "What to do instead: This is the first message" not in text


def test_recipients_with_the_same_reasons_are_explained_once(config: Config) -> None:
    rejected = [decided(f"p{n}@gmail.com", RecipientClass.PERSONAL, Action.REJECT, "personal-data") for n in range(5)]
    found = inspection([NINO_FINDING], *rejected)
    bounce = build_bounce(config, found, SENDER, make_message(),
                          [Refusal(r.address, "5.7.1", "550 5.7.1 refused", r) for r in rejected])
    text = text_and_html(parsed(bounce))[0]
    assert text.count("Why: personal data about an identifiable person") == 1
    assert all(f"p{n}@gmail.com (personal email account)" in text for n in range(5))


@pytest.mark.parametrize("rule_name", [r.name for r in load_config().policy.rules])
def test_every_shipped_rule_is_explained_with_its_title_and_guidance(config: Config, rule_name: str) -> None:
    rule = next(r for r in config.policy.rules if r.name == rule_name)
    rclass, action = max(rule.actions.items(), key=lambda item: item[1].strictness)
    recipient = decided("x@supplier.example.com", rclass, action, rule.name)
    found = inspection([NINO_FINDING], recipient)
    if action is Action.REJECT:
        data = build_bounce(config, found, SENDER, make_message(),
                            [Refusal(recipient.address, "5.7.1", "550 5.7.1 refused", recipient)])
    else:
        data = build_held_notice(config, found, SENDER, make_message(), [recipient])
    text, html_part = text_and_html(parsed(data))
    for words in (flat(text), shown(html_part)):
        assert rule.title in words and flat(rule.guidance) in words


def test_the_subject_is_not_repeated_when_personal_data_was_found_in_it(config: Config) -> None:
    in_subject = Finding("uk_nino", Category.PERSONAL_DATA, "National Insurance number", "subject", 1)
    recipient = decided("someone@gmail.com", RecipientClass.PERSONAL, Action.REJECT, "personal-data")
    raw = make_message(subject=f"Client {NINO}")
    bounce = parsed(build_bounce(config, inspection([in_subject], recipient), SENDER, raw,
                                 [Refusal(recipient.address, "5.7.1", "550 5.7.1 refused", recipient)]))
    human = bounce.get_payload()[0]
    assert NINO not in every_decoded_part(human)
    assert "the subject line: 1 National Insurance number" in flat(text_and_html(bounce)[0])


# --- release and delete notices -----------------------------------------------------------

def held_message() -> HeldMessage:
    return HeldMessage(
        id="REF456", created_at=1741083300.0, sender=SENDER, message_id="<m2@council.example.gov.uk>", size=2048,
        mail_options=(), rules=("bulk-personal-data",),
        findings=({"detector": "uk_nino", "category": "personal_data", "kind": "National Insurance number",
                   "location": "attachment:referrals.xlsx", "count": 27},),
        status="held", storage_key="REF456.eml",
        recipients=(HeldRecipient("gp.practice@nhs.net", "trusted", ("bulk-personal-data",), "secure", "held"),
                    HeldRecipient("partner@supplier.example.com", "external", ("bulk-personal-data",), "relay",
                                  "held")),
    )


@pytest.mark.parametrize("outcome,words", [("released", "has released it"), ("deleted", "has deleted it")])
def test_release_and_delete_notices_say_what_happened_for_whom_and_why(
    config: Config, outcome: str, words: str
) -> None:
    reason = "Checked with <b>the sender</b>"
    notice = parsed(build_outcome_notice(config, held_message(), outcome, ["gp.practice@nhs.net"], reason))
    assert notice.get_content_type() == "multipart/alternative"
    assert notice["Auto-Submitted"] == "auto-generated" and notice["X-DLP-Reference"] == "REF456"
    assert notice["To"].addresses[0].addr_spec == SENDER
    assert notice["In-Reply-To"] == "<m2@council.example.gov.uk>"
    text, html_part = text_and_html(notice)
    text = flat(text)
    assert words in text and "REF456" in text and "4 March 2025" in text
    assert "gp.practice@nhs.net" in text and "partner@supplier.example.com" not in text
    assert f"Reason given by the security team: {reason}" in text
    assert "attachment 'referrals.xlsx': 27 National Insurance numbers" in text
    assert "personal data about many people" in text
    assert "<b>the sender</b>" not in html_part and "&lt;b&gt;the sender&lt;/b&gt;" in html_part
    assert f"Reason given by the security team: {reason}" in shown(html_part)


def test_an_unknown_outcome_is_a_programming_error(config: Config) -> None:
    with pytest.raises(ValueError, match="released, deleted"):
        build_outcome_notice(config, held_message(), "lost", [SENDER], "")


# --- templates ----------------------------------------------------------------------------

@pytest.fixture
def own_templates(tmp_path: Path) -> Iterator[Path]:
    directory = tmp_path / "templates"
    directory.mkdir()
    for name in DEFAULT_TEMPLATES.glob("*.j2"):
        shutil.copy(name, directory / name.name)
    yield directory


def config_with_templates(tmp_path: Path, directory: Path) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(f"bounce: {{templates: '{directory}'}}\n")
    return path


def test_an_operator_may_use_their_own_templates(tmp_path: Path, own_templates: Path) -> None:
    text = (own_templates / "bounce.txt.j2").read_text()
    (own_templates / "bounce.txt.j2").write_text("Call the Anytown service desk on 01632 960000.\n" + text)
    config = load_config(config_with_templates(tmp_path, own_templates))
    recipient = decided("someone@gmail.com", RecipientClass.PERSONAL, Action.REJECT, "personal-data")
    bounce = build_bounce(config, inspection([NINO_FINDING], recipient), SENDER, make_message(),
                          [Refusal(recipient.address, "5.7.1", "550 5.7.1 refused", recipient)])
    assert text_and_html(parsed(bounce))[0].startswith("Call the Anytown service desk")


@pytest.mark.parametrize("name,content,expected", [
    ("bounce.html.j2", "<p>{% if blocked %}unclosed</p>\n", "bounce.html.j2, line"),
    ("notice-held.txt.j2", "Held: {{ refrence }}\n", "'refrence' is undefined"),
    ("notice-outcome.txt.j2", "{% include 'nowhere.j2' %}\n", "nowhere.j2"),
    ("notice-held.html.j2", None, "notice-held.html.j2 is missing"),
])
def test_a_broken_or_missing_template_is_a_configuration_error_naming_key_and_file(
    tmp_path: Path, own_templates: Path, name: str, content: str | None, expected: str
) -> None:
    if content is None:
        (own_templates / name).unlink()
    else:
        (own_templates / name).write_text(content)
    path = config_with_templates(tmp_path, own_templates)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    (problem,) = error.value.problems
    assert problem.startswith(f"{path}: bounce.templates: ") and expected in problem
    if content is not None:
        assert str(own_templates) in problem
    checked = subprocess.run([str(BIN / "dlp-gateway"), "check-config", "--config", str(path)],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode != 0 and "bounce.templates" in checked.stderr + checked.stdout
    assert "Traceback" not in checked.stderr


def test_the_shipped_templates_are_all_there() -> None:
    assert all((DEFAULT_TEMPLATES / name).is_file() for name in TEMPLATE_FILES)
