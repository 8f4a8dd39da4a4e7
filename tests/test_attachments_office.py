"""Office documents: DOCX, XLSX, PPTX, ODT, ODS and RTF attachments are read as a person
sees them, in bounded memory and time, and damaged or hostile ones end as "could not be
inspected", never a crash. Every document is made here by the library that writes it."""

from __future__ import annotations

import datetime
import io
import time
import tracemalloc
import zipfile
from pathlib import Path

import docx
import openpyxl
import pptx
import pytest
from odf import dc, meta, style, table, text
from odf.opendocument import OpenDocumentSpreadsheet, OpenDocumentText
from openpyxl.comments import Comment
from pptx.util import Inches

from detectors.attachments import Limits, ReadFile, Status, read_attachments
from detectors.attachments.core import Budget
from detectors.attachments.ooxml import number_as_written, read_ooxml, sniff_office
from detectors.attachments.rtf import read_rtf
from gateway.message import detect_type
from tests.conftest import make_message
from tests.support import scan_message

DATA = Path(__file__).parent / "data" / "attachments" / "office"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
ODT = "application/vnd.oasis.opendocument.text"
ODS = "application/vnd.oasis.opendocument.spreadsheet"
NHS_NUMBER = 9434765919          # valid check digit
CUSTOM_PROPS_TYPE = "application/vnd.openxmlformats-officedocument.custom-properties+xml"
CUSTOM_PROPS_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships/custom-properties"


def read(name: str, data: bytes, declared: str = "application/octet-stream") -> tuple[str, list]:
    """The text read from one attachment (libmagic types it), and the reports for it and its members."""
    texts, reports = read_attachments([ReadFile(name, data, declared)], Limits(), detect_type)
    return "\n".join(t for _, t in texts), reports


def saved(document) -> bytes:  # type: ignore[no-untyped-def]
    buf = io.BytesIO()
    document.save(buf) if not hasattr(document, "write") else document.write(buf)
    return buf.getvalue()


