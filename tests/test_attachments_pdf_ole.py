"""PDFs, legacy Office and other OLE2 files, Outlook .msg, and attached OpenPGP and S/MIME files.

Every file is made here from real libraries or documented structures: PDFs by fpdf2 and
encrypted by pypdf, OOXML by python-docx and openpyxl and encrypted by msoffcrypto-tool,
legacy .xls by xlwt, legacy .doc/.ppt and .msg by tests/cfb_writer.py (no library writes
them), S/MIME by `cryptography` with a certificate made here, OpenPGP packets by hand
(RFC 4880 headers). The end-to-end checks run the `dlp-gateway scan` a person runs, once
for all the messages of this module.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import struct
import subprocess
import time
import zlib
from pathlib import Path
from typing import Any

import pytest

from detectors.attachments import Limits, ReadFile, Status, read_attachments
from detectors.attachments.core import Budget
from detectors.attachments.crypto import pgp_or_pkcs7_kind
from detectors.attachments.outlook_msg import decompress_rtf, read_msg
from gateway.message import detect_type
from tests.cfb_writer import (MSG_CLSID, build_cfb, outlook_message, powerpoint97, summary_information,
                              word97)
from tests.conftest import make_message
from tests.support import BIN

DATA = Path(__file__).parent / "data" / "attachments" / "pdf_ole"
NINO = "AB123456C"
PERSONAL, PARTNER = "someone@gmail.com", "partner@supplier.example.com"


def read(name: str, data: bytes, limits: Limits | None = None) -> tuple[dict[str, str], dict[str, Any]]:
    """(location -> text, location -> report) for one attachment, as the gateway reads it."""
    texts, reports = read_attachments([ReadFile(name, data)], limits or Limits(), detect_type)
    return dict(texts), {r.location: r for r in reports}


# ---------------------------------------------------------------------------------------
# Files, made by the libraries that write them

def pdf(text: str = f"National Insurance number: {NINO}", title: str = "OFFICIAL-SENSITIVE: staff review",
        pages: int = 1) -> bytes:
    from fpdf import FPDF

    doc = FPDF()
    doc.set_title(title)
    doc.set_author("Jane Doe")
    doc.set_font("helvetica", size=11)
    for page in range(pages):
        doc.add_page()
        doc.multi_cell(w=0, text=f"Page {page + 1}\n{text}")
    return bytes(doc.output())


def encrypt_pdf(data: bytes, user_password: str, owner_password: str) -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    writer.encrypt(user_password=user_password, owner_password=owner_password, algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def pdf_with_attachment(name: str, content: bytes) -> bytes:
    from pypdf import PdfReader, PdfWriter

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf(text="See the attached list.", title="Report"))))
    writer.add_attachment(name, content)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def pdf_drawing_one_form_again_and_again(times: int = 1000, operators: int = 5000) -> bytes:
    """A small PDF whose one page draws a text-heavy form `times` times: pypdf reads the form
    every time, so text extraction costs times x operators (minutes for 48 KB)."""
    from pypdf import PdfReader, PdfWriter
    from pypdf.generic import ArrayObject, DecodedStreamObject, DictionaryObject, NameObject, NumberObject

    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(pdf(text="x", title=""))))
    page = writer.pages[0]
    form = DecodedStreamObject()
    form.set_data(b"BT /F1 9 Tf 10 10 Td " + b"(AB) Tj " * operators + b"ET")
    form.update({NameObject("/Type"): NameObject("/XObject"), NameObject("/Subtype"): NameObject("/Form"),
                 NameObject("/BBox"): ArrayObject([NumberObject(0), NumberObject(0), NumberObject(99),
                                                   NumberObject(99)]),
                 NameObject("/Resources"): page["/Resources"]})
    resources = page["/Resources"].get_object()
    resources[NameObject("/XObject")] = DictionaryObject({NameObject("/X1"): writer._add_object(form)})
    content = DecodedStreamObject()
    content.set_data(b"/X1 Do " * times)
    page[NameObject("/Contents")] = writer._add_object(content)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def docx() -> bytes:
    import docx as python_docx

    document = python_docx.Document()
    document.add_paragraph(f"National Insurance number: {NINO}")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def xlsx() -> bytes:
    import openpyxl

    book = openpyxl.Workbook()
    book.active.append(["Name", "NI number"])
    book.active.append(["Jo Bloggs", NINO])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def office_encrypted(data: bytes) -> bytes:
    import msoffcrypto.format.ooxml

    out = io.BytesIO()
    msoffcrypto.format.ooxml.OOXMLFile(io.BytesIO(data)).encrypt("Password1", out)
    return out.getvalue()


def xls(encrypted: bool = False, rows: int = 300) -> bytes:
    """A BIFF8 workbook by xlwt. xlwt cannot encrypt: `encrypted` inserts a FILEPASS record
    (RC4 CryptoAPI, [MS-XLS] 2.4.117) after the globals' BOF, as Excel does, and stores the
    stream in a compound file with tests/cfb_writer.py."""
    import xlwt

    book = xlwt.Workbook()
    sheet = book.add_sheet("Staff")
    sheet.header_str = b"&COFFICIAL-SENSITIVE"
    sheet.footer_str = b"&LOFFICIAL-SENSITIVE&RPage &P"
    for col, heading in enumerate(["Name", "NI number", "Date of birth", "Salary"]):
        sheet.write(0, col, heading)
    sheet.write(1, 0, "Jo Bloggs")
    sheet.write(1, 1, NINO)
    sheet.write(1, 2, datetime.date(1980, 5, 17), xlwt.easyxf(num_format_str="dd/mm/yyyy"))
    sheet.write(1, 3, 25000.5)
    many = book.add_sheet("Many")
    for row in range(rows):                     # enough strings that the SST spans CONTINUE records
        many.write(row, 0, f"row {row} of a long list of strings in the shared string table")
    if not encrypted:
        out = io.BytesIO()
        book.save(out)
        return out.getvalue()
    biff = book.get_biff_data()
    (bof_size,) = struct.unpack_from("<H", biff, 2)
    filepass = struct.pack("<HHHHH", 0x002F, 6 + 32, 1, 2, 2) + bytes(32)   # wEncryptionType 1: RC4
    return build_cfb({"Workbook": biff[:4 + bof_size] + filepass + biff[4 + bof_size:]})


def legacy_doc(encrypted: bool = False) -> bytes:
    streams = word97(f"Case notes\nNational Insurance number: {NINO}\nEnd of notes",
                     header="OFFICIAL-SENSITIVE", footer="Printed copy OFFICIAL-SENSITIVE", encrypted=encrypted)
    summary = summary_information("Case notes", "Referral", "Jane Doe", "Microsoft Office Word")
    return build_cfb({**streams, "\x05SummaryInformation": summary})


def legacy_ppt(encrypted: bool = False) -> bytes:
    streams = powerpoint97([f"Referral\nNational Insurance number: {NINO}", "Next steps"], footer="OFFICIAL-SENSITIVE",
                           encrypted=encrypted)
    return build_cfb({**streams, "\x05SummaryInformation": summary_information("Briefing",
                                                                                app="Microsoft Office PowerPoint")})


def packaged(name: str, content: bytes) -> bytes:
    """An \\x01Ole10Native stream, as the Object Packager writes a file embedded in a document:
    size, flags, label, source path, a reserved word, the temporary path, the file's size and bytes."""
    temp = f"C:\\Temp\\{name}".encode() + b"\0"
    body = (struct.pack("<H", 2) + name.encode() + b"\0" + f"C:\\Users\\jane\\{name}".encode() + b"\0"
            + struct.pack("<II", 0x00030000, len(temp)) + temp + struct.pack("<I", len(content)) + content)
    return struct.pack("<I", len(body)) + body


