"""Protective markings: every form POLICY.md lists, and the prose they must not be taken for.

Vectors live in tests/data/markings/, one `expected<TAB>text` per line, and go through
the message model (so normalisation applies) before the detector reads them.
"""

from __future__ import annotations

import re
import time
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path

import pytest

from detectors.base import Category, MarkingLevel, Signal
from detectors.markings.protective_marking import ProtectiveMarkingDetector, marking_level
from gateway.message import Envelope, Message, parse
from tests.conftest import make_message

DATA = Path(__file__).parent / "data" / "markings"
TENANT = "5a9d3f7e-1c2b-4e8f-9a6d-0b1c2d3e4f50"
OTHER_TENANT = "0f1e2d3c-4b5a-4697-8877-665544332211"
LABEL = "d1e2f3a4-b5c6-4d7e-8f90-a1b2c3d4e5f0"
PROSE = [
    "Thank you for coming to the meeting on Tuesday.",
    "The notes from the discussion are set out below for everyone to check.",
    "Actions were agreed for each of the partner agencies.",
    "We will meet again in four weeks to review progress.",
    "Please send any corrections to the team mailbox by Friday.",
    "The room is booked from ten until twelve.",
    "Refreshments will be provided.",
]
SIGNATURE = ["Kind regards,", "Jane Doe", "Children's Services", "Council Offices, High Street"]


def vectors(name: str) -> list[tuple[str, str]]:
    rows = []
    for line in (DATA / name).read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            expected, text = line.split("\t", 1)
            rows.append((expected, re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), text)))
    return rows


def model(raw: bytes) -> Message:
    return parse(raw, Envelope("jane.doe@council.example.gov.uk", ("x@supplier.example.com",)))


def level_at(message: Message, location: str, detector: ProtectiveMarkingDetector | None = None) -> str:
    findings = [f for f in (detector or ProtectiveMarkingDetector()).detect(message) if f.location == location]
    assert len(findings) <= 1
    return findings[0].level.value if findings else "none"