def rewritten(package: bytes, replace: dict[str, bytes] = {}, add: dict[str, bytes] = {}) -> bytes:  # noqa: B006
    """The zip package with parts replaced or added, in the same order, as a tool would save it."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(package)) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info.filename, replace.get(info.filename, zin.read(info)))
        for name, data in add.items():
            zout.writestr(name, data)
    return out.getvalue()


def with_custom_properties(package: bytes, custom_xml: bytes) -> bytes:
    """python-docx writes no docProps/custom.xml: add it as Word does (part, content type, relationship)."""
    with zipfile.ZipFile(io.BytesIO(package)) as z:
        types, rels = z.read("[Content_Types].xml"), z.read("_rels/.rels")
    types = types.replace(b"</Types>", f'<Override PartName="/docProps/custom.xml" ContentType="{CUSTOM_PROPS_TYPE}"/>'
                                       "</Types>".encode())
    rels = rels.replace(b"</Relationships>", f'<Relationship Id="rIdCustom" Type="{CUSTOM_PROPS_REL}" '
                                             'Target="docProps/custom.xml"/></Relationships>'.encode())
    return rewritten(package, {"[Content_Types].xml": types, "_rels/.rels": rels}, {"docProps/custom.xml": custom_xml})


# ----------------------------------------------------------------------------- documents


def referral_docx(label: bool = True) -> bytes:
    d = docx.Document()
    d.core_properties.title = "Referral"
    d.core_properties.subject = "Adult social care"
    d.core_properties.keywords = "referral; safeguarding"
    d.core_properties.author = "Jane Doe"
    section = d.sections[0]
    section.header.paragraphs[0].text = "Adult Social Care - referral form"
    section.footer.paragraphs[0].text = "Page footer: keep with the case file"
    intro = d.add_paragraph("The client below was referred on Tuesday.")
    d.add_comment(intro.runs, text="Check the NI number with the client", author="Jane Doe", initials="JD")
    grid = d.add_table(rows=3, cols=3)
    for r, row in enumerate([["Name", "NI number", "Note"], ["Jo Bloggs", "AB123456C", 'said "urgent"'],
                             ["Sam Smith", "", "no number yet"]]):
        for c, value in enumerate(row):
            grid.cell(r, c).text = value
    d.add_paragraph("End of referral.")
    data = saved(d)
    if not label:
        return data
    data = rewritten(data, add={"docMetadata/LabelInfo.xml": (DATA / "label-info.xml").read_bytes()})
    return with_custom_properties(data, (DATA / "custom-label.xml").read_bytes())


def label_only_docx() -> bytes:
    """A document whose only marking is its sensitivity label."""
    d = docx.Document()
    d.add_paragraph("Notes of the budget meeting. Nothing else to report.")
    return with_custom_properties(saved(d), (DATA / "custom-label.xml").read_bytes())


def staff_xlsx(rows: int = 40) -> bytes:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "Patients"
    ws.append(["Name", "NHS number", "Date of birth", "Balance"])
    for i in range(rows):
        ws.append([f"Patient {i}", NHS_NUMBER if i % 2 else float(NHS_NUMBER), datetime.date(1980, 3, 1), 12.5])
    ws["F2"] = "a far cell"
    ws["A2"].comment = Comment("Moved from the old list, NI AB123456C", "Jane Doe")
    ws.oddHeader.center.text = "OFFICIAL-SENSITIVE"
    ws.oddFooter.right.text = "Printed for the case review"
    second = wb.create_sheet("Notes")
    second["B3"] = "see the first sheet"
    return saved(wb)


def marked_pptx() -> bytes:
    """A marking on the slide master (every slide shows it), a table and speaker notes."""
    prs = pptx.Presentation()
    slide = prs.slides.add_slide(prs.slide_layouts[1])
    slide.shapes.title.text = "Case review"
    slide.placeholders[1].text = "Progress since the last review"
    rows = slide.shapes.add_table(2, 2, Inches(1), Inches(4), Inches(6), Inches(1)).table
    for r, row in enumerate([["Name", "NI number"], ["Jo Bloggs", "AB123456C"]]):
        for c, value in enumerate(row):
            rows.cell(r, c).text = value
    slide.notes_slide.notes_text_frame.text = "Mention the complaint"
    banner = slide.shapes.add_textbox(Inches(0), Inches(0), Inches(3), Inches(0.5))
    banner.text_frame.text = "OFFICIAL-SENSITIVE"
    prs.slide_master.shapes._spTree.append(banner._element)     # python-pptx cannot add to a master
    return saved(prs)


def referral_odt() -> bytes:
    doc = OpenDocumentText()
    doc.meta.addElement(dc.Title(text="Referral"))
    doc.meta.addElement(meta.Keyword(text="safeguarding"))
    doc.meta.addElement(meta.UserDefined(name="Department", text="Adult Social Care"))
    layout = style.PageLayout(name="pm1")
    doc.automaticstyles.addElement(layout)
    page = style.MasterPage(name="Standard", pagelayoutname=layout)
    header = style.Header()
    header.addElement(text.P(text="OFFICIAL-SENSITIVE"))
    page.addElement(header)
    footer = style.Footer()
    footer.addElement(text.P(text="Keep with the case file"))
    page.addElement(footer)
    doc.masterstyles.addElement(page)
    doc.text.addElement(text.H(outlinelevel=1, text="Referral"))
    para = text.P(text="Client NI number:")
    para.addElement(text.S(c=2))
    para.addText("AB123456C")
    doc.text.addElement(para)
    grid = table.Table(name="Contacts")
    for row in [["Name", "Phone"], ["Jo Bloggs", "01632 960001"]]:
        tr = table.TableRow()
        for value in row:
            cell = table.TableCell(valuetype="string")
            cell.addElement(text.P(text=value))
            tr.addElement(cell)
        grid.addElement(tr)
    doc.text.addElement(grid)
    return saved(doc)


def patients_ods() -> bytes:
    doc = OpenDocumentSpreadsheet()
    doc.meta.addElement(dc.Title(text="Clinic list"))
    sheet = table.Table(name="Clinic")
    header = table.TableRow()
    for value in ("Name", "NHS number"):
        cell = table.TableCell(valuetype="string")
        cell.addElement(text.P(text=value))
        header.addElement(cell)
    sheet.addElement(header)
    for repeat in (1, 3):
        tr = table.TableRow(numberrowsrepeated=repeat) if repeat > 1 else table.TableRow()
        name = table.TableCell(valuetype="string")
        name.addElement(text.P(text="Jo Bloggs"))
        number = table.TableCell(valuetype="float", value=NHS_NUMBER)
        number.addElement(text.P(text="9.43E+09"))        # what a narrow column shows
        tr.addElement(name)
        tr.addElement(number)
        tr.addElement(table.TableCell(numbercolumnsrepeated=1020))   # LibreOffice's empty rest of the row
        sheet.addElement(tr)
    sheet.addElement(table.TableRow(numberrowsrepeated=1048570))      # and its empty rest of the sheet
    doc.spreadsheet.addElement(sheet)
    return saved(doc)


# ----------------------------------------------------------------------------- what is read


def test_docx_body_table_header_footer_and_properties_are_read_with_markings_first() -> None:
    found, reports = read("referral.docx", referral_docx(), DOCX)
    lines = found.splitlines()
    assert reports[0].status is Status.INSPECTED
    assert lines[0] == "Sensitivity label: OFFICIAL SENSITIVE"          # what the marking detector reads first
    assert lines[1:4] == ["Title: Referral", "Subject: Adult social care", "Keywords: referral; safeguarding"]
    assert lines[4] == "Adult Social Care - referral form"                # the page header
    assert "Author: Jane Doe" in lines and "Department: Adult Social Care" in lines
    assert lines[-1] == "Page footer: keep with the case file"            # the page footer last
    assert "Name\tNI number\tNote" in lines                               # header row, then its rows
    assert 'Jo Bloggs\tAB123456C\t"said ""urgent"""' in lines
    assert "Sam Smith\t\tno number yet" in lines
    assert "Check the NI number with the client" in lines                 # a comment
    label = "MSIP_Label_3f2b5c1e-9a4d-4c1b-8e6f-0a1b2c3d4e5f"            # Office 2022+: the label by id only
    site = "6a7b8c9d-0e1f-4a2b-9c3d-4e5f6a7b8c9d"
    assert f"{label}_Enabled=true; {label}_SiteId={site}; {label}_Method=Privileged" in lines