def outlook_msg() -> bytes:
    inner = outlook_message("Earlier referral", "See the list.", ("Sam Smith", "sam@example.com"),
                            [("Jane Doe", "jane.doe@council.example.gov.uk")],
                            attachments=[("list.csv", f"name,ni number\nJo Bloggs,{NINO}\n".encode())], top=False)
    return build_cfb(outlook_message("OFFICIAL-SENSITIVE: referral", f"Please call Jo Bloggs ({NINO}).",
                                     ("Jane Doe", "jane.doe@council.example.gov.uk"), [("Jo Bloggs", "jo@example.com")],
                                     attachments=[("notes.txt", b"Nothing personal here.\n")], embedded=[inner]),
                     root_clsid=MSG_CLSID)


# OpenPGP packets (RFC 4880 4.2): new-format headers; bodies just long enough to be themselves.
def pgp_packet(tag: int, body: bytes) -> bytes:
    assert len(body) < 8384
    n = len(body)
    length = bytes([n]) if n < 192 else bytes([((n - 192) >> 8) + 192, (n - 192) & 0xFF])
    return bytes([0xC0 | tag]) + length + body


def pgp_encrypted() -> bytes:
    """A public-key encrypted session key packet (tag 1, version 3, RSA) and encrypted data (tag 18)."""
    return pgp_packet(1, b"\x03" + bytes(range(8)) + b"\x01" + b"\x08\x00" + bytes(256)) + pgp_packet(18, b"\x01" +
                                                                                                     bytes(64))


