"""Personal-account forwarding (rule 6) and automatic forwarding (rule 7): detectors/recipients/forwarding.py."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest
import yaml

from detectors.base import Category, Signal
from detectors.recipients.forwarding import ForwardingDetector
from gateway.message import Envelope, Message, SenderHistory, parse
from tests.conftest import make_message
from tests.support import scan_message

DATA = Path(__file__).parent / "data" / "recipients"
PERSONAL_DOMAINS = yaml.safe_load((Path(__file__).parent.parent / "config" / "default.yaml").read_text())[
    "organisation"]["personal_domains"]
SENDER = "jane.doe@council.gov.uk"


def rows(name: str) -> list[list[str]]:
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    return [line.split("\t") for line in lines if line.strip() and not line.startswith("#")]


def message_from(from_name: str, sender: str, rcpts: list[str], extra_headers: str = "",
                 history: SenderHistory | None = None, to: str | None = None) -> Message:
    """A message as the relay models it; `from_name` "-" for a From without a display name."""
    from email.header import Header

    shown = "" if from_name == "-" else Header(from_name, "utf-8").encode() + " "
    raw = (f"From: {shown}<{sender}>\r\nTo: {to or ', '.join(rcpts)}\r\nSubject: notes\r\n"
           f"Message-ID: <m1@council.gov.uk>\r\n{extra_headers}MIME-Version: 1.0\r\n"
           "Content-Type: text/plain\r\n\r\nThe notes from today.\r\n").encode()
    return parse(raw, Envelope(sender, tuple(rcpts)), history=history or SenderHistory())


def detect(message: Message, personal_domains: list[str] = PERSONAL_DOMAINS) -> list:
    return ForwardingDetector(personal_domains).detect(message)


# --- name likeness -----------------------------------------------------------------------

LIKENESS = rows("name_likeness.tsv")


@pytest.mark.parametrize("expected,from_name,sender,recipient,note", LIKENESS,
                         ids=[f"{r[0]}-{r[3]}-{r[1]}" for r in LIKENESS])
def test_personal_recipient_is_flagged_when_its_local_part_is_made_of_the_senders_name(
        expected: str, from_name: str, sender: str, recipient: str, note: str) -> None:
    findings = detect(message_from(from_name, sender, [recipient]))
    flagged = [f.recipients for f in findings if f.signal is Signal.NAME_LIKENESS]
    assert flagged == ([(recipient,)] if expected == "yes" else []), note


def test_the_table_holds_enough_pairs_each_way() -> None:
    assert sum(r[0] == "yes" for r in LIKENESS) >= 30
    assert sum(r[0] == "no" for r in LIKENESS) >= 30


def test_a_likeness_finding_names_the_recipient_and_a_reason_never_the_senders_name() -> None:
    [finding] = detect(message_from("Jane Doe", SENDER, ["janedoe84@gmail.com"]))
    assert finding.detector == "personal_forwarding"
    assert finding.category is Category.PERSONAL_FORWARDING
    assert finding.kind == "personal email account that looks like the sender's own"
    assert finding.location == "envelope"
    assert finding.signal is Signal.NAME_LIKENESS
    assert finding.recipients == ("janedoe84@gmail.com",)
    assert finding.detail == "matches the sender's name"
    assert "jane" not in repr(finding.to_json()).replace("janedoe84@gmail.com", "").lower()


def test_only_personal_domains_are_judged_for_likeness() -> None:
    message = message_from("Jane Doe", SENDER, ["jane.doe@supplier.example.com", "janedoe@gmail.com"])
    assert [f.recipients for f in detect(message)] == [("janedoe@gmail.com",)]


def test_personal_domains_take_wildcards_and_any_case() -> None:
    message = message_from("Jane Doe", SENDER, ["jane.doe@mail.webmail.example", "jane.doe@WEBMAIL.example"])
    findings = detect(message, ["*.webmail.example"])
    assert [f.recipients for f in findings] == [("jane.doe@mail.webmail.example",), ("jane.doe@WEBMAIL.example",)]


def test_a_registered_personal_address_counts_whatever_its_domain() -> None:
    history = SenderHistory(personal_addresses=("sunflower@doe-family.example.net", "mum77@gmail.com"))
    message = message_from("Jane Doe", SENDER, ["Sunflower@Doe-Family.example.net", "mum77@gmail.com",
                                                "bob@doe-family.example.net"], history=history)
    findings = detect(message)
    assert [(f.recipients, f.detail) for f in findings] == [
        (("Sunflower@Doe-Family.example.net",), "registered as the sender's personal address"),
        (("mum77@gmail.com",), "registered as the sender's personal address"),
    ]


def test_a_personal_recipient_shown_with_the_senders_full_name_is_flagged() -> None:
    rcpts = ["sunflower77@gmail.com", "kittens@gmail.com"]
    to = "Jane Doe (home) <sunflower77@gmail.com>, Mary Doe <kittens@gmail.com>"
    findings = detect(message_from("Jane Doe", SENDER, rcpts, to=to))
    assert [(f.recipients, f.detail) for f in findings] == [
        (("sunflower77@gmail.com",), "shown with the sender's name")]


def test_the_envelope_senders_local_part_is_read_and_from_is_the_fallback() -> None:
    raw = make_message(sender="jane.doe@council.gov.uk", to=["doejane@gmail.com"])
    by_envelope = parse(raw.replace(b"From: Jane Doe <", b"From: <"),
                        Envelope("jane.doe@council.gov.uk", ("doejane@gmail.com",)))
    by_from = parse(raw.replace(b"From: Jane Doe <", b"From: <"), Envelope("", ("doejane@gmail.com",)))
    other_envelope = parse(raw.replace(b"From: Jane Doe <", b"From: <"),
                           Envelope("m.patel@council.gov.uk", ("doejane@gmail.com",)))
    assert len(detect(by_envelope)) == 1
    assert len(detect(by_from)) == 1
    assert detect(other_envelope) == []


def test_each_recipient_is_judged_once() -> None:
    message = message_from("Jane Doe", SENDER, ["janedoe@gmail.com", "janedoe@gmail.com"])
    assert len(detect(message)) == 1


@pytest.mark.parametrize("raw", [
    b"To: janedoe@gmail.com\r\n\r\nno From at all\r\n",
    b"From: \r\nTo: janedoe@gmail.com\r\n\r\nempty From\r\n",
    b"From: \"\" <@council.gov.uk>\r\nTo: janedoe@gmail.com\r\n\r\nempty local part\r\n",
    b"From: =?utf-8?q?=E2=80=8B?= <x@council.gov.uk>\r\nTo: janedoe@gmail.com\r\n\r\ninvisible name\r\n",
    b"From: \xff\xfe <\xff@council.gov.uk>\r\nTo: janedoe@gmail.com\r\n\r\nbytes that are not text\r\n",
    b"From: " + b"a" * 5000 + b" <" + b"b." * 3000 + b"c@council.gov.uk>\r\nTo: x@gmail.com\r\n\r\nlong\r\n",
    b"\r\n\r\n",
])
def test_odd_senders_never_raise(raw: bytes) -> None:
    for rcpt in ("janedoe@gmail.com", "@gmail.com", "", "+@gmail.com", "...@gmail.com", "x" * 300 + "@gmail.com"):
        for mail_from in ("", "<>", "@", "x@council.gov.uk"):
            detect(parse(raw, Envelope(mail_from, (rcpt,))))


def test_a_sender_with_many_similar_names_is_still_fast() -> None:
    from_name = "Aa Aab Aabb Aaab Aaaa Abab Baba Aaba"
    message = message_from(from_name, "aa.aab@council.gov.uk", ["aab" * 20 + "x@gmail.com"])
    started = time.perf_counter()
    assert detect(message) == []
    assert time.perf_counter() - started < 0.5


# --- automatic forwarding --------------------------------------------------------------

HEADERS = rows("forwarding_headers.tsv")


@pytest.mark.parametrize("expected,headers,note", HEADERS, ids=[r[1][:60] for r in HEADERS])
def test_headers_that_show_automatic_forwarding(expected: str, headers: str, note: str) -> None:
    extra = "".join(h.rstrip(" ") + "\r\n" for h in headers.split(" | "))
    findings = detect(message_from("Jane Doe", SENDER, ["partner@supplier.example.com"], extra_headers=extra))
    forwarded = [f for f in findings if f.signal is Signal.AUTO_FORWARDED]
    assert [f.location for f in forwarded] == ([] if expected == "-" else [expected]), note


def test_an_auto_forwarded_finding_is_about_the_whole_message() -> None:
    extra = "Auto-Submitted: auto-forwarded\r\nResent-From: <jane.doe@council.gov.uk>\r\nX-Forwarded-To: x@gmail.com\r\n"
    [finding] = detect(message_from("Jane Doe", SENDER, ["partner@supplier.example.com"], extra_headers=extra))
    assert finding.detector == "personal_forwarding"
    assert finding.category is Category.PERSONAL_FORWARDING
    assert finding.kind == "automatically forwarded message"
    assert finding.location == "header:Auto-Submitted"
    assert finding.signal is Signal.AUTO_FORWARDED
    assert finding.recipients == ()
    assert "Resent-From" in finding.detail and "X-Forwarded-To" in finding.detail
    assert "x@gmail.com" not in finding.detail


def test_auto_forwarding_to_a_look_alike_personal_account_gives_both_findings() -> None:
    extra = "X-MS-Exchange-Inbox-Rules-Loop: jane.doe@council.gov.uk\r\n"
    findings = detect(message_from("Jane Doe", SENDER, ["janedoe84@gmail.com"], extra_headers=extra))
    assert sorted(f.signal.value for f in findings) == ["auto_forwarded", "name_likeness"]


# --- end to end: `dlp-gateway scan` ---------------------------------------------------------

@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text("organisation: {internal_domains: [council.gov.uk], trusted_domains: [nhs.net]}\n")
    return path


def scan(tmp_path: Path, config_file: Path, raw: bytes, *rcpts: str, sender: str = SENDER) -> dict:
    args = ["--config", str(config_file), "--sender", sender]
    for rcpt in rcpts:
        args += ["--rcpt", rcpt]
    return scan_message(tmp_path, raw, *args)


def by_address(record: dict) -> dict[str, dict]:
    return {r["address"]: r for r in record["recipients"]}


ATTACHMENT = [("notes.txt", b"Agenda for Thursday: budget, staffing, car park.\n", "text/plain")]


def test_scan_rejects_mail_with_an_attachment_to_the_senders_own_gmail(tmp_path: Path, config_file: Path) -> None:
    raw = make_message(sender=SENDER, to=["janedoe84@gmail.com", "partner@supplier.example.com"],
                       body="Notes for the weekend.", attachments=ATTACHMENT)
    record = scan(tmp_path, config_file, raw, "janedoe84@gmail.com", "partner@supplier.example.com")
    got = by_address(record)
    assert got["janedoe84@gmail.com"]["action"] == "reject"
    assert "personal-account-forwarding" in got["janedoe84@gmail.com"]["rules"]
    assert got["partner@supplier.example.com"]["action"] == "deliver"
    assert record["verdict"] == "reject"
    assert any(f["category"] == "personal_forwarding" and f.get("recipients") == ["janedoe84@gmail.com"]
               for f in record["findings"])


def test_scan_delivers_plain_chat_to_the_senders_own_gmail(tmp_path: Path, config_file: Path) -> None:
    raw = make_message(sender=SENDER, to=["janedoe84@gmail.com"], body="Running late, home by six.")
    record = scan(tmp_path, config_file, raw, "janedoe84@gmail.com")
    assert record["recipients"][0]["action"] == "deliver"


def test_scan_delivers_an_attachment_to_someone_elses_gmail(tmp_path: Path, config_file: Path) -> None:
    raw = make_message(sender=SENDER, to=["john.smith@gmail.com"], body="As promised.", attachments=ATTACHMENT)
    record = scan(tmp_path, config_file, raw, "john.smith@gmail.com")
    assert record["recipients"][0]["action"] == "deliver"
    assert "personal-account-forwarding" not in record["recipients"][0]["rules"]


def test_scan_rejects_auto_forwarded_mail_to_outside_recipients_and_delivers_it_inside(
        tmp_path: Path, config_file: Path) -> None:
    raw = make_message(sender=SENDER, to=["partner@supplier.example.com"], body="The rota.",
                       headers={"Auto-Submitted": "auto-forwarded"})
    record = scan(tmp_path, config_file, raw, "partner@supplier.example.com", "someone@nhs.net",
                  "colleague@council.gov.uk")
    got = by_address(record)
    for outside in ("partner@supplier.example.com", "someone@nhs.net"):
        assert got[outside]["action"] == "reject"
        assert "auto-forwarded" in got[outside]["rules"]
    assert got["colleague@council.gov.uk"]["action"] == "deliver"
    assert record["verdict"] == "reject"


def test_scan_applies_both_forwarding_rules_to_an_exchange_rule_forward_to_gmail(
        tmp_path: Path, config_file: Path) -> None:
    raw = make_message(sender=SENDER, to=["sunflower@gmail.com"], body="FW: the rota", attachments=ATTACHMENT,
                       headers={"X-MS-Exchange-Inbox-Rules-Loop": SENDER,
                                "X-MS-Exchange-Generated-Message-Source": "Mailbox Rules Agent"})
    record = scan(tmp_path, config_file, raw, "sunflower@gmail.com")
    [rcpt] = record["recipients"]
    assert rcpt["action"] == "reject"
    assert {"auto-forwarded", "personal-account-forwarding"} <= set(rcpt["rules"])


def test_scan_delivers_an_out_of_office_reply_made_by_an_inbox_rule(tmp_path: Path, config_file: Path) -> None:
    raw = make_message(sender=SENDER, to=["partner@supplier.example.com"], subject="Automatic reply: rota",
                       body="I am out of the office until Monday.",
                       headers={"In-Reply-To": "<orig@supplier.example.com>",
                                "X-MS-Exchange-Parent-Message-Id": "<orig@supplier.example.com>",
                                "Auto-Submitted": "auto-generated",
                                "X-MS-Exchange-Inbox-Rules-Loop": SENDER,
                                "X-MS-Exchange-Generated-Message-Source": "Mailbox Rules Agent"})
    record = scan(tmp_path, config_file, raw, "partner@supplier.example.com")
    assert record["recipients"][0]["action"] == "deliver"


def _html_with_logo(attach_file: bool) -> bytes:
    from email.message import EmailMessage
    from email.policy import SMTP

    msg = EmailMessage()
    msg["From"] = f"Jane Doe <{SENDER}>"
    msg["To"] = "janedoe84@gmail.com"
    msg["Subject"] = "weekend"
    msg.set_content("Running late, home by six.")
    msg.add_alternative('<p>Running late, home by six.</p><img src="cid:logo001">', subtype="html")
    png = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
    msg.get_payload()[1].add_related(png, "image", "png", cid="<logo001>", filename="image001.png")
    if attach_file:
        msg.add_attachment(*ATTACHMENT[0][1:2], maintype="text", subtype="plain", filename="notes.txt")
    return msg.as_bytes(policy=SMTP)


def test_a_signature_logo_in_the_html_is_not_an_attachment(tmp_path: Path, config_file: Path) -> None:
    record = scan(tmp_path, config_file, _html_with_logo(attach_file=False), "janedoe84@gmail.com")
    assert record["recipients"][0]["action"] == "deliver"
    record = scan(tmp_path, config_file, _html_with_logo(attach_file=True), "janedoe84@gmail.com")
    assert record["recipients"][0]["action"] == "reject"
    assert "personal-account-forwarding" in record["recipients"][0]["rules"]
