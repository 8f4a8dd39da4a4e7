"""The monitoring disclaimer: once in every body a reader sees, nowhere else, and nothing else changed."""

from __future__ import annotations

import email.policy
import html
import random
import re
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import pytest

from gateway.disclaimer import (
    MARKER, Disclaimer, NotAdded, TemplateError, add_disclaimer, load_disclaimer,
)

DATA = Path(__file__).parent / "data" / "disclaimer"
ORG = "Anytown Borough Council"
DISCLAIMER = load_disclaimer(organisation=ORG)
PHRASE = f"email sent to and from {ORG} is monitored".casefold()
MARKER_LINE = f"{MARKER}: added\r\n".encode()
NON_ASCII = (DATA / "non-ascii.txt").read_text(encoding="utf-8")
# A disclaimer with characters outside ISO-8859-1 (typographic apostrophe, em dash).
UNICODE_DISCLAIMER = Disclaimer(
    text="The council\u2019s email is monitored \u2014 see our privacy notice.",
    html="<p>The council\u2019s email is monitored \u2014 see our privacy notice.</p>",
)
UNICODE_PHRASE = "the council\u2019s email is monitored \u2014 see our privacy notice."
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
PDF = b"%PDF-1.4\n" + bytes(range(256)) * 8 + b"\n%%EOF\n"


# --- helpers --------------------------------------------------------------------------------

def data(name: str) -> bytes:
    """A data file with CRLF line endings, as an MTA hands it over."""
    return re.sub(rb"\r?\n", b"\r\n", (DATA / name).read_bytes())


def parse(raw: bytes) -> EmailMessage:
    return BytesParser(policy=email.policy.default).parsebytes(raw)  # type: ignore[return-value]


def leaves(part: EmailMessage) -> list[EmailMessage]:
    """Leaf parts, not descending into attached messages."""
    if part.is_multipart() and part.get_content_maintype() == "multipart":
        return [leaf for p in part.iter_parts() for leaf in leaves(p)]  # type: ignore[arg-type]
    return [part]


def bodies(msg: EmailMessage) -> list[EmailMessage]:
    return [p for p in leaves(msg)
            if p.get_content_type() in ("text/plain", "text/html") and not p.is_attachment()
            and not p.get_filename()]


def text_of(part: EmailMessage) -> str:
    """The decoded text with its line endings as LF (the email package keeps the wire's CRLF)."""
    return part.get_content().replace("\r\n", "\n")


def readable(part: EmailMessage) -> str:
    content = text_of(part)
    if part.get_content_type() == "text/html":
        content = html.unescape(re.sub(r"(?s)<[^>]*>", " ", content))
    return re.sub(r"\s+", " ", content).casefold()


def mentions(part: EmailMessage, phrase: str = PHRASE) -> int:
    return readable(part).count(phrase)


def header_block(raw: bytes) -> bytes:
    return raw[:raw.index(b"\r\n\r\n") + 2]


def segments(raw: bytes) -> list[bytes]:
    """The raw bytes of every part between delimiter lines, for every boundary in the message."""
    out = []
    for part in parse(raw).walk():
        boundary = part.get_boundary()
        if boundary:
            pieces = re.split(rb"\r\n--" + re.escape(boundary.encode()) + rb"(?:--)?\r\n", raw)
            out += pieces[1:-1]
    return out


def segment_with(raw: bytes, needle: bytes) -> bytes:
    found = [s for s in segments(raw) if needle in s]
    assert found, needle
    return min(found, key=len)


def assert_well_formed(raw: bytes) -> EmailMessage:
    msg = parse(raw)
    for part in msg.walk():
        assert not part.defects, (part.get_content_type(), part.defects)
    assert b"\r\n" in raw and re.search(rb"(?<!\r)\n", raw) is None, "CRLF in, CRLF out"
    return msg


def assert_only_the_marker_was_added_to_the_headers(before: bytes, after: bytes) -> None:
    assert header_block(after) == header_block(before) + MARKER_LINE


def new_message(subject: str = "Minutes of the meeting") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "Jane Doe <jane.doe@council.example.gov.uk>"
    msg["To"] = "partner@supplier.example.com"
    msg["Subject"] = subject
    msg["Message-ID"] = "<m1@council.example.gov.uk>"
    return msg