def pgp_signed(content: bytes) -> bytes:
    """What `gpg --sign` writes: compressed data (tag 8, zlib) holding a one-pass signature (tag 4),
    literal data (tag 11) and the signature (tag 2, its body elided)."""
    literal = pgp_packet(11, b"b" + bytes([9]) + b"notes.txt" + bytes(4) + content)
    inner = pgp_packet(4, b"\x03\x00\x08\x16" + bytes(8) + b"\x01") + literal + pgp_packet(2, b"\x04" + bytes(40))
    return pgp_packet(8, b"\x02" + zlib.compress(inner))


def armour(data: bytes) -> bytes:
    import base64

    body = base64.b64encode(data).decode()
    lines = "\n".join(body[i:i + 64] for i in range(0, len(body), 64))
    return f"-----BEGIN PGP MESSAGE-----\n\n{lines}\n-----END PGP MESSAGE-----\n".encode()


@pytest.fixture(scope="module")
def certificate() -> tuple[Any, Any]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "partner@supplier.example.com")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
    return cert, key


def smime_enveloped(cert: Any, encoding: str = "DER") -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.serialization import pkcs7

    return (pkcs7.PKCS7EnvelopeBuilder().set_data(f"NI number {NINO}".encode()).add_recipient(cert)
            .encrypt(getattr(serialization.Encoding, encoding), []))


def smime_signed(cert: Any, key: Any, content: bytes, detached: bool = False) -> bytes:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.serialization import pkcs7

    options = [pkcs7.PKCS7Options.DetachedSignature] if detached else []
    return (pkcs7.PKCS7SignatureBuilder().set_data(content).add_signer(cert, key, hashes.SHA256())
            .sign(serialization.Encoding.DER, options))


# ---------------------------------------------------------------------------------------
# PDF

def test_pdf_page_text_is_read_with_its_title_on_the_first_line() -> None:
    texts, reports = read("report.pdf", pdf(pages=3))
    assert detect_type(pdf()) == "application/pdf"
    text = texts["attachment:report.pdf"]
    assert text.splitlines()[0] == "Title: OFFICIAL-SENSITIVE: staff review"
    assert "Author: Jane Doe" in text and text.count(NINO) == 3 and "Page 3" in text
    assert reports["attachment:report.pdf"].status is Status.INSPECTED


def test_pdf_that_needs_a_password_to_open_is_encrypted() -> None:
    texts, reports = read("locked.pdf", encrypt_pdf(pdf(), user_password="s3cret", owner_password="owner"))
    assert reports["attachment:locked.pdf"].status is Status.ENCRYPTED
    assert reports["attachment:locked.pdf"].reason == "PDF needs a password to open"
    assert not texts


def test_pdf_with_only_an_owner_password_opens_for_anyone_so_it_is_read() -> None:
    texts, reports = read("owner.pdf", encrypt_pdf(pdf(), user_password="", owner_password="owner"))
    assert reports["attachment:owner.pdf"].status is Status.INSPECTED
    assert NINO in texts["attachment:owner.pdf"]


def test_a_file_attached_to_a_pdf_is_read_as_a_member() -> None:
    texts, reports = read("report.pdf", pdf_with_attachment("staff.csv", f"name,ni number\nJo,{NINO}\n".encode()))
    assert reports["attachment:report.pdf/staff.csv"].status is Status.INSPECTED
    assert NINO in texts["attachment:report.pdf/staff.csv"]


