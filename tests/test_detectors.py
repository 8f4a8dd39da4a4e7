"""The detectors of the relay core: National Insurance numbers and subject-line markings."""

from __future__ import annotations

from pathlib import Path

import pytest

from detectors.base import Category, MarkingLevel, Strength
from detectors.markings.protective_marking import ProtectiveMarkingDetector, marking_level
from detectors.personal_data.uk_nino import NinoDetector, is_valid_nino
from gateway.message import Envelope, parse
from tests.conftest import make_message

DATA = Path(__file__).parent / "data"


def vectors(name: str) -> list[tuple[str, str]]:
    rows = []
    for line in (DATA / name).read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            expected, text = line.split("\t", 1)
            rows.append((expected, text))
    return rows


def model(raw: bytes):
    return parse(raw, Envelope("jane.doe@council.example.gov.uk", ("x@supplier.example.com",)))


@pytest.mark.parametrize("expected,text", vectors("nino.txt"))
def test_nino_validation_follows_hmrc_rules(expected: str, text: str) -> None:
    assert is_valid_nino(text) is (expected == "valid")


@pytest.mark.parametrize("expected,text", vectors("nino.txt"))
def test_nino_detector_finds_exactly_the_valid_numbers_in_text(expected: str, text: str) -> None:
    findings = NinoDetector().detect(model(make_message(body=f"Her NI number is {text}, thanks.")))
    assert len(findings) == (1 if expected == "valid" else 0)


def test_nino_detector_counts_distinct_numbers_per_location_and_never_carries_the_value() -> None:
    body = "AB123456C and ab 12 34 56 c again, and CE 65 43 21 A.\n"
    (finding,) = NinoDetector().detect(model(make_message(body=body)))
    assert finding.count == 2
    assert finding.location == "body"
    assert finding.category is Category.PERSONAL_DATA and finding.strength is Strength.STRONG
    assert "AB" not in repr(finding.to_json()) and "123456" not in repr(finding)


def test_nino_inside_a_longer_code_is_not_a_finding() -> None:
    body = "Order XAB123456CX and ref 9AB123456C9 are not identifiers.\n"
    assert NinoDetector().detect(model(make_message(body=body))) == []


def test_nino_in_a_text_attachment_is_located_by_attachment_name() -> None:
    raw = make_message(attachments=[("staff.csv", b"name,nino\nA,AB123456C\nB,CE123456A\n", "text/csv")])
    (finding,) = NinoDetector().detect(model(raw))
    assert finding.location == "attachment:staff.csv" and finding.count == 2


@pytest.mark.parametrize("expected,subject", vectors("markings.txt"))
def test_subject_markings(expected: str, subject: str) -> None:
    level = marking_level(subject)
    assert (level.value if level else "none") == expected


def test_marking_in_the_first_line_of_the_body_is_found_and_one_in_the_middle_of_prose_is_not() -> None:
    detector = ProtectiveMarkingDetector()
    top = detector.detect(model(make_message(body="OFFICIAL-SENSITIVE\n\nPlease see the case notes.\n")))
    assert [(f.location, f.level) for f in top] == [("body", MarkingLevel.OFFICIAL_SENSITIVE)]
    middle = "\n".join(["line"] * 5 + ["we discussed what official sensitive means"] + ["line"] * 5)
    assert detector.detect(model(make_message(body=middle))) == []