def as_bytes(msg: EmailMessage) -> bytes:
    return msg.as_bytes(policy=email.policy.SMTP)


def newsletter() -> bytes:
    """mixed > (alternative > (plain, related > (html, inline image)), PDF attachment): Thunderbird, Gmail."""
    msg = new_message()
    msg.set_content(NON_ASCII)
    msg.add_alternative(f"<html><body><p>{html.escape(NON_ASCII)}</p><img src=\"cid:logo@council\"></body></html>\n",
                        subtype="html")
    msg.get_payload()[1].add_related(PNG, "image", "png", cid="<logo@council>")
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="minutes.pdf")
    return as_bytes(msg)


# --- where it goes ---------------------------------------------------------------------------

def test_plain_only_message_gets_the_text_once_and_the_marker() -> None:
    msg = new_message()
    msg.set_content("Hello,\n\nThe minutes are below.\n\nJane\n")
    before = as_bytes(msg)
    result = add_disclaimer(before, DISCLAIMER.text, DISCLAIMER.html)
    assert result.added and result.reason is None and result.parts == 1
    out = assert_well_formed(result.raw)
    assert mentions(out) == 1
    assert text_of(out).startswith("Hello,\n\nThe minutes are below.\n\nJane\n\n")
    assert_only_the_marker_was_added_to_the_headers(before, result.raw)


def test_html_only_message_gets_the_snippet_inside_body() -> None:
    msg = new_message()
    msg.set_content("<html><body><p>Hello</p></body></html>\n", subtype="html")
    result = DISCLAIMER.apply(as_bytes(msg))
    out = assert_well_formed(result.raw)
    content = text_of(out)
    assert mentions(out) == 1
    assert content.index("dlp-disclaimer") < content.rindex("</body>") and content.rstrip().endswith("</html>")


def test_html_without_a_body_tag_gets_the_snippet_appended() -> None:
    msg = new_message()
    msg.set_content("<p>Hello</p>\n", subtype="html")
    out = assert_well_formed(DISCLAIMER.apply(as_bytes(msg)).raw)
    assert mentions(out) == 1 and text_of(out).startswith("<p>Hello</p>\n<div")


def test_every_body_of_mixed_alternative_related_gets_it_once_and_the_rest_is_untouched() -> None:
    before = newsletter()
    result = DISCLAIMER.apply(before)
    out = assert_well_formed(result.raw)
    assert result.parts == 2
    assert [p.get_content_type() for p in bodies(out)] == ["text/plain", "text/html"]
    for part in bodies(out):
        assert mentions(part) == 1
    assert NON_ASCII in text_of(bodies(out)[0])
    assert html.escape(NON_ASCII) in text_of(bodies(out)[1])
    for needle in (b'filename="minutes.pdf"', b"Content-ID: <logo@council>"):
        assert segment_with(before, needle) in result.raw
    assert_only_the_marker_was_added_to_the_headers(before, result.raw)


def test_outlook_related_holding_an_alternative_gets_it_in_both_alternatives() -> None:
    alternative = EmailMessage()
    alternative.set_content("Hello\n")
    alternative.add_alternative("<html><body><p>Hello</p><img src=\"cid:sig@council\"></body></html>\n",
                                subtype="html")
    image = EmailMessage()
    image.set_content(PNG, "image", "png", cid="<sig@council>", disposition="inline")
    msg = new_message()
    msg.make_related()
    msg.attach(alternative)
    msg.attach(image)
    before = as_bytes(msg)
    out = assert_well_formed(DISCLAIMER.apply(before).raw)
    assert out.get_content_type() == "multipart/related"
    assert [mentions(p) for p in bodies(out)] == [1, 1]
    assert segment_with(before, b"Content-ID: <sig@council>") in DISCLAIMER.apply(before).raw


def test_apple_mail_interleaved_text_gets_it_once_at_the_end() -> None:
    msg = new_message()
    msg.set_content("Here is the photo:\n")
    msg.add_attachment(PNG, maintype="image", subtype="png", disposition="inline")
    msg.add_attachment("And that was the site visit.\n", subtype="plain", disposition="inline")
    out = assert_well_formed(DISCLAIMER.apply(as_bytes(msg)).raw)
    assert [mentions(p) for p in bodies(out)] == [0, 1]