def html_message(markup: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = "jane.doe@council.example.gov.uk"
    msg["To"] = "x@supplier.example.com"
    msg["Subject"] = "Minutes of the meeting"
    msg.set_content("See the HTML part.")
    msg.add_alternative(markup, subtype="html")
    return msg.as_bytes(policy=SMTP)


# Subjects


@pytest.mark.parametrize("expected,subject", vectors("subjects.txt"))
def test_subject_is_a_marking_only_when_written_as_one(expected: str, subject: str) -> None:
    assert level_at(model(make_message(subject=subject)), "subject") == expected


@pytest.mark.parametrize("expected,subject", vectors("subjects.txt"))
def test_marking_level_reads_a_subject_as_the_detector_does(expected: str, subject: str) -> None:
    level = marking_level(subject)
    assert (level.value if level else "none") == expected


def test_a_folded_long_subject_is_read_as_one_line() -> None:
    subject = "RE: case conference for the family at the address we discussed on Tuesday - OFFICIAL SENSITIVE"
    raw = make_message(subject=subject)
    assert b"\r\n " in raw.split(b"\r\n\r\n", 1)[0]   # the writer folded it
    assert level_at(model(raw), "subject") == "OFFICIAL-SENSITIVE"


# Bodies and attachments


@pytest.mark.parametrize("expected,line", vectors("body_lines.txt"))
def test_first_line_of_the_body_is_a_marking_position(expected: str, line: str) -> None:
    body = "\n\n".join([line, "Hello,", *PROSE, "\n".join(SIGNATURE)]) + "\n"
    assert level_at(model(make_message(body=body)), "body") == expected


@pytest.mark.parametrize("expected,line", vectors("body_lines.txt"))
def test_last_line_of_the_body_after_the_signature_is_a_marking_position(expected: str, line: str) -> None:
    body = "\n\n".join(["Hello,", *PROSE, "\n".join(SIGNATURE), line]) + "\n"
    assert level_at(model(make_message(body=body)), "body") == expected


@pytest.mark.parametrize("expected,line", vectors("body_lines.txt"))
def test_first_line_of_an_attachment_is_read_like_a_body(expected: str, line: str) -> None:
    text = "\n".join([line, "Case notes", *PROSE]) + "\n"
    raw = make_message(attachments=[("case-notes.txt", text.encode("utf-8"), "text/plain")])
    message = model(raw)
    assert level_at(message, "attachment:case-notes.txt") == expected
    assert level_at(message, "body") == "none"


@pytest.mark.parametrize("expected,line", vectors("body_middle.txt"))
def test_middle_of_the_body_is_read_only_for_lines_that_are_not_prose(expected: str, line: str) -> None:
    body = "\n\n".join(["Hello,", *PROSE, line, *PROSE, "\n".join(SIGNATURE)]) + "\n"
    assert level_at(model(make_message(body=body)), "body") == expected


def test_a_marking_in_the_first_paragraph_of_an_html_part_is_found() -> None:
    markup = "<html><body><p><b>OFFICIAL-SENSITIVE</b></p>" + "".join(f"<p>{p}</p>" for p in PROSE) + "</body></html>"
    assert level_at(model(html_message(markup)), "body") == "OFFICIAL-SENSITIVE"


def test_a_page_footer_in_the_middle_of_a_document_is_found() -> None:
    page = "\n".join(PROSE)
    text = f"Case review\n{page}\n\x0cOFFICIAL-SENSITIVE: PERSONAL\nPage 1 of 3\n\x0c{page}\n{page}\nEnd of report\n"
    raw = make_message(attachments=[("review.txt", text.encode(), "text/plain")])
    assert level_at(model(raw), "attachment:review.txt") == "OFFICIAL-SENSITIVE"


def test_how_many_edge_lines_are_read_is_configurable() -> None:
    body = "\n".join(["Hello,", "Thank you.", "Official Sensitive - Personal", *PROSE]) + "\n"
    message = model(make_message(body=body))
    assert level_at(message, "body") == "OFFICIAL-SENSITIVE"
    assert level_at(message, "body", ProtectiveMarkingDetector(edge_lines=2)) == "none"


# X-Protective-Marking


@pytest.mark.parametrize("expected,value", vectors("x_protective_marking.txt"))
def test_x_protective_marking_counts_in_a_trusted_namespace_only(expected: str, value: str) -> None:
    message = model(make_message(headers={"X-Protective-Marking": value}))
    assert level_at(message, "header:X-Protective-Marking") == expected


def test_trusted_namespaces_are_configurable() -> None:
    message = model(make_message(headers={"X-Protective-Marking": "VER=2018.1, NS=example.gov.uk, SEC=SECRET"}))
    assert level_at(message, "header:X-Protective-Marking") == "none"
    trusting = ProtectiveMarkingDetector(namespaces=["gov.uk", "Example.Gov.UK"])
    assert level_at(message, "header:X-Protective-Marking", trusting) == "SECRET"


def test_the_highest_of_several_x_protective_marking_headers_is_reported() -> None:
    raw = make_message(headers={"X-Protective-Marking": "VER=2018.1, NS=gov.uk, SEC=OFFICIAL"})
    raw = raw.replace(b"X-Protective-Marking:", b"X-Protective-Marking: VER=2018.1, NS=gov.uk, SEC=SECRET\r\n"
                                                b"X-Protective-Marking:", 1)
    (finding,) = ProtectiveMarkingDetector().detect(model(raw))
    assert (finding.location, finding.level) == ("header:X-Protective-Marking", MarkingLevel.SECRET)


# Microsoft sensitivity labels


def msip_value(name: str, label: str = LABEL, tenant: str = TENANT, enabled: str = "true") -> str:
    fields = {"Enabled": enabled, "SetDate": "2024-03-04T09:15:02Z", "Method": "Standard", "Name": name,
              "SiteId": tenant, "ActionId": "0c4b2a19-7d3e-4f61-8a2b-9e8d7c6b5a40", "ContentBits": "0"}
    return "; ".join(f"MSIP_Label_{label}_{key}={value}" for key, value in fields.items())


def with_header(raw: bytes, name: str, value: str) -> bytes:
    """`raw` with a header written verbatim, folded after each ';' as Outlook folds msip_labels."""
    folded = value.replace(";", ";\r\n ").rstrip()
    return f"{name}: {folded}\r\n".encode() + raw


@pytest.mark.parametrize("expected,value", vectors("msip_labels.txt"))
def test_an_enabled_sensitivity_label_is_read_by_its_name(expected: str, value: str) -> None:
    assert level_at(model(with_header(make_message(), "msip_labels", value)), "header:msip_labels") == expected


def test_a_sensitivity_label_header_written_as_encoded_words_is_read() -> None:
    raw = make_message(headers={"msip_labels": msip_value("OFFICIAL-SENSITIVE").replace("; ", ";")})
    assert b"=?utf-8?" in raw                              # the writer encoded the long unbroken value
    assert level_at(model(raw), "header:msip_labels") == "OFFICIAL-SENSITIVE"


def test_the_label_table_maps_a_label_by_guid_within_its_tenant() -> None:
    detector = ProtectiveMarkingDetector(msip_labels={TENANT: {LABEL: "OFFICIAL-SENSITIVE"}})
    labelled = model(make_message(headers={"msip_labels": msip_value("Personal")}))
    assert level_at(labelled, "header:msip_labels", detector) == "OFFICIAL-SENSITIVE"
    assert level_at(labelled, "header:msip_labels") == "none"       # without the table, the name says nothing


def test_the_label_table_wins_over_the_name_in_either_direction() -> None:
    detector = ProtectiveMarkingDetector(msip_labels={TENANT: {LABEL: "OFFICIAL"}})
    message = model(make_message(headers={"msip_labels": msip_value("OFFICIAL-SENSITIVE")}))
    assert level_at(message, "header:msip_labels", detector) == "none"


def test_the_same_label_guid_in_another_tenant_is_read_by_its_name() -> None:
    detector = ProtectiveMarkingDetector(msip_labels={TENANT: {LABEL: "SECRET"}})
    message = model(make_message(headers={"msip_labels": msip_value("OFFICIAL-SENSITIVE", tenant=OTHER_TENANT)}))
    assert level_at(message, "header:msip_labels", detector) == "OFFICIAL-SENSITIVE"


def test_label_guids_match_in_any_case_and_with_braces() -> None:
    detector = ProtectiveMarkingDetector(msip_labels={"{" + TENANT.upper() + "}": {LABEL.upper(): "TOP SECRET"}})
    message = model(make_message(headers={"msip_labels": msip_value("General")}))
    assert level_at(message, "header:msip_labels", detector) == "TOP SECRET"


def test_a_disabled_label_never_counts_even_when_the_table_maps_it() -> None:
    detector = ProtectiveMarkingDetector(msip_labels={TENANT: {LABEL: "SECRET"}})
    message = model(make_message(headers={"msip_labels": msip_value("SECRET", enabled="false")}))
    assert level_at(message, "header:msip_labels", detector) == "none"


def test_older_clients_one_header_per_label_field_are_read() -> None:
    headers = {
        f"msip_label_{LABEL}_enabled": "true",
        f"msip_label_{LABEL}_name": "Official Sensitive - Personal",
        f"msip_label_{LABEL}_siteid": TENANT,
    }
    assert level_at(model(make_message(headers=headers)), "header:msip_labels") == "OFFICIAL-SENSITIVE"


# Findings


def test_one_finding_per_location_at_the_highest_level_found_there() -> None:
    body = "OFFICIAL-SENSITIVE\n\nHello,\n\n" + "\n".join(PROSE) + "\n\nSECRET\n"
    raw = make_message(
        subject="OFFICIAL-SENSITIVE: SECRET - plans",
        body=body,
        attachments=[("a.txt", b"TOP SECRET\nnotes\n", "text/plain"), ("b.txt", b"notes\n", "text/plain")],
        headers={"X-Protective-Marking": "VER=2018.1, NS=gov.uk, SEC=OFFICIAL-SENSITIVE"},
    )
    found = {(f.location, f.level.value, f.count) for f in ProtectiveMarkingDetector().detect(model(raw))}
    assert found == {
        ("subject", "SECRET", 1),
        ("body", "SECRET", 1),
        ("attachment:a.txt", "TOP SECRET", 1),
        ("header:X-Protective-Marking", "OFFICIAL-SENSITIVE", 1),
    }


def test_a_finding_names_the_level_and_never_the_marked_text() -> None:
    raw = make_message(subject="OFFICIAL-SENSITIVE: referral for Poppy Smith", body="OFFICIAL-SENSITIVE\nPoppy is at risk.\n")
    for finding in ProtectiveMarkingDetector().detect(model(raw)):
        assert finding.detector == "protective_marking" and finding.category is Category.PROTECTIVE_MARKING
        assert finding.signal is Signal.MARKING and finding.kind == "OFFICIAL-SENSITIVE protective marking"
        assert "Poppy" not in repr(finding) and "referral" not in repr(finding.to_json())


def test_plain_official_is_never_reported_wherever_it_stands() -> None:
    raw = make_message(
        subject="OFFICIAL: newsletter",
        body="OFFICIAL\n\nHello,\n\nOFFICIAL\n",
        headers={"X-Protective-Marking": "VER=2018.1, NS=gov.uk, SEC=OFFICIAL", "msip_labels": msip_value("OFFICIAL")},
    )
    assert ProtectiveMarkingDetector(msip_labels={TENANT: {LABEL: "OFFICIAL"}}).detect(model(raw)) == []


# Configuration


def test_legacy_markings_are_configurable() -> None:
    message = model(make_message(subject="CONFIDENTIAL: board papers", body="RESTRICTED\n\nHello,\n"))
    assert level_at(message, "subject") == "none"
    assert level_at(message, "body") == "OFFICIAL-SENSITIVE"
    detector = ProtectiveMarkingDetector(legacy={"CONFIDENTIAL": "SECRET"})
    assert level_at(message, "subject", detector) == "SECRET"
    assert level_at(message, "body", detector) == "none"          # RESTRICTED no longer listed


def test_the_default_configuration_is_the_shipped_one() -> None:
    defaults = ProtectiveMarkingDetector()
    explicit = ProtectiveMarkingDetector(
        namespaces=["gov.uk"], msip_labels={}, legacy={"RESTRICTED": "OFFICIAL-SENSITIVE", "PROTECT": "OFFICIAL-SENSITIVE"},
        edge_lines=5,
    )
    raw = make_message(subject="PROTECT - PERSONAL", headers={"X-Protective-Marking": "VER=2018.1, NS=gov.uk, SEC=SECRET"})
    assert defaults.detect(model(raw)) == explicit.detect(model(raw)) != []


@pytest.mark.parametrize(
    "settings,named",
    [
        ({"msip_labels": {"not-a-guid": {LABEL: "SECRET"}}}, "not-a-guid"),
        ({"msip_labels": {TENANT: {"label": "SECRET"}}}, "label"),
        ({"msip_labels": {TENANT: {LABEL: "VERY SECRET"}}}, "VERY SECRET"),
        ({"legacy": {"RESTRICTED": "HUSH"}}, "HUSH"),
        ({"legacy": {"NOT PROTECTIVELY MARKED": "OFFICIAL"}}, "NOT PROTECTIVELY MARKED"),
        ({"namespaces": "gov.uk"}, "namespaces"),
        ({"edge_lines": -1}, "edge_lines"),
    ],
)
def test_unusable_configuration_is_refused_naming_what_is_wrong(settings: dict, named: str) -> None:
    with pytest.raises(ValueError, match=re.escape(named)):
        ProtectiveMarkingDetector(**settings)


# Cost


def test_a_large_attachment_full_of_marking_words_is_read_in_linear_time() -> None:
    rows = "".join(f"{i},official records,secret ingredient,restricted access,SECRET {i}\n" for i in range(60_000))
    one_line = "secret " * 300_000
    raw = make_message(attachments=[("rows.csv", rows.encode(), "text/csv"), ("line.txt", one_line.encode(), "text/plain")])
    message = model(raw)
    started = time.perf_counter()
    ProtectiveMarkingDetector().detect(message)
    assert time.perf_counter() - started < 5.0          # quadratic reading takes minutes here