def test_xlsx_every_sheet_row_by_row_with_numbers_and_dates_as_a_person_types_them() -> None:
    found, reports = read("patients.xlsx", staff_xlsx(rows=3), XLSX)
    lines = found.splitlines()
    assert reports[0].status is Status.INSPECTED
    assert lines[0] == "OFFICIAL-SENSITIVE"                               # the sheet's page header
    assert lines[-1] == "Printed for the case review"
    start = lines.index("Sheet: Patients")
    assert lines[start + 1] == "Name\tNHS number\tDate of birth\tBalance\t\t"   # padded to the widest row
    assert lines[start + 2] == "Patient 0\t9434765919\t01/03/1980\t12.5\t\ta far cell"
    assert lines[start + 3] == "Patient 1\t9434765919\t01/03/1980\t12.5\t\t"    # an int and a float alike
    assert "Moved from the old list, NI AB123456C" in found                    # the cell comment
    assert "Sheet: Notes" in lines and "\tsee the first sheet" in lines


@pytest.mark.parametrize(("stored", "typed"), [
    ("9434765919", "9434765919"), ("9.434765919E9", "9434765919"), ("9434765919.0", "9434765919"),
    ("12.5", "12.5"), ("1.5E-3", "0.0015"), ("-4", "-4"), ("1E+300", "1E+300"), ("#N/A", "#N/A"),
])
def test_a_stored_number_is_written_as_a_person_types_it(stored: str, typed: str) -> None:
    assert number_as_written(stored) == typed