def test_calendar_invitation_keeps_its_calendar_part() -> None:
    msg = new_message("Invitation: project board")
    msg.set_content("You are invited.\n")
    msg.add_alternative("<html><body><p>You are invited.</p></body></html>\n", subtype="html")
    msg.add_alternative("BEGIN:VCALENDAR\nMETHOD:REQUEST\nEND:VCALENDAR\n", subtype="calendar",
                        params={"method": "REQUEST"})
    before = as_bytes(msg)
    result = DISCLAIMER.apply(before)
    assert [mentions(p) for p in bodies(assert_well_formed(result.raw))] == [1, 1]
    assert segment_with(before, b"text/calendar") in result.raw


# --- what it never touches ---------------------------------------------------------------------

def test_a_text_attachment_does_not_get_it() -> None:
    msg = new_message()
    msg.set_content("The notes are attached.\n")
    msg.add_attachment("Meeting notes\n", subtype="plain", filename="notes.txt")
    before = as_bytes(msg)
    result = DISCLAIMER.apply(before)
    out = assert_well_formed(result.raw)
    attachment = [p for p in leaves(out) if p.get_filename() == "notes.txt"][0]
    assert mentions(attachment) == 0 and mentions(bodies(out)[0]) == 1
    assert segment_with(before, b'filename="notes.txt"') in result.raw


def test_a_text_part_with_only_a_name_is_an_attachment() -> None:
    msg = new_message()
    msg.set_content("Log attached.\n")
    msg.add_attachment("line 1\n", subtype="plain")
    msg.get_payload()[1].set_param("name", "build.log")
    msg.get_payload()[1].replace_header("Content-Disposition", "inline")
    before = as_bytes(msg)
    out = assert_well_formed(DISCLAIMER.apply(before).raw)
    assert [mentions(p) for p in leaves(out)] == [1, 0]


def test_an_attached_message_does_not_change() -> None:
    forwarded = new_message("The original")
    forwarded.set_content("The original text, with no disclaimer.\n")
    forwarded.add_alternative("<html><body><p>The original</p></body></html>\n", subtype="html")
    msg = new_message("Fwd: The original")
    msg.set_content("See the message below.\n")
    msg.add_attachment(forwarded)
    before = as_bytes(msg)
    result = DISCLAIMER.apply(before)
    out = assert_well_formed(result.raw)
    assert result.parts == 1 and mentions(bodies(out)[0]) == 1
    assert segment_with(before, b"Content-Type: message/rfc822") in result.raw
    inner = [p for p in out.walk() if p.get_content_type() == "message/rfc822"][0].get_payload()[0]
    assert all(mentions(p) == 0 for p in leaves(inner))


def test_an_encrypted_file_beside_a_plain_body_does_not_stop_it() -> None:
    msg = new_message()
    msg.set_content("The encrypted spreadsheet is attached; I will phone you the password.\n")
    msg.add_attachment(b"\x85\x01\x0c" + bytes(200), maintype="application", subtype="pgp-encrypted",
                       filename="figures.xlsx.pgp")
    result = DISCLAIMER.apply(as_bytes(msg))
    assert result.added and mentions(bodies(assert_well_formed(result.raw))[0]) == 1


@pytest.mark.parametrize(("name", "reason"), [
    ("smime-signed.eml", NotAdded.SIGNED),
    ("pgp-mime-signed.eml", NotAdded.SIGNED),
    ("smime-opaque-signed.eml", NotAdded.SIGNED),
    ("pgp-inline-signed.eml", NotAdded.SIGNED),
    ("smime-encrypted.eml", NotAdded.ENCRYPTED),
    ("x-pkcs7-mime-encrypted.eml", NotAdded.ENCRYPTED),
    ("pgp-mime-encrypted.eml", NotAdded.ENCRYPTED),
    ("pgp-inline-encrypted.eml", NotAdded.ENCRYPTED),
])
def test_signed_and_encrypted_messages_leave_byte_identical_with_the_reason(name: str, reason: NotAdded) -> None:
    before = data(name)
    result = DISCLAIMER.apply(before)
    assert (result.raw, result.added, result.reason) == (before, False, reason)


