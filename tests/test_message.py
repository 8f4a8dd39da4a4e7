"""The message model: parsed once, never raising, every readable text located."""

from __future__ import annotations

from gateway.message import BODY, SUBJECT, Envelope, html_to_text, parse
from tests.conftest import make_message

ENV = Envelope("jane@council.example.gov.uk", ("x@supplier.example.com",))


def test_subject_body_and_text_attachments_become_located_segments() -> None:
    raw = make_message(subject="Caf\u00e9 rota", body="Plain body text",
                       attachments=[("rota.csv", "name,shift\nJo,early\n".encode(), "text/csv"),
                                    ("logo.gif", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "image/gif")])
    message = parse(raw, ENV)
    assert message.subject == "Caf\u00e9 rota"
    assert [(s.location, s.text.strip()) for s in message.segments] == [
        (SUBJECT, "Caf\u00e9 rota"), (BODY, "Plain body text"), ("attachment:rota.csv", "name,shift\nJo,early")]
    names = [(a.name, a.declared_type, a.detected_type) for a in message.attachments]
    assert names[1] == ("logo.gif", "image/gif", "image/gif")
    assert names[0][:2] == ("rota.csv", "text/csv") and names[0][2].startswith("text/")


def test_detected_type_comes_from_the_bytes_not_the_name() -> None:
    pdf = b"%PDF-1.4\n1 0 obj\n<<>>\nendobj\ntrailer\n<<>>\n%%EOF\n"
    message = parse(make_message(attachments=[("holiday.jpg", pdf, "image/jpeg")]), ENV)
    (att,) = message.attachments
    assert att.declared_type == "image/jpeg" and att.detected_type == "application/pdf"


def test_html_parts_are_read_as_text_without_markup_or_scripts() -> None:
    text = html_to_text("<html><head><style>p{}</style></head><body><p>Dear <b>Sam</b>,</p>"
                        "<script>alert(1)</script><p>Hello &amp; welcome</p></body></html>")
    assert "Dear Sam," in text and "Hello & welcome" in text
    assert "alert" not in text and "p{}" not in text


def test_encoded_headers_and_charsets_are_decoded() -> None:
    raw = (b"Subject: =?utf-8?q?R=C3=A9union?=\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
           b"Content-Transfer-Encoding: quoted-printable\r\n\r\nCaf=E9 cr=E8me\r\n")
    message = parse(raw, ENV)
    assert message.subject == "R\u00e9union"
    assert message.segments[1].text.strip() == "Caf\u00e9 cr\u00e8me"


def test_garbage_is_still_modelled_and_damage_is_recorded() -> None:
    raw = (b"Content-Type: multipart/mixed; boundary=nope\r\n\r\nno boundary ever appears\r\n"
           b"AB123456C\r\n")
    message = parse(raw, ENV)
    assert any("AB123456C" in s.text for s in message.segments)
    assert message.defects
    assert parse(b"\x00\xff\xfe binary junk \x00", ENV).segments
    assert parse(b"", ENV).segments == ()


def test_damaged_base64_is_a_defect() -> None:
    raw = (b"Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!not base64===\r\n")
    assert [d.reason for d in parse(raw, ENV).defects] == ["damaged base64"]


def test_text_is_normalised_as_a_person_reads_it() -> None:
    from gateway.message import normalise_text

    assert normalise_text("A\u200bB 12\u00ad34 56 C") == "AB 1234 56 C"
    assert normalise_text("\uff21\uff22\uff11\uff12") == "AB12"          # full-width letters and digits
    assert normalise_text("943\u2013476\u2014591\u22129") == "943-476-591-9"
    assert normalise_text("OFFICIAL\u00a0SENSITIVE") == "OFFICIAL SENSITIVE"


def test_an_obfuscated_nino_in_html_is_still_found() -> None:
    from detectors.personal_data.uk_nino import NinoDetector

    raw = (b"Content-Type: text/html; charset=utf-8\r\n\r\n<table><tr><td>NI</td><td>A\xe2\x80\x8bB&nbsp;12 34 56 C"
           b"</td></tr></table>\r\n")
    (finding,) = NinoDetector().detect(parse(raw, ENV))
    assert finding.count == 1


def test_raw_utf8_headers_of_smtputf8_mail_are_read_as_utf8() -> None:
    raw = "From: Zoë Brontë <zoe@example.com>\r\nTo: Jürgen <j@example.de>,\r\n  Ana <a@example.es>\r\n" \
          "Subject: Überweisung für März\r\n\r\nbody\r\n"
    m = parse(raw.encode("utf-8"), Envelope("zoe@example.com", ("j@example.de",)))
    assert m.subject == "Überweisung für März"
    assert m.addresses("From", "To") == [("Zoë Brontë", "zoe@example.com"), ("Jürgen", "j@example.de"),
                                         ("Ana", "a@example.es")]


def test_raw_8bit_headers_that_are_not_utf8_are_read_as_windows_1252() -> None:
    m = parse(b"From: Zo\xeb <zoe@example.com>\r\nSubject: caf\xe9\r\n\r\nbody\r\n", Envelope("zoe@example.com", ()))
    assert m.subject == "café"