def test_pptx_slides_tables_notes_and_a_master_banner_are_read() -> None:
    found, _ = read("review.pptx", marked_pptx(), PPTX)
    lines = found.splitlines()
    assert "OFFICIAL-SENSITIVE" in lines[:5]                    # the master's banner, with the page headers
    assert not any("Click to edit" in line for line in lines)   # the master's placeholders are not text
    assert "Case review" in lines and "Progress since the last review" in lines
    assert "Name\tNI number" in lines and "Jo Bloggs\tAB123456C" in lines
    assert "Mention the complaint" in lines


def test_odt_text_tables_header_footer_and_meta_are_read() -> None:
    found, reports = read("referral.odt", referral_odt(), ODT)
    lines = found.splitlines()
    assert reports[0].detected_type == ODT and reports[0].status is Status.INSPECTED
    assert lines[:3] == ["Title: Referral", "Keywords: safeguarding", "OFFICIAL-SENSITIVE"]
    assert "Client NI number:  AB123456C" in lines
    assert "Name\tPhone" in lines and "Jo Bloggs\t01632 960001" in lines
    assert lines[-1] == "Keep with the case file"


def test_ods_rows_repeat_and_a_whole_number_is_read_in_full_not_as_shown() -> None:
    started = time.monotonic()
    found, reports = read("clinic.ods", patients_ods(), ODS)
    assert time.monotonic() - started < 2          # a million repeated empty rows cost nothing
    assert reports[0].status is Status.INSPECTED
    rows = found.splitlines()
    assert rows[rows.index("Sheet: Clinic") + 1:] == ["Name\tNHS number"] + ["Jo Bloggs\t9434765919"] * 4


def test_rtf_text_code_pages_unicode_tables_comments_and_info_are_read() -> None:
    found, _ = read("referral.rtf", (DATA / "referral.rtf").read_bytes(), "application/rtf")
    lines = found.splitlines()
    assert lines[:3] == ["Sensitivity label: OFFICIAL SENSITIVE", "Title: Referral for Zoë Brontë",
                         "Subject: Adult social care"]
    assert "OFFICIAL-SENSITIVE" in lines                                  # the page header
    assert "Café crème– £5 € 10 and naïve Привет" in lines                # cp1252, \uN, a Cyrillic font
    assert "Client NI number: AB123456C" in lines
    assert "Name\tNHS number" in lines and "Jo Bloggs\t943 476 5919" in lines
    assert "Check the date of birth" in lines                             # a comment
    assert "council website" in lines and "hidden-instruction" not in found and "89504e47" not in found


def test_a_workbook_embedded_in_a_document_is_read_as_a_file_inside_it() -> None:
    embedded = {"word/embeddings/Microsoft_Excel_Worksheet.xlsx": staff_xlsx(rows=2)}
    package = rewritten(referral_docx(label=False), add=embedded)
    texts, reports = read_attachments([ReadFile("report.docx", package, DOCX)], Limits(), detect_type)
    inner = dict(texts)["attachment:report.docx/Microsoft_Excel_Worksheet.xlsx"]
    assert "Patient 1\t9434765919" in inner
    assert all(r.status is Status.INSPECTED for r in reports)


# ----------------------------------------------------------------------------- end to end