def test_a_signed_message_inside_a_mixed_wrapper_is_left_alone() -> None:
    signed = data("smime-signed.eml")
    wrapped = (b"From: list@council.example.gov.uk\r\nSubject: wrapped\r\nMIME-Version: 1.0\r\n"
               b"Content-Type: multipart/mixed; boundary=\"w\"\r\n\r\n--w\r\n"
               + signed[signed.index(b"Content-Type: multipart/signed"):] + b"\r\n--w--\r\n")
    assert DISCLAIMER.apply(wrapped).reason == NotAdded.SIGNED


def test_a_message_with_no_readable_body_is_left_alone() -> None:
    msg = new_message()
    msg.add_attachment(PDF, maintype="application", subtype="pdf", filename="minutes.pdf")
    before = as_bytes(msg)
    assert DISCLAIMER.apply(before) == type(DISCLAIMER.apply(before))(before, False, NotAdded.NO_TEXT_PART)


# --- never twice --------------------------------------------------------------------------------

def test_the_marker_header_makes_it_a_no_op() -> None:
    once = DISCLAIMER.apply(newsletter())
    twice = DISCLAIMER.apply(once.raw)
    assert (twice.raw, twice.added, twice.reason) == (once.raw, False, NotAdded.ALREADY_PRESENT)


def test_a_reply_chain_that_already_carries_it_is_left_alone() -> None:
    msg = new_message("Re: figures")
    msg.set_content((DATA / "reply-chain-plain.txt").read_text())
    msg.add_alternative((DATA / "reply-chain.html").read_text(), subtype="html")
    before = as_bytes(msg)
    result = DISCLAIMER.apply(before)
    assert (result.raw, result.added, result.reason) == (before, False, NotAdded.ALREADY_PRESENT)


def test_only_the_alternative_missing_it_gets_it() -> None:
    msg = new_message("Re: figures")
    msg.set_content((DATA / "reply-chain-plain.txt").read_text())
    msg.add_alternative("<html><body><p>Thanks, that works for us.</p></body></html>\n", subtype="html")
    before = as_bytes(msg)
    result = DISCLAIMER.apply(before)
    out = assert_well_formed(result.raw)
    assert result.parts == 1 and [mentions(p) for p in bodies(out)] == [1, 1]
    assert segment_with(before, b"text/plain") in result.raw


# --- encodings and charsets ------------------------------------------------------------------------

@pytest.mark.parametrize("cte", ["quoted-printable", "base64", "8bit"])
def test_the_transfer_encoding_is_kept_and_non_ascii_survives(cte: str) -> None:
    msg = new_message()
    msg.set_content(NON_ASCII, cte=cte)
    msg.add_alternative(f"<html><body><p>{NON_ASCII}</p></body></html>\n", subtype="html", cte=cte)
    before = as_bytes(msg)
    out = assert_well_formed(DISCLAIMER.apply(before).raw)
    for part in bodies(out):
        assert part["Content-Transfer-Encoding"] == cte and part.get_content_charset() == "utf-8"
        assert NON_ASCII.strip() in text_of(part) and mentions(part) == 1
    assert_only_the_marker_was_added_to_the_headers(before, DISCLAIMER.apply(before).raw)


def test_base64_lines_stay_76_characters() -> None:
    msg = new_message()
    msg.set_content(NON_ASCII * 5, cte="base64")
    raw = DISCLAIMER.apply(as_bytes(msg)).raw
    body = raw[raw.index(b"\r\n\r\n") + 4:].strip().split(b"\r\n")
    assert max(map(len, body)) == 76


def test_latin1_keeps_its_charset_when_the_disclaimer_fits() -> None:
    msg = new_message()
    msg.set_content(NON_ASCII.replace("€", "EUR").replace("—", "-"), charset="iso-8859-1", cte="quoted-printable")
    out = assert_well_formed(DISCLAIMER.apply(as_bytes(msg)).raw)
    assert out.get_content_charset() == "iso-8859-1" and "Zoë" in text_of(out) and mentions(out) == 1


