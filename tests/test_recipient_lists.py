"""Who a message is addressed to: outside addresses exposed in To/Cc (rule 9,
detectors/recipients/exposed.py) and a greeting that names someone else (rule
`greeting-mismatch`, detectors/recipients/greeting.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from detectors.base import Category, Signal
from detectors.recipients.exposed import ExposedRecipientsDetector
from detectors.recipients.greeting import GreetingDetector
from gateway.message import Correspondent, Envelope, Message, SenderHistory, parse
from tests.conftest import make_message
from tests.support import scan_message

DATA = Path(__file__).parent / "data" / "recipients"
INTERNAL = ["council.gov.uk", "*.council.gov.uk"]
SENDER = "jane.doe@council.gov.uk"


def rows(name: str) -> list[list[str]]:
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    return [line.split("\t") for line in lines if line.strip() and not line.startswith("#")]


def raw_with_headers(headers: str, body: str = "The minutes are below.") -> bytes:
    """A message whose address headers are written exactly as given (malformed ones too)."""
    lines = "".join(h + "\r\n" for h in headers.split(" | ")) if headers else ""
    return (f"From: Jane Doe <{SENDER}>\r\n{lines}Subject: minutes\r\nMessage-ID: <m1@council.gov.uk>\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\n{body}\r\n").encode()


# --- exposed recipient lists ------------------------------------------------------------

EXPOSED = rows("exposed.tsv")


@pytest.mark.parametrize("expected,threshold,headers,note", EXPOSED, ids=[r[3] for r in EXPOSED])
def test_outside_addresses_visible_in_to_and_cc_are_counted(expected: str, threshold: str, headers: str,
                                                             note: str) -> None:
    message = parse(raw_with_headers(headers), Envelope(SENDER, ("a@one.example.com",)))
    findings = ExposedRecipientsDetector(INTERNAL, int(threshold)).detect(message)
    assert [f.count for f in findings] == ([] if expected == "-" else [int(expected)]), note


def test_an_exposed_list_finding_is_about_the_whole_message_and_holds_no_address() -> None:
    to = ", ".join(f"person{i}@partner{i}.example.com" for i in range(12))
    [finding] = ExposedRecipientsDetector(INTERNAL, 10).detect(parse(raw_with_headers(f"To: {to}"),
                                                                     Envelope(SENDER, ())))
    assert finding.detector == "exposed_recipients"
    assert finding.category is Category.MISADDRESSED
    assert finding.kind == "outside addresses visible to every recipient"
    assert finding.location == "header:To/Cc"
    assert finding.signal is Signal.EXPOSED_RECIPIENTS
    assert finding.count == 12
    assert finding.recipients == ()
    assert "@" not in repr(finding.to_json())


def test_envelope_recipients_missing_from_the_headers_are_not_exposed() -> None:
    rcpts = tuple(f"person{i}@partner.example.com" for i in range(30))
    message = parse(raw_with_headers("To: jane.doe@council.gov.uk"), Envelope(SENDER, rcpts))
    assert ExposedRecipientsDetector(INTERNAL, 10).detect(message) == []


@pytest.mark.parametrize("raw", [
    b"\r\n\r\n",
    b"To:\r\nCc: ,,,;;;<<>>\r\n\r\nx",
    b"To: " + b"a@b.c, " * 20000 + b"\r\n\r\nx",
    b"To: \xff\xfe@\xff.example.com, =?utf-8?q?=FF?= <x@y.example.com>\r\n\r\nx",
    b"To: \"" + b"\\" * 5000 + b"\r\n\r\nx",
])
def test_odd_address_headers_never_raise(raw: bytes) -> None:
    ExposedRecipientsDetector(INTERNAL, 10).detect(parse(raw, Envelope("", ())))


# --- greeting mismatch --------------------------------------------------------------------

GREETINGS = rows("greeting.tsv")


def addresses(field: str) -> list[str]:
    return [] if field == "-" else [a.strip() for a in field.split(" ; ")]


def envelope_address(entry: str) -> str:
    return entry.rpartition("<")[2].rstrip(">").strip()


def greeting_message(opening: str, to: list[str], cc: list[str], history: SenderHistory | None = None,
                     rcpts: list[str] | None = None) -> Message:
    body = opening.replace("\\n", "\n") + "\n\nKind regards,\nJane Doe\nHousing Services"
    raw = make_message(body=body, sender=SENDER, to=to, cc=cc or None)
    rcpts = rcpts if rcpts is not None else [envelope_address(a) for a in to + cc]
    return parse(raw, Envelope(SENDER, tuple(rcpts)), history=history or SenderHistory())


@pytest.mark.parametrize("expected,opening,to,cc,note", GREETINGS, ids=[r[4] for r in GREETINGS])
def test_a_greeting_that_names_nobody_among_the_recipients(expected: str, opening: str, to: str, cc: str,
                                                           note: str) -> None:
    message = greeting_message(opening, addresses(to), addresses(cc))
    findings = GreetingDetector(INTERNAL).detect(message)
    assert [f.recipients for f in findings] == [(a,) for a in addresses(expected)], note


def test_the_greeting_table_holds_enough_cases_each_way() -> None:
    assert sum(r[0] != "-" for r in GREETINGS) >= 20
    assert sum(r[0] == "-" for r in GREETINGS) >= 20


def test_a_greeting_finding_never_holds_the_greeted_name_or_body_text() -> None:
    message = greeting_message("Dear Sarah,\\n\\nHer NI number is AB123456C.", ["tom.jones@supplier.example.com"], [])
    [finding] = GreetingDetector(INTERNAL).detect(message)
    assert finding.detector == "greeting_mismatch"
    assert finding.category is Category.MISADDRESSED
    assert finding.kind == "greeting names someone other than the recipient"
    assert finding.location == "body"
    assert finding.signal is Signal.GREETING_MISMATCH
    assert finding.recipients == ("tom.jones@supplier.example.com",)
    assert finding.detail == ""
    text = repr(finding.to_json()).lower()
    assert "sarah" not in text and "ab123456c" not in text


def test_a_bcc_recipient_is_judged_by_the_name_the_history_remembers() -> None:
    history = SenderHistory(correspondents=(Correspondent("tj@supplier.example.com", "Tom Jones", 4, 0.0, 0.0),))
    message = greeting_message("Dear Sarah,", ["sarah.brown@council.gov.uk"], [], history=history,
                               rcpts=["sarah.brown@council.gov.uk", "tj@supplier.example.com"])
    assert GreetingDetector(INTERNAL).detect(message) == []  # Sarah is a recipient
    message = greeting_message("Dear Priya,", ["sarah.brown@council.gov.uk"], [], history=history,
                               rcpts=["sarah.brown@council.gov.uk", "tj@supplier.example.com"])
    assert [f.recipients for f in GreetingDetector(INTERNAL).detect(message)] == [("tj@supplier.example.com",)]


def test_only_the_first_body_part_is_read_not_attachments() -> None:
    raw = make_message(body="Please see attached.", sender=SENDER, to=["tom.jones@supplier.example.com"],
                       attachments=[("letter.txt", b"Dear Sarah,\n\nYour application...", "text/plain")])
    message = parse(raw, Envelope(SENDER, ("tom.jones@supplier.example.com",)))
    assert GreetingDetector(INTERNAL).detect(message) == []


def test_an_html_only_message_is_read_by_its_text() -> None:
    raw = (f"From: Jane Doe <{SENDER}>\r\nTo: tom.jones@supplier.example.com\r\nSubject: x\r\n"
           "MIME-Version: 1.0\r\nContent-Type: text/html\r\n\r\n"
           "<html><body><p>Dear Sarah,</p><p>The report.</p></body></html>\r\n").encode()
    message = parse(raw, Envelope(SENDER, ("tom.jones@supplier.example.com",)))
    assert len(GreetingDetector(INTERNAL).detect(message)) == 1


@pytest.mark.parametrize("raw", [
    b"\r\n\r\n",
    b"To: tom.jones@supplier.example.com\r\n\r\nDear",
    b"To: tom.jones@supplier.example.com\r\n\r\nDear \xff\xfe,\r\n",
    b"To: =?utf-8?b?5p2O5piO?= <li@supplier.example.com>\r\n\r\nDear \xe6\x9d\x8e,\r\n",
    b"To: <@supplier.example.com>, \"\" <>\r\n\r\nHi Sarah,\r\n",
    b"To: tom.jones@supplier.example.com\r\n\r\nHi " + b"Sarah " * 20000 + b"\r\n",
    b"To: tom.jones@supplier.example.com\r\n\r\n" + b"\r\n" * 100000 + b"Hi Sarah,",
])
def test_odd_messages_never_raise(raw: bytes) -> None:
    for rcpts in ((), ("tom.jones@supplier.example.com",), ("",), ("@",), ("x" * 500,)):
        GreetingDetector(INTERNAL).detect(parse(raw, Envelope("", rcpts)))


def test_the_greeting_is_found_quickly_in_a_long_message() -> None:
    body = "Dear Sarah,\\n\\n" + "The quarterly figures are in the attached sheet. " * 400
    message = greeting_message(body, ["tom.jones@supplier.example.com"], [])
    detector = GreetingDetector(INTERNAL)
    started = time.perf_counter()
    for _ in range(100):
        detector.detect(message)
    assert (time.perf_counter() - started) / 100 < 0.005


# --- end to end: `dlp-gateway scan` ---------------------------------------------------------

@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text("organisation: {internal_domains: [council.gov.uk], trusted_domains: [nhs.net]}\n")
    return path


def scan(tmp_path: Path, config_file: Path, raw: bytes, *rcpts: str) -> dict:
    args = ["--config", str(config_file), "--sender", SENDER]
    for rcpt in rcpts:
        args += ["--rcpt", rcpt]
    return scan_message(tmp_path, raw, *args)


def test_scan_rejects_twelve_outside_addresses_in_to_but_delivers_inside(tmp_path: Path, config_file: Path) -> None:
    outside = [f"resident{i}@example{i}.com" for i in range(12)]
    raw = make_message(sender=SENDER, to=outside, cc=["colleague@council.gov.uk"], body="Hello,\n\nThe meeting moved.")
    record = scan(tmp_path, config_file, raw, *outside, "colleague@council.gov.uk")
    got = {r["address"]: r for r in record["recipients"]}
    for address in outside:
        assert got[address]["action"] == "reject"
        assert "exposed-recipients" in got[address]["rules"]
    assert got["colleague@council.gov.uk"]["action"] == "deliver"
    assert any(f["category"] == "misaddressed" and f["count"] == 12 for f in record["findings"])


def test_scan_delivers_the_same_list_sent_as_bcc(tmp_path: Path, config_file: Path) -> None:
    outside = [f"resident{i}@example{i}.com" for i in range(12)]
    raw = make_message(sender=SENDER, to=["undisclosed-recipients:;"], body="Hello,\n\nThe meeting moved.")
    record = scan(tmp_path, config_file, raw, *outside)
    assert record["verdict"] == "deliver"


def test_scan_holds_personal_data_to_a_trusted_partner_greeted_by_another_name(
        tmp_path: Path, config_file: Path) -> None:
    raw = make_message(sender=SENDER, to=["tom.jones@nhs.net"],
                       body="Dear Sarah,\n\nHer National Insurance number is AB123456C.\n\nJane")
    record = scan(tmp_path, config_file, raw, "tom.jones@nhs.net")
    [rcpt] = record["recipients"]
    assert rcpt["action"] == "quarantine"
    assert "greeting-mismatch" in rcpt["rules"]


def test_scan_sends_the_same_message_over_tls_when_the_greeting_matches(tmp_path: Path, config_file: Path) -> None:
    raw = make_message(sender=SENDER, to=["tom.jones@nhs.net"],
                       body="Dear Tom,\n\nHer National Insurance number is AB123456C.\n\nJane")
    record = scan(tmp_path, config_file, raw, "tom.jones@nhs.net")
    [rcpt] = record["recipients"]
    assert rcpt["action"] == "deliver_tls"
    assert "greeting-mismatch" not in rcpt["rules"]


def test_scan_delivers_a_greeting_mismatch_without_sensitive_content(tmp_path: Path, config_file: Path) -> None:
    raw = make_message(sender=SENDER, to=["tom.jones@supplier.example.com"], body="Dear Sarah,\n\nSee you at ten.")
    record = scan(tmp_path, config_file, raw, "tom.jones@supplier.example.com")
    assert record["recipients"][0]["action"] == "deliver"
    assert any(f["detector"] == "greeting_mismatch" for f in record["findings"])
