"""Deterministic benign business mail for the relay benchmark, about 20 KB a message.

Each message goes from a council address to one external and one internal recipient,
as multipart/alternative (plain text and an Outlook-like HTML rendering of the same
text), and about one in five carries a small CSV attachment. The words are chosen so
that the gateway's policy delivers every message: no National Insurance numbers or
anything shaped like one (two letters followed by digits), no protective marking
other than plain OFFICIAL, and no words that could read as one.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import html
import random
import string
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

INTERNAL_DOMAIN = "council.example.gov.uk"
SENDERS = (
    ("Procurement Team", f"procurement@{INTERNAL_DOMAIN}"),
    ("Highways Projects", f"highways.projects@{INTERNAL_DOMAIN}"),
    ("Facilities Management", f"facilities@{INTERNAL_DOMAIN}"),
    ("Libraries Service", f"libraries@{INTERNAL_DOMAIN}"),
)
EXTERNAL_RECIPIENTS = (
    "partner@supplier.example.com",
    "accounts@contractor.example.com",
    "projects@consultancy.example.org",
)
INTERNAL_RECIPIENTS = (
    f"finance.team@{INTERNAL_DOMAIN}",
    f"estates@{INTERNAL_DOMAIN}",
    f"programme.office@{INTERNAL_DOMAIN}",
)

TOPICS = (
    "the resurfacing programme",
    "the library refurbishment",
    "the depot roof repairs",
    "the street lighting upgrade",
    "the office move to the civic centre",
    "the grounds maintenance contract",
    "the winter gritting arrangements",
    "the leisure centre boiler replacement",
)
SUBJECTS = (
    "Update on {topic}",
    "RE: Revised timetable for {topic}",
    "Meeting notes: {topic}",
    "FW: Invoice query about {topic}",
    "Next steps for {topic}",
    "Quarterly review of {topic}",
)
TEAMS = ("project board", "steering group", "contract management group", "finance working group")
PLACES = ("the town hall car park", "the north depot", "the central library", "Market Street", "the civic centre")
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")
MONTHS = ("January", "March", "April", "June", "September", "October", "November")
SENTENCES = (
    "Please find below the latest update on {topic} for the current quarter.",
    "The {team} met on {weekday} to review progress against the agreed milestones.",
    "Spend to date is £{amount:,} against an approved budget of £{budget:,}, which is within the agreed tolerance.",
    "We would be grateful if you could confirm the revised delivery dates by {weekday} {day} {month}.",
    "The works at {place} are expected to start in {month}, subject to the usual permits and notices.",
    "Two of the open actions from the last meeting have been closed and the remaining three are on track.",
    "The supplier has asked for an extension of {days} working days, which the {team} will consider next week.",
    "Invoice number {invoice} has been approved for payment and should reach you within thirty days.",
    "Access to {place} will be restricted between 7am and 9am while the contractors are on site.",
    "We have updated the risk register; the main risk remains the lead time for materials.",
    "Residents near {place} were sent a letter last week explaining the timetable for the works.",
    "The revised specification is attached to the project record and replaces the version from {month}.",
    "Could you let us know whether the proposed hand-over date of {day} {month} still works for your team?",
    "Purchase order {order} covers the second phase and includes the contingency agreed by the {team}.",
    "The health and safety file will be reviewed by the facilities team before the site is handed back.",
    "If anything in this note is unclear, the programme office will be happy to go through it with you.",
)
CSV_HEADER = "Item,Description,Quantity,Unit cost (GBP),Total (GBP)\r\n"
CSV_ITEMS = ("Tarmac surface course", "Kerb stones", "Road markings", "Traffic management", "LED lanterns",
             "Roof membrane", "Scaffold hire", "Boiler unit", "Shelving units", "Signage")
HTML_HEAD = (
    '<html xmlns:o="urn:schemas-microsoft-com:office:office"><head>'
    '<meta http-equiv="Content-Type" content="text/html; charset=utf-8">'
    "<style><!-- p.MsoNormal, li.MsoNormal, div.MsoNormal {margin:0cm; font-size:11.0pt; "
    "font-family:\"Calibri\",sans-serif;} a:link {color:#0563C1; text-decoration:underline;} "
    "span.EmailStyle17 {font-family:\"Calibri\",sans-serif; color:windowtext;} "
    ".MsoChpDefault {font-size:10.0pt;} @page WordSection1 {size:612.0pt 792.0pt; "
    "margin:72.0pt 72.0pt 72.0pt 72.0pt;} div.WordSection1 {page:WordSection1;} --></style>"
    '</head><body lang="EN-GB" link="#0563C1" vlink="#954F72" style="word-wrap:break-word">'
    '<div class="WordSection1">'
)
HTML_PARAGRAPH = '<p class="MsoNormal" style="margin-bottom:8.0pt">{}</p>\r\n'
HTML_TAIL = "</div></body></html>\r\n"
# Plain text is roughly 40% of an encoded message once the HTML copy and headers are added.
TEXT_SHARE = 0.41
ATTACHMENT_EVERY = 5


@dataclass(frozen=True)
class BenchMessage:
    sender: str
    recipients: tuple[str, ...]
    data: bytes


def _fields(template: str) -> tuple[str, ...]:
    return tuple(name for _, name, _, _ in string.Formatter().parse(template) if name)


SENTENCE_FIELDS = tuple((template, _fields(template)) for template in SENTENCES)


def _filler(rng: random.Random, name: str, topic: str) -> str | int:
    match name:
        case "topic":
            return topic
        case "team":
            return rng.choice(TEAMS)
        case "place":
            return rng.choice(PLACES)
        case "weekday":
            return rng.choice(WEEKDAYS)
        case "month":
            return rng.choice(MONTHS)
        case "day":
            return rng.randint(1, 28)
        case "days":
            return rng.randint(5, 20)
        case "amount":
            return rng.randint(1_000, 90_000)
        case "budget":
            return rng.randint(100_000, 900_000)
        case "invoice":
            return rng.randint(100_000, 999_999)
        case "order":
            return rng.randint(400_000, 499_999)
    raise KeyError(name)


def _sentence(rng: random.Random, topic: str) -> str:
    template, names = rng.choice(SENTENCE_FIELDS)
    return template.format(**{name: _filler(rng, name, topic) for name in names})


def _paragraphs(rng: random.Random, topic: str, target_chars: int) -> list[str]:
    paragraphs: list[str] = []
    length = 0
    while length < target_chars:
        paragraph = " ".join(_sentence(rng, topic) for _ in range(rng.randint(3, 6)))
        paragraphs.append(paragraph)
        length += len(paragraph) + 2
    return paragraphs


def _csv(rng: random.Random) -> bytes:
    lines = [CSV_HEADER]
    for item in rng.sample(CSV_ITEMS, k=len(CSV_ITEMS)):
        for _ in range(rng.randint(3, 5)):
            quantity, cost = rng.randint(1, 400), rng.randint(5, 2_500)
            lines.append(f"{item},{item} (batch {rng.randint(1, 60)}),{quantity},{cost}.00,{quantity * cost}.00\r\n")
    return "".join(lines).encode("ascii")


def _qp_part(subtype: str, text: str) -> bytes:
    head = f"Content-Type: text/{subtype}; charset=\"utf-8\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
    return head.encode("ascii") + binascii.b2a_qp(text.encode("utf-8"), istext=True)


def _attachment_part(name: str, data: bytes) -> bytes:
    head = (f"Content-Type: text/csv; name=\"{name}\"\r\nContent-Disposition: attachment; filename=\"{name}\"\r\n"
            "Content-Transfer-Encoding: base64\r\n\r\n")
    return head.encode("ascii") + base64.encodebytes(data).replace(b"\n", b"\r\n")


def _multipart(subtype: str, boundary: str, parts: list[bytes]) -> bytes:
    """A multipart entity (its Content-Type header, a blank line, the parts); CRLF throughout."""
    out = [f"Content-Type: multipart/{subtype}; boundary=\"{boundary}\"\r\n\r\n".encode("ascii")]
    for part in parts:
        out.append(f"--{boundary}\r\n".encode("ascii") + part + b"\r\n")
    out.append(f"--{boundary}--\r\n".encode("ascii"))
    return b"".join(out)


def build_message(index: int, rng: random.Random, target_size: int) -> BenchMessage:
    name, sender = SENDERS[index % len(SENDERS)]
    external = rng.choice(EXTERNAL_RECIPIENTS)
    internal = rng.choice(INTERNAL_RECIPIENTS)
    topic = rng.choice(TOPICS)
    attachment = _csv(rng) if index % ATTACHMENT_EVERY == 0 else b""
    body_target = int((target_size - len(attachment) * 4 / 3) * TEXT_SHARE)

    opening = ["OFFICIAL", ""] if rng.random() < 0.3 else []
    paragraphs = opening + ["Hello,"] + _paragraphs(rng, topic, body_target)
    paragraphs += ["Kind regards,", name, "Council Offices, High Street"]
    text = "\r\n\r\n".join(paragraphs) + "\r\n"
    markup = HTML_HEAD + "".join(HTML_PARAGRAPH.format(html.escape(p) if p else "&nbsp;") for p in paragraphs)

    boundary = f"=_bench_{index:06d}_{rng.randint(10**8, 10**9 - 1)}"
    body = _multipart("alternative", f"{boundary}_alt", [_qp_part("plain", text), _qp_part("html", markup + HTML_TAIL)])
    if attachment:
        body = _multipart("mixed", f"{boundary}_mix", [body, _attachment_part(f"cost-summary-{index}.csv", attachment)])

    sent = datetime(2024, 3, 4, 9, 0, tzinfo=timezone.utc) + timedelta(minutes=7 * index)
    headers = (
        f"From: {email.utils.formataddr((name, sender))}\r\n"
        f"To: {external}\r\n"
        f"Cc: {internal}\r\n"
        f"Subject: {rng.choice(SUBJECTS).format(topic=topic)} (ref. {rng.randint(1000, 9999)}/{index})\r\n"
        f"Date: {email.utils.format_datetime(sent)}\r\n"
        f"Message-ID: <bench.{index:06d}.{rng.randint(10**8, 10**9 - 1)}@{INTERNAL_DOMAIN}>\r\n"
        "Content-Language: en-GB\r\n"
        "X-Mailer: Microsoft Outlook 16.0\r\n"
        "MIME-Version: 1.0\r\n"
    )
    return BenchMessage(sender=sender, recipients=(external, internal), data=headers.encode("ascii") + body)


def build_messages(count: int, seed: int = 20240304, size: int = 20_000) -> list[BenchMessage]:
    """`count` messages, byte for byte the same every time for the same seed and size."""
    rng = random.Random(seed)
    return [build_message(i, rng, rng.randint(int(size * 0.85), int(size * 1.15))) for i in range(count)]