def test_a_damaged_pdf_cannot_be_inspected() -> None:
    data = pdf()
    for damaged in (data[:len(data) // 2], b"%PDF-1.7\n" + b"\x00garbage" * 50):
        _, reports = read("broken.pdf", damaged)
        assert reports["attachment:broken.pdf"].status is Status.INCOMPLETE
        assert reports["attachment:broken.pdf"].reason.startswith("damaged or unreadable")


def test_a_pdf_that_would_take_minutes_to_read_stops_at_the_time_limit() -> None:
    data = pdf_drawing_one_form_again_and_again()
    assert len(data) < 100_000
    started = time.monotonic()
    _, reports = read("slow.pdf", data, Limits(max_seconds=1.0))
    assert time.monotonic() - started < 4
    assert reports["attachment:slow.pdf"].status is Status.INCOMPLETE
    assert "took longer than 1 s" in reports["attachment:slow.pdf"].reason


# ---------------------------------------------------------------------------------------
# OOXML in an encrypted container, legacy Office, other OLE2 files

def test_encrypted_docx_and_xlsx_are_encrypted() -> None:
    for name, data in (("locked.docx", office_encrypted(docx())), ("locked.xlsx", office_encrypted(xlsx()))):
        assert detect_type(data) == "application/encrypted"
        texts, reports = read(name, data)
        assert reports[f"attachment:{name}"].status is Status.ENCRYPTED
        assert reports[f"attachment:{name}"].reason == "Office document encrypted with a password"
        assert NINO not in "".join(texts.values())


def test_legacy_word_text_is_read_with_headers_first_and_footers_last() -> None:
    data = legacy_doc()
    assert detect_type(data) == "application/msword"
    texts, reports = read("notes.doc", data)
    lines = texts["attachment:notes.doc"].splitlines()
    assert lines[:4] == ["Title: Case notes", "Subject: Referral", "Author: Jane Doe", "OFFICIAL-SENSITIVE"]
    assert f"National Insurance number: {NINO}" in lines
    assert lines[-1] == "Printed copy OFFICIAL-SENSITIVE"
    assert reports["attachment:notes.doc"].status is Status.INSPECTED


def test_a_file_embedded_in_a_legacy_document_is_read_as_a_member() -> None:
    streams = word97("See the embedded list.")
    pool = {"_1234567890": {"\x01Ole10Native": packaged("staff.csv", f"name,ni number\nJo,{NINO}\n".encode()),
                            "\x01Ole": struct.pack("<II", 0x02000001, 0) + bytes(12)}}
    texts, reports = read("notes.doc", build_cfb({**streams, "ObjectPool": pool}))
    assert NINO in texts["attachment:notes.doc/staff.csv"]
    assert all(r.status is Status.INSPECTED for r in reports.values())


def test_legacy_word_with_the_encrypted_flag_is_encrypted() -> None:
    _, reports = read("locked.doc", legacy_doc(encrypted=True))
    assert reports["attachment:locked.doc"].status is Status.ENCRYPTED


def test_legacy_excel_cells_are_read_row_by_row_with_dates_and_page_headers() -> None:
    data = xls()
    assert detect_type(data) == "application/vnd.ms-excel"
    texts, reports = read("staff.xls", data)
    lines = texts["attachment:staff.xls"].splitlines()
    assert lines[0] == "OFFICIAL-SENSITIVE" and lines[-1] == "Page"
    assert "Name\tNI number\tDate of birth\tSalary" in lines
    assert f"Jo Bloggs\t{NINO}\t17/05/1980\t25000.5" in lines
    assert [line for line in lines if line.startswith("row ")] == [
        f"row {row} of a long list of strings in the shared string table" for row in range(300)]
    assert reports["attachment:staff.xls"].status is Status.INSPECTED


def test_a_legacy_file_larger_than_what_libmagic_reads_is_read_all_the_same() -> None:
    data = xls(rows=3000)               # the directory is written last, beyond the 64 KiB libmagic is given
    assert len(data) > 65536 and detect_type(data) == "application/x-ole-storage"
    texts, reports = read("big.xls", data)
    assert f"Jo Bloggs\t{NINO}\t17/05/1980\t25000.5" in texts["attachment:big.xls"].splitlines()
    assert reports["attachment:big.xls"].status is Status.INSPECTED


def test_legacy_excel_with_a_filepass_record_is_encrypted() -> None:
    data = xls(encrypted=True)
    assert detect_type(data) == "application/vnd.ms-excel"
    texts, reports = read("locked.xls", data)
    assert reports["attachment:locked.xls"].status is Status.ENCRYPTED
    assert NINO not in "".join(texts.values())


def test_legacy_powerpoint_slide_text_is_read_and_master_placeholders_are_not() -> None:
    data = legacy_ppt()
    assert detect_type(data) == "application/vnd.ms-powerpoint"
    texts, reports = read("briefing.ppt", data)
    text = texts["attachment:briefing.ppt"]
    assert text.splitlines()[0] == "Title: Briefing" and text.splitlines()[-1] == "OFFICIAL-SENSITIVE"
    assert NINO in text and "Next steps" in text and "Click to edit" not in text
    assert reports["attachment:briefing.ppt"].status is Status.INSPECTED


def test_legacy_powerpoint_marked_encrypted_in_its_current_user_atom_is_encrypted() -> None:
    _, reports = read("locked.ppt", legacy_ppt(encrypted=True))
    assert reports["attachment:locked.ppt"].status is Status.ENCRYPTED


def test_an_ole_file_of_an_unknown_kind_or_a_damaged_one_cannot_be_inspected() -> None:
    _, reports = read("thing.bin", build_cfb({"Contents": b"something"}))
    assert reports["attachment:thing.bin"].detected_type == "application/x-ole-storage"
    assert reports["attachment:thing.bin"].status is Status.INCOMPLETE
    damaged = bytearray(legacy_doc())
    damaged[0x30:0x34] = struct.pack("<I", 4000)        # the directory's first sector: far past the end
    _, reports = read("broken.doc", bytes(damaged))
    assert reports["attachment:broken.doc"].status is Status.INCOMPLETE


# ---------------------------------------------------------------------------------------
# Outlook .msg

def test_outlook_message_is_read_with_its_people_and_attachments_and_attached_message() -> None:
    data = outlook_msg()
    assert detect_type(data) == "application/vnd.ms-outlook"
    texts, reports = read("referral.msg", data)
    lines = texts["attachment:referral.msg"].splitlines()
    assert lines[:3] == ["Subject: OFFICIAL-SENSITIVE: referral",
                         "From: Jane Doe <jane.doe@council.example.gov.uk>", "To: Jo Bloggs <jo@example.com>"]
    assert f"Please call Jo Bloggs ({NINO})." in lines
    assert "Nothing personal" in texts["attachment:referral.msg/notes.txt"]
    assert "See the list." in texts["attachment:referral.msg/Earlier referral.eml"]
    assert NINO in texts["attachment:referral.msg/Earlier referral.eml/list.csv"]
    assert all(r.status is Status.INSPECTED for r in reports.values())


def test_a_signed_outlook_message_is_read_through_its_mime_entity() -> None:
    entity = (b'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; boundary="s"\r\n\r\n'
              b"--s\r\nContent-Type: text/plain\r\n\r\nNI number " + NINO.encode() + b"\r\n"
              b'--s\r\nContent-Type: application/pkcs7-signature; name="smime.p7s"\r\n\r\nMIIB\r\n--s--\r\n')
    tree = outlook_message("Signed", "", ("Jane Doe", "jane.doe@council.example.gov.uk"), [],
                           attachments=[("smime.p7m", entity)], message_class="IPM.Note.SMIME.MultipartSigned")
    texts, reports = read("signed.msg", build_cfb(tree, root_clsid=MSG_CLSID))
    assert NINO in texts["attachment:signed.msg/smime.eml"]
    assert reports["attachment:signed.msg/smime.eml"].status is Status.INSPECTED


def test_compressed_rtf_decompresses_as_the_specification_says() -> None:
    for line in (DATA / "rtf_compressed_examples.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            compressed, rtf = line.split("\t")
            assert decompress_rtf(bytes.fromhex(compressed), Budget(Limits())) == rtf.replace("\\r\\n", "\r\n").encode()


def test_a_message_whose_only_body_is_rtf_has_it_as_a_member() -> None:
    compressed = bytes.fromhex((DATA / "rtf_compressed_examples.txt").read_text().splitlines()[2].split("\t")[0])
    tree = outlook_message("Notes", "", ("Jane Doe", "jane.doe@council.example.gov.uk"), [])
    del tree["__substg1.0_1000001F"]
    tree["__substg1.0_10090102"] = compressed
    found = read_msg(build_cfb(tree, root_clsid=MSG_CLSID), Budget(Limits()))
    assert found.members == [("body.rtf", b"{\\rtf1\\ansi\\ansicpg1252\\pard hello world}\r\n")]


# ---------------------------------------------------------------------------------------
# OpenPGP and S/MIME files

def test_openpgp_encrypted_files_are_encrypted_armoured_or_binary() -> None:
    for name, data in (("message.asc", armour(pgp_encrypted())), ("message.gpg", pgp_encrypted())):
        _, reports = read(name, data)
        assert reports[f"attachment:{name}"].status is Status.ENCRYPTED, name
        assert reports[f"attachment:{name}"].reason == "OpenPGP encrypted message"


def test_an_openpgp_signed_file_is_not_encrypted_and_its_content_is_read() -> None:
    texts, reports = read("notes.txt.gpg", pgp_signed(f"NI number {NINO}\n".encode()))
    assert reports["attachment:notes.txt.gpg"].status is Status.INSPECTED
    assert NINO in texts["attachment:notes.txt.gpg/notes.txt"]


def test_smime_enveloped_data_is_encrypted_and_signed_data_is_unpacked(certificate: tuple[Any, Any]) -> None:
    cert, key = certificate
    _, reports = read("smime.p7m", smime_enveloped(cert))
    assert reports["attachment:smime.p7m"].status is Status.ENCRYPTED
    texts, reports = read("signed.p7m", smime_signed(cert, key, f"NI number {NINO}\n".encode()))
    assert reports["attachment:signed.p7m"].status is Status.INSPECTED
    assert NINO in texts["attachment:signed.p7m/signed-content"]
    _, reports = read("smime.p7s", smime_signed(cert, key, b"elsewhere", detached=True))
    assert reports["attachment:smime.p7s"].status is Status.INSPECTED


def test_encrypted_objects_written_as_text_are_recognised_for_the_text_reader(certificate: tuple[Any, Any]) -> None:
    cert, key = certificate
    assert pgp_or_pkcs7_kind(b"Notes\n\n" + armour(pgp_encrypted())) == "OpenPGP encrypted message"
    assert pgp_or_pkcs7_kind(smime_enveloped(cert, "PEM")) == "S/MIME (PKCS #7) encrypted message"
    assert pgp_or_pkcs7_kind(smime_enveloped(cert, "SMIME")) == "S/MIME (PKCS #7) encrypted message"
    assert pgp_or_pkcs7_kind(armour(pgp_signed(b"hello"))) is None
    assert pgp_or_pkcs7_kind(f"name,ni number\nJo,{NINO}\n".encode()) is None


def test_unknown_bytes_still_cannot_be_inspected() -> None:
    blob = b"".join(hashlib.sha256(str(i).encode()).digest() for i in range(64))  # libmagic: octet-stream
    _, reports = read("blob.bin", blob)
    assert reports["attachment:blob.bin"].detected_type == "application/octet-stream"
    assert reports["attachment:blob.bin"].status is Status.INCOMPLETE
    assert reports["attachment:blob.bin"].reason == "the gateway cannot read files of type application/octet-stream"


# ---------------------------------------------------------------------------------------
# End to end: the decision a sender gets, from `dlp-gateway scan`

@pytest.fixture(scope="module")
def scanned(tmp_path_factory: pytest.TempPathFactory, certificate: tuple[Any, Any]) -> dict[str, dict]:
    cert, key = certificate
    personal = [("report.pdf", pdf(), "application/pdf"),
                ("owner.pdf", encrypt_pdf(pdf(), "", "owner"), "application/pdf"),
                ("notes.doc", legacy_doc(), "application/msword"),
                ("staff.xls", xls(), "application/vnd.ms-excel"),
                ("briefing.ppt", legacy_ppt(), "application/vnd.ms-powerpoint"),
                ("referral.msg", outlook_msg(), "application/vnd.ms-outlook"),
                # Declared application/pkcs7-mime with no smime-type: judged by its bytes, and the
                # signed content inside is read.
                ("signed.p7m", smime_signed(cert, key, f"NI number {NINO}\n".encode()), "application/pkcs7-mime")]
    encrypted = [("locked.pdf", encrypt_pdf(pdf(), "s3cret", "owner"), "application/pdf"),
                 ("locked.docx", office_encrypted(docx()),
                  "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
                 ("locked.xlsx", office_encrypted(xlsx()),
                  "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
                 ("locked.doc", legacy_doc(encrypted=True), "application/msword"),
                 ("locked.xls", xls(encrypted=True), "application/vnd.ms-excel"),
                 ("locked.ppt", legacy_ppt(encrypted=True), "application/vnd.ms-powerpoint"),
                 ("message.asc", armour(pgp_encrypted()), "application/pgp-encrypted"),
                 ("smime.p7m", smime_enveloped(cert), "application/pkcs7-mime")]
    messages = {
        "personal": make_message(to=[PERSONAL], attachments=personal),
        "encrypted-partner": make_message(to=[PARTNER], attachments=encrypted),
        "encrypted-personal": make_message(to=[PERSONAL], attachments=encrypted),
        "damaged": make_message(to=[PARTNER], attachments=[("broken.pdf", pdf()[:400], "application/pdf")]),
    }
    directory = tmp_path_factory.mktemp("scan")
    paths = []
    for name, raw in messages.items():
        (directory / f"{name}.eml").write_bytes(raw)
        paths.append(str(directory / f"{name}.eml"))
    out = subprocess.run([str(BIN / "dlp-gateway"), "scan", *paths], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines()]
    return {Path(r["file"]).stem: r for r in records}


def findings_at(record: dict, detector: str) -> set[str]:
    return {f["location"] for f in record["findings"] if f["detector"] == detector}


def test_personal_data_in_each_kind_of_file_is_found_and_rejected_for_a_personal_account(scanned: dict) -> None:
    record = scanned["personal"]
    assert record["verdict"] == "reject"
    assert findings_at(record, "uk_nino") >= {
        "attachment:report.pdf", "attachment:owner.pdf", "attachment:notes.doc", "attachment:staff.xls",
        "attachment:briefing.ppt", "attachment:referral.msg", "attachment:referral.msg/Earlier referral.eml/list.csv",
        "attachment:signed.p7m/signed-content"}
    assert findings_at(record, "protective_marking") >= {
        "attachment:report.pdf", "attachment:notes.doc", "attachment:staff.xls", "attachment:briefing.ppt",
        "attachment:referral.msg"}
    assert not findings_at(record, "attachments")         # every file was inspected


def test_encrypted_files_are_delivered_to_an_outside_organisation_but_not_to_a_personal_account(
        scanned: dict) -> None:
    to_partner, to_personal = scanned["encrypted-partner"], scanned["encrypted-personal"]
    expected = {"attachment:locked.pdf", "attachment:locked.docx", "attachment:locked.xlsx", "attachment:locked.doc",
                "attachment:locked.xls", "attachment:locked.ppt", "attachment:message.asc", "attachment:smime.p7m"}
    for record in (to_partner, to_personal):
        assert {f["location"] for f in record["findings"] if f["kind"] == "encrypted content"} == expected
        assert not [f for f in record["findings"] if f["kind"] == "content that could not be inspected"]
    assert to_partner["verdict"] == "deliver"
    assert to_personal["verdict"] == "reject"
    assert "encrypted-to-personal" in to_personal["recipients"][0]["rules"]


def test_a_damaged_pdf_is_reported_as_not_inspected_never_a_crash(scanned: dict) -> None:
    record = scanned["damaged"]
    assert [f["location"] for f in record["findings"] if f["kind"] == "content that could not be inspected"] == [
        "attachment:broken.pdf"]
    assert record["verdict"] != "deliver"
