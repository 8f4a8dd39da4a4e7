"""Attachment reading: the framework, text in any charset, attached emails, whole-message encryption."""

from __future__ import annotations

import hashlib
from email.message import EmailMessage
from pathlib import Path

from detectors.attachments import Limits, ReadFile, Status, read_attachments
from detectors.attachments.core import is_disguised
from detectors.attachments.text import decode_bytes
from gateway.message import Envelope, detect_type, parse
from tests.conftest import SENDER, make_message
from tests.support import scan_message

ENV = Envelope(SENDER, ("partner@supplier.example.com",))
STAFF_CSV = "name,ni number\nJo Bloggs,AB123456C\nSam Smith,CE123456A\n"


def reports(raw: bytes):
    return {r.location: r for r in parse(raw, ENV).attachment_reports}


def test_csv_in_windows_1252_utf16_and_utf8_with_bom_is_read() -> None:
    text = "Name,Note\nZoë Brontë,café crème – £5\n"
    for data in (text.encode("cp1252"), text.encode("utf-16"), text.encode("utf-8-sig"), text.encode("utf-8")):
        assert decode_bytes(data) == text


def test_a_text_attachment_is_located_by_name_and_inspected() -> None:
    raw = make_message(attachments=[("staff.csv", STAFF_CSV.encode("utf-16"), "text/csv")])
    message = parse(raw, ENV)
    assert any(s.location == "attachment:staff.csv" and "AB123456C" in s.text for s in message.segments)
    assert reports(raw)["attachment:staff.csv"].status is Status.INSPECTED


def test_an_attached_email_is_read_through_the_message_model_with_its_own_attachments(tmp_path: Path) -> None:
    inner = make_message(subject="Referral", body="See the list.",
                         attachments=[("list.csv", STAFF_CSV.encode(), "text/csv")])
    outer = EmailMessage()
    outer["From"], outer["To"], outer["Subject"] = SENDER, "someone@gmail.com", "Fwd: Referral"
    outer.set_content("Forwarding this.")
    outer.add_attachment(parse_bytes(inner), subtype="rfc822", filename="referral.eml")
    raw = outer.as_bytes()
    found = reports(raw)
    assert found["attachment:referral.eml"].status is Status.INSPECTED
    assert found["attachment:referral.eml/list.csv"].status is Status.INSPECTED
    record = scan_message(tmp_path, raw)
    assert {"detector": "uk_nino", "location": "attachment:referral.eml/list.csv"}.items() <= {
        k: v for f in record["findings"] if f["detector"] == "uk_nino" for k, v in f.items()}.items()
    assert record["verdict"] == "reject"


def test_nesting_deeper_than_the_limit_cannot_be_inspected() -> None:
    data = make_message(body="innermost")
    for level in range(4):
        outer = EmailMessage()
        outer["Subject"] = f"level {level}"
        outer.set_content("wrapper")
        outer.add_attachment(parse_bytes(data), subtype="rfc822", filename=f"l{level}.eml")
        data = outer.as_bytes()
    texts, found = read_attachments([ReadFile("top.eml", data, "message/rfc822")], Limits(max_depth=2), detect_type)
    assert [r.status for r in found][-1] is Status.INCOMPLETE
    assert "nested more than 2" in found[-1].reason


def parse_bytes(data: bytes) -> EmailMessage:
    import email

    return email.message_from_bytes(data, _class=EmailMessage)


def test_an_unknown_binary_cannot_be_inspected_but_an_image_can() -> None:
    blob = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(64))  # libmagic: octet-stream
    raw = make_message(attachments=[("blob.bin", blob, "application/octet-stream"),
                                    ("logo.gif", b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "image/gif")])
    found = reports(raw)
    assert found["attachment:blob.bin"].status is Status.INCOMPLETE
    assert found["attachment:logo.gif"].status is Status.INSPECTED


def test_whole_message_encryption_is_recognised_and_signed_only_is_not(tmp_path: Path) -> None:
    pgp = (b"From: " + SENDER.encode() + b"\r\nTo: someone@gmail.com\r\nSubject: x\r\nMIME-Version: 1.0\r\n"
           b'Content-Type: multipart/encrypted; protocol="application/pgp-encrypted"; boundary="b"\r\n\r\n'
           b"--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n"
           b"--b\r\nContent-Type: application/octet-stream\r\n\r\n-----BEGIN PGP MESSAGE-----\r\nhQEM\r\n"
           b"-----END PGP MESSAGE-----\r\n--b--\r\n")
    smime = (b"From: " + SENDER.encode() + b"\r\nTo: partner@supplier.example.com\r\nSubject: x\r\n"
             b'Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name="smime.p7m"\r\n'
             b"Content-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHA6CAMIACAQAx\r\n")
    signed = (b"From: " + SENDER.encode() + b"\r\nTo: partner@supplier.example.com\r\nSubject: x\r\n"
              b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; boundary="s"\r\n\r\n'
              b"--s\r\nContent-Type: text/plain\r\n\r\nHello, AB123456C\r\n"
              b'--s\r\nContent-Type: application/pkcs7-signature; name="smime.p7s"\r\n\r\nMIIB\r\n--s--\r\n')
    assert reports(pgp)["message"].status is Status.ENCRYPTED
    assert reports(smime)["message"].status is Status.ENCRYPTED
    assert all(r.status is not Status.ENCRYPTED for r in reports(signed).values())
    assert scan_message(tmp_path, pgp)["verdict"] == "reject"           # nothing encrypted to a personal account
    assert scan_message(tmp_path, smime)["verdict"] == "deliver"        # encrypted to an outside organisation: fine
    signed_record = scan_message(tmp_path, signed)
    assert signed_record["verdict"] == "reject" and any(f["detector"] == "uk_nino" for f in signed_record["findings"])


def test_a_document_named_as_something_else_is_reported_as_disguised() -> None:
    assert is_disguised("notes.txt", "text/plain", "application/zip")
    assert is_disguised("holiday.jpg", "image/jpeg", "application/pdf")
    assert not is_disguised("report.pdf", "application/pdf", "application/pdf")
    assert not is_disguised("book.xlsx", "application/octet-stream",
                            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
    assert not is_disguised("book.xlsx", "", "application/zip")