def test_latin1_becomes_utf8_when_the_disclaimer_does_not_fit() -> None:
    text = NON_ASCII.replace("€", "EUR").replace("—", "-")
    msg = new_message()
    msg.set_content(text, charset="iso-8859-1", cte="quoted-printable")
    before = as_bytes(msg)
    result = UNICODE_DISCLAIMER.apply(before)
    out = assert_well_formed(result.raw)
    assert out.get_content_charset() == "utf-8" and out["Content-Transfer-Encoding"] == "quoted-printable"
    assert text in text_of(out) and mentions(out, UNICODE_PHRASE) == 1
    changed = header_block(before).replace(b'charset="iso-8859-1"', b'charset="utf-8"')
    assert header_block(result.raw) == changed + MARKER_LINE


def test_a_7bit_ascii_part_becomes_quoted_printable_utf8_for_a_non_ascii_disclaimer() -> None:
    raw = data("folded-headers.eml")
    result = UNICODE_DISCLAIMER.apply(raw)
    out = assert_well_formed(result.raw)
    assert out["Content-Transfer-Encoding"] == "quoted-printable" and out.get_content_charset() == "utf-8"
    assert out.get_param("format") == "flowed"
    changed = header_block(raw).replace(b'charset="us-ascii"', b'charset="utf-8"')
    assert header_block(result.raw) == changed.replace(b"7bit", b"quoted-printable") + MARKER_LINE
    assert mentions(out, UNICODE_PHRASE) == 1 and "Q2: 1,204" in text_of(out)


def test_html_keeps_its_charset_and_says_what_it_cannot_carry_in_character_references() -> None:
    msg = new_message()
    msg.set_content("<html><body><p>Caf\xe9</p></body></html>\n", subtype="html", charset="iso-8859-1",
                    cte="8bit")
    out = assert_well_formed(UNICODE_DISCLAIMER.apply(as_bytes(msg)).raw)
    assert out.get_content_charset() == "iso-8859-1" and out["Content-Transfer-Encoding"] == "8bit"
    assert "&#8217;" in text_of(out) and mentions(out, UNICODE_PHRASE) == 1


def test_a_part_mislabelled_us_ascii_keeps_its_bytes_and_gets_an_ascii_disclaimer() -> None:
    raw = (b"From: jane.doe@council.example.gov.uk\r\nTo: partner@supplier.example.com\r\nSubject: x\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n"
           b"Content-Transfer-Encoding: 8bit\r\n\r\nCaf\xc3\xa9 \xa3250\r\n")
    result = UNICODE_DISCLAIMER.apply(raw)
    assert result.added and header_block(result.raw) == header_block(raw) + MARKER_LINE
    assert result.raw.endswith(b"\r\n\r\nCaf\xc3\xa9 \xa3250\r\n\r\n"
                               b"The council's email is monitored - see our privacy notice.\r\n")


def test_format_flowed_stays_flowed_and_long_lines_wrap_softly() -> None:
    long_org = "The Royal Borough of Anytown and Somewhere-on-Sea Metropolitan District Council"
    disclaimer = load_disclaimer(organisation=long_org)
    for delsp in (False, True):
        msg = new_message()
        msg.set_content("A flowed paragraph that the client will \nreflow.\n")
        msg.set_param("format", "flowed")
        if delsp:
            msg.set_param("delsp", "yes")
        out = assert_well_formed(disclaimer.apply(as_bytes(msg)).raw)
        content = text_of(out)
        assert out.get_param("format") == "flowed" and max(map(len, content.splitlines())) <= 78
        unflowed = unflow(content, delsp)
        assert f"Email sent to and from {long_org} is monitored" in unflowed


def unflow(text: str, delsp: bool) -> str:
    """RFC 3676 section 4.2."""
    out = []
    for line in text.replace("\r\n", "\n").split("\n"):
        line = line[1:] if line.startswith(" ") else line
        if line.endswith(" ") and line != "-- ":
            out.append(line[:-1] if delsp else line)
        else:
            out.append(line + "\n")
    return "".join(out)


def test_a_long_organisation_name_is_rewrapped_but_short_lines_keep_their_breaks() -> None:
    disclaimer = load_disclaimer(organisation="The Royal Borough of Anytown and Somewhere-on-Sea Council")
    msg = new_message()
    msg.set_content("Hello\n")
    content = text_of(parse(disclaimer.apply(as_bytes(msg)).raw))
    assert max(map(len, content.splitlines())) <= 76
    assert "intended for the named recipient(s)\nonly." in content


# --- nothing else changes ----------------------------------------------------------------------------