def test_marked_and_personal_office_attachments_are_found_where_they_are_and_rejected(tmp_path: Path) -> None:
    raw = make_message(to=["someone@gmail.com"], attachments=[
        ("referral.docx", referral_docx(label=False), DOCX),
        ("budget.docx", label_only_docx(), DOCX),
        ("clinic.xlsx", staff_xlsx(), XLSX),
        ("review.pptx", marked_pptx(), PPTX),
        ("referral.odt", referral_odt(), ODT),
        ("clinic.ods", patients_ods(), ODS),
        ("referral.rtf", (DATA / "referral.rtf").read_bytes(), "application/rtf"),
    ])
    record = scan_message(tmp_path, raw)
    found = {(f["detector"], f["location"]) for f in record["findings"]}
    assert {
        ("uk_nino", "attachment:referral.docx"),
        ("protective_marking", "attachment:budget.docx"),         # its sensitivity label, nothing else
        ("uk_nhs_number", "attachment:clinic.xlsx"),              # numeric cells under "NHS number"
        ("protective_marking", "attachment:clinic.xlsx"),         # the sheet's page header
        ("protective_marking", "attachment:review.pptx"),         # the slide master's banner
        ("uk_nino", "attachment:review.pptx"),
        ("protective_marking", "attachment:referral.odt"),        # the page header in styles.xml
        ("uk_nino", "attachment:referral.odt"),
        ("uk_nhs_number", "attachment:clinic.ods"),
        ("protective_marking", "attachment:referral.rtf"),
        ("uk_nino", "attachment:referral.rtf"),
    } <= found
    assert ("protective_marking", "attachment:referral.docx") not in found
    assert record["verdict"] == "reject"
    assert record["recipients"][0]["action"] == "reject"


# ----------------------------------------------------------------------------- types, damage and hostile input


def test_a_spreadsheet_named_as_text_is_still_read_as_a_spreadsheet() -> None:
    found, reports = read("notes.txt", staff_xlsx(rows=2), "text/plain")
    assert reports[0].detected_type == XLSX and reports[0].disguised
    assert "Patient 1\t9434765919\t01/03/1980" in found


def test_office_files_libmagic_calls_a_plain_zip_are_named_by_their_content() -> None:
    odt = referral_odt()
    deflated = rewritten(odt)                      # mimetype compressed: libmagic sees only a zip
    assert detect_type(deflated) == "application/zip"
    assert sniff_office(deflated) == ODT
    document = referral_docx(label=False)
    types = zipfile.ZipFile(io.BytesIO(document)).read("[Content_Types].xml").replace(
        b"application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml",
        b"application/vnd.ms-word.document.macroEnabled.main+xml")
    docm = rewritten(document, {"[Content_Types].xml": types})
    assert detect_type(docm) == DOCX                                 # libmagic cannot tell a .docm
    assert sniff_office(docm) == "application/vnd.ms-word.document.macroEnabled.12"
    plain = io.BytesIO()
    with zipfile.ZipFile(plain, "w") as z:
        z.writestr("notes.txt", "hello")
    assert sniff_office(plain.getvalue()) is None
    assert sniff_office(b"not a zip") is None