def test_oddly_folded_and_8bit_headers_stay_byte_for_byte() -> None:
    before = data("folded-headers.eml")
    result = DISCLAIMER.apply(before)
    assert result.added
    assert_only_the_marker_was_added_to_the_headers(before, result.raw)
    assert result.raw[len(header_block(result.raw)):].startswith(before[len(header_block(before)):])


def test_lf_in_lf_out() -> None:
    msg = new_message()
    msg.set_content("Hello\n")
    msg.add_alternative("<html><body><p>Hello</p></body></html>\n", subtype="html")
    before = msg.as_bytes(policy=email.policy.default)
    after = DISCLAIMER.apply(before).raw
    assert b"\r" not in after and [mentions(p) for p in bodies(parse(after))] == [1, 1]


def test_a_message_of_headers_only_gains_a_body() -> None:
    raw = b"From: jane.doe@council.example.gov.uk\r\nTo: partner@supplier.example.com\r\nSubject: (no text)\r\n"
    result = DISCLAIMER.apply(raw)
    out = assert_well_formed(result.raw)
    assert result.raw.startswith(raw) and mentions(out) == 1


# --- never raises ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(p.name for p in DATA.glob("malformed-*.eml")))
def test_malformed_messages_are_returned_unchanged(name: str) -> None:
    before = data(name)
    result = DISCLAIMER.apply(before)
    assert (result.raw, result.added, result.reason) == (before, False, NotAdded.MALFORMED)


def test_garbage_never_raises() -> None:
    rng = random.Random(20250304)
    samples = [b"", b"\r\n", b"\r\n\r\n", b"\x00" * 50, b"Subject: x", (Path(__file__).parent / "data" / "scan" /
                                                                      "malformed.eml").read_bytes()]
    samples += [rng.randbytes(rng.randrange(1, 3000)) for _ in range(200)]
    valid = newsletter()
    samples += [valid[:cut] for cut in range(0, len(valid), max(1, len(valid) // 150))]
    samples += [valid.replace(b"\r\n", b"\n", rng.randrange(1, 30)) for _ in range(20)]
    nested = b"From: a@b\r\nContent-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n"
    samples.append(nested * 300)
    deep = b"From: a@b\r\n"
    for i in range(60):
        deep += f"Content-Type: multipart/mixed; boundary=b{i}\r\n\r\n--b{i}\r\n".encode()
    samples.append(deep + b"Content-Type: text/plain\r\n\r\nhi\r\n" + b"".join(
        f"--b{i}--\r\n".encode() for i in reversed(range(60))))
    for sample in samples:
        result = add_disclaimer(sample, DISCLAIMER.text, DISCLAIMER.html)
        if not result.added:
            assert result.raw == sample and result.reason in NotAdded
        else:
            parse(result.raw)
    assert add_disclaimer(samples[-1], DISCLAIMER.text, DISCLAIMER.html).reason == NotAdded.MALFORMED


# --- the templates ----------------------------------------------------------------------------------------

def test_the_shipped_templates_name_the_organisation_and_escape_it_in_html() -> None:
    d = load_disclaimer(organisation="Smith & Jones <Council>")
    assert "Email sent to and from Smith & Jones <Council> is monitored" in d.text
    assert "Smith &amp; Jones &lt;Council&gt;" in d.html and "{" not in d.text
    assert all(len(line) <= 76 for line in load_disclaimer(organisation="the council").text.splitlines())


def test_css_braces_in_a_template_are_literal(tmp_path: Path) -> None:
    (tmp_path / "d.html").write_text("<style>p { color: #555 }</style><p>{organisation} monitors email.</p>")
    d = load_disclaimer("", tmp_path / "d.html", "The council")
    assert d.html == "<style>p { color: #555 }</style><p>The council monitors email.</p>"


def test_an_unknown_placeholder_is_an_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "d.txt").write_text("Email to {organization} is monitored.\n")
    with pytest.raises(TemplateError, match=r"d\.txt.*\{organization\}.*\{organisation\}"):
        load_disclaimer(tmp_path / "d.txt", "", "The council")


def test_a_missing_template_is_an_error_naming_the_file(tmp_path: Path) -> None:
    with pytest.raises(TemplateError, match=r"cannot read the disclaimer template .*nothere\.html"):
        load_disclaimer("", tmp_path / "nothere.html", "The council")