def test_a_truncated_docx_could_not_be_inspected() -> None:
    data = referral_docx()
    _, reports = read("referral.docx", data[: len(data) // 2], DOCX)
    assert reports[0].detected_type == DOCX
    assert reports[0].status is Status.INCOMPLETE and "damaged or unreadable" in reports[0].reason


def test_malformed_xml_in_a_docx_could_not_be_inspected() -> None:
    broken = rewritten(referral_docx(), {"word/document.xml": b"<w:document><w:body><w:p>"})
    _, reports = read("referral.docx", broken, DOCX)
    assert reports[0].status is Status.INCOMPLETE and "not well-formed XML" in reports[0].reason


def test_a_damaged_page_header_leaves_the_rest_read_and_names_what_was_left_out() -> None:
    document = referral_docx()
    header = next(n for n in zipfile.ZipFile(io.BytesIO(document)).namelist() if n.startswith("word/header"))
    found, reports = read("referral.docx", rewritten(document, {header: b"<w:hdr><w:p>"}), DOCX)
    assert "Jo Bloggs\tAB123456C" in found and "referral form" not in found
    assert reports[0].status is Status.INCOMPLETE and header in reports[0].reason


def test_a_billion_laughs_part_is_refused_before_any_entity_is_expanded() -> None:
    hostile = rewritten(referral_docx(), {"word/document.xml": (DATA / "billion-laughs.xml").read_bytes()})
    started = time.monotonic()
    _, reports = read("referral.docx", hostile, DOCX)
    assert time.monotonic() - started < 2
    assert reports[0].status is Status.INCOMPLETE and "declares a DTD" in reports[0].reason


def test_a_compression_bomb_part_hits_the_budget() -> None:
    ns = 'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
    bomb = (f"<w:document {ns}><w:body><w:p><w:r><w:t>".encode() + b" " * 40_000_000
            + b"</w:t></w:r></w:p></w:body></w:document>")
    hostile = rewritten(referral_docx(), {"word/document.xml": bomb})
    assert len(hostile) < 200_000
    _, reports = read("referral.docx", hostile, DOCX)
    assert reports[0].status is Status.INCOMPLETE and "compression bomb" in reports[0].reason


def test_an_encrypted_opendocument_is_reported_as_encrypted() -> None:
    manifest = (b'<?xml version="1.0" encoding="UTF-8"?><manifest:manifest '
                b'xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0" manifest:version="1.2">'
                b'<manifest:file-entry manifest:full-path="/" manifest:media-type="' + ODT.encode() + b'"/>'
                b'<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml">'
                b'<manifest:encryption-data manifest:checksum-type="SHA1/1K" manifest:checksum="AAAA">'
                b'<manifest:algorithm manifest:algorithm-name="Blowfish CFB" manifest:initialisation-vector="AAAA"/>'
                b"</manifest:encryption-data></manifest:file-entry></manifest:manifest>")
    package = io.BytesIO()
    with zipfile.ZipFile(package, "w") as z:
        z.writestr("mimetype", ODT)                                   # stored, first: as LibreOffice writes it
        z.writestr("content.xml", bytes(range(256)) * 8, zipfile.ZIP_DEFLATED)
        z.writestr("META-INF/manifest.xml", manifest, zipfile.ZIP_DEFLATED)
    _, reports = read("secret.odt", package.getvalue(), ODT)
    assert reports[0].detected_type == ODT
    assert reports[0].status is Status.ENCRYPTED and reports[0].reason == "OpenDocument file is password-protected"


def test_hostile_rtf_costs_time_linear_in_its_size() -> None:
    hostile = (b"{\\rtf1 " + b"{" * 200_000 + b"\\" + b"x" * 1_000_000 + b"9" * 100_000 + b" AB123456C"
               + b"}" * 200_000 + b"\\bin999999999 " + b"}")
    started = time.monotonic()
    result = read_rtf(hostile, Budget(Limits()))
    assert time.monotonic() - started < 3
    assert "AB123456C" in result.text


def test_a_10000_row_sheet_is_streamed_in_memory_for_its_text_not_its_xml() -> None:
    wb = openpyxl.Workbook(write_only=True)
    ws = wb.create_sheet("Patients")
    ws.append(["Name", "NHS number", "Clinic"])
    for i in range(10_000):
        ws.append([f"Patient {i}", NHS_NUMBER, "Riverside"])
    data = saved(wb)
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        xml_size = z.getinfo("xl/worksheets/sheet1.xml").file_size
    tracemalloc.start()
    try:
        result = read_ooxml(data, Budget(Limits()))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    lines = result.text.splitlines()
    assert lines[lines.index("Sheet: Patients") + 1] == "Name\tNHS number\tClinic"
    assert lines[-1] == "Patient 9999\t9434765919\tRiverside"
    assert peak < 50 * 1024 * 1024
    # The text it returns (lines, then joined) and a chunk of XML: less than the XML itself,
    # where a parsed object model of the sheet costs many times it.
    assert peak < 4 * len(result.text) + (1 << 20) < xml_size * 2
