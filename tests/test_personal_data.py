"""The UK personal-data identifiers: one detector per kind, validator beside pattern.

Vectors live in tests/data/personal_data/<kind>.txt: `expected<TAB>message body`,
where `\\n` in the body stands for a line break.
"""

from __future__ import annotations

import email.policy
import json
import time
from email.message import EmailMessage
from functools import lru_cache
from pathlib import Path

import pytest
import regex

from detectors.base import Category, Finding, Strength
from detectors.personal_data.context import ContextWords, table_of
from detectors.personal_data.date_of_birth import DateOfBirthDetector, parse_date
from detectors.personal_data.email_address import EmailAddressDetector, email_addresses
from detectors.personal_data.iban import IBAN_LENGTHS, IbanDetector, is_valid_iban
from detectors.personal_data.nhs_number import NhsNumberDetector, is_valid_nhs_number, nhs_check_digit
from detectors.personal_data.payment_card import (
    CONFIDENCE_IN_CONTEXT,
    CONFIDENCE_WITHOUT_CONTEXT,
    PaymentCardDetector,
    card_issuer,
    is_valid_card_number,
    luhn_valid,
)
from detectors.personal_data.uk_bank_account import (
    BankAccountDetector,
    account_pairs,
    is_plausible_account_number,
    is_plausible_sort_code,
)
from detectors.personal_data.uk_driving_licence import DrivingLicenceDetector, is_valid_driving_licence_number
from detectors.personal_data.uk_passport import PassportDetector, is_plausible_passport_number
from detectors.personal_data.uk_phone import PhoneDetector, phone_numbers
from detectors.personal_data.uk_postcode import PostcodeDetector, is_valid_postcode, normalise_postcode
from gateway.message import Envelope, Message, parse
from tests.conftest import make_message

DATA = Path(__file__).parent / "data" / "personal_data"

# vector file -> (detector class, the name it registers under, strength)
DETECTORS = {
    "nhs_number": (NhsNumberDetector, "uk_nhs_number", Strength.STRONG),
    "payment_card": (PaymentCardDetector, "payment_card", Strength.STRONG),
    "uk_bank_account": (BankAccountDetector, "uk_bank_account", Strength.STRONG),
    "iban": (IbanDetector, "iban", Strength.STRONG),
    "uk_passport": (PassportDetector, "uk_passport", Strength.STRONG),
    "uk_driving_licence": (DrivingLicenceDetector, "uk_driving_licence", Strength.STRONG),
    "date_of_birth": (DateOfBirthDetector, "date_of_birth", Strength.WEAK),
    "uk_postcode": (PostcodeDetector, "uk_postcode", Strength.WEAK),
    "uk_phone": (PhoneDetector, "uk_phone", Strength.WEAK),
    "email_address": (EmailAddressDetector, "email_address", Strength.WEAK),
}
INSTANCES = {kind: cls() for kind, (cls, _, _) in DETECTORS.items()}


def vectors(kind: str) -> list[tuple[str, str]]:
    rows = []
    for line in (DATA / f"{kind}.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            expected, text = line.split("\t", 1)
            assert expected in ("valid", "invalid"), line
            rows.append((expected, text.replace("\\n", "\n")))
    return rows


ALL_VECTORS = [
    pytest.param(kind, expected, text, id=f"{kind}-{expected}-{i}")
    for kind in DETECTORS
    for i, (expected, text) in enumerate(vectors(kind))
]
VALID_VECTORS = [p for p in ALL_VECTORS if p.values[1] == "valid"]


def model(raw: bytes) -> Message:
    return parse(raw, Envelope("jane.doe@council.example.gov.uk", ("x@supplier.example.com",)))


@lru_cache(maxsize=None)
def body(text: str) -> Message:
    """`text` as the body of a message; parsed once per text (messages are immutable)."""
    return model(make_message(body=text, subject="Details"))


def only(findings: list[Finding]) -> Finding:
    assert len(findings) == 1, findings
    return findings[0]


# --- every kind, from its vectors ------------------------------------------------------------


@pytest.mark.parametrize("kind", DETECTORS)
def test_every_strong_kind_has_at_least_twelve_positives_and_twelve_decoys(kind: str) -> None:
    rows = vectors(kind)
    if DETECTORS[kind][2] is Strength.STRONG:
        assert sum(e == "valid" for e, _ in rows) >= 12
        assert sum(e == "invalid" for e, _ in rows) >= 12


@pytest.mark.parametrize("kind,expected,text", ALL_VECTORS)
def test_detector_finds_exactly_the_valid_vectors(kind: str, expected: str, text: str) -> None:
    name = DETECTORS[kind][1]
    findings = [f for f in INSTANCES[kind].detect(body(text)) if f.detector == name]
    assert len(findings) == (1 if expected == "valid" else 0), (text, findings)


@pytest.mark.parametrize("kind,expected,text", VALID_VECTORS)
def test_finding_is_personal_data_of_its_strength_and_never_carries_the_value(kind: str, expected: str, text: str) -> None:
    _, name, strength = DETECTORS[kind]
    finding = only(INSTANCES[kind].detect(body(text)))
    assert finding.detector == name and INSTANCES[kind].name == name
    assert finding.category is Category.PERSONAL_DATA and finding.strength is strength
    assert finding.location == "body" and finding.count == 1
    assert 0.0 < finding.confidence <= 1.0 and finding.kind
    shown = (repr(finding) + json.dumps(finding.to_json())).upper()
    compact = regex.sub(r"(?<=[0-9A-Za-z])[ \-](?=[0-9A-Za-z])", "", text)
    for source in (text, compact):
        for token in regex.findall(r"[\w.@'+/\-]+", source):
            token = token.strip(".,'-/")
            if len(token) >= 4 and (regex.search(r"[0-9@]", token)):
                assert token.upper() not in shown, (token, shown)


# --- NHS numbers -----------------------------------------------------------------------------


def test_nhs_number_validator_is_the_modulus_11_check() -> None:
    assert is_valid_nhs_number("943 476 5919") and is_valid_nhs_number("943-476-5919")
    assert not is_valid_nhs_number("9434765918")
    assert nhs_check_digit("943476591") == 9
    assert nhs_check_digit("526018159") is None      # check digit 10: never issued
    assert not is_valid_nhs_number("1111111111")      # passes the sum, never issued
    assert not is_valid_nhs_number("943476591") and not is_valid_nhs_number("94347659190")


def test_nhs_number_without_context_is_not_a_finding() -> None:
    assert NhsNumberDetector().detect(body("Your order reference is 943 476 5919.")) == []


def test_nhs_number_with_context_is_a_finding() -> None:
    finding = only(NhsNumberDetector().detect(body("Your NHS number is 943 476 5919.")))
    assert finding.kind == "NHS number" and finding.strength is Strength.STRONG


def _table(header: str, rows: list[str]) -> bytes:
    return (header + "\n" + "\n".join(rows) + "\n").encode()


def test_nhs_numbers_in_a_column_headed_nhs_count_however_far_from_the_header() -> None:
    valid = ["9434765919", "4010232137", "4505577104", "0830166130", "1860913903"]
    filler = [f"Person {i},Leeds,,no number yet" for i in range(20)]
    rows = filler + [f"Person {i},Leeds,{n},fine" for i, n in enumerate(valid)]
    raw = make_message(body="Attached.", attachments=[("list.csv", _table("Name,Town,NHS Number,Notes", rows), "text/csv")])
    finding = only(NhsNumberDetector().detect(model(raw)))
    assert finding.location == "attachment:list.csv" and finding.count == len(valid)


def test_checksum_valid_numbers_in_other_columns_of_a_health_table_are_not_nhs_numbers() -> None:
    filler = [f"Item {i},Stationery,1" for i in range(20)]
    rows = filler + ["Item A,9434765919,2", "Item B,4010232137,3"]
    raw = make_message(body="Attached.", attachments=[("orders.csv", _table("Item,Order ref,NHS trust count", rows), "text/csv")])
    assert NhsNumberDetector().detect(model(raw)) == []


def test_the_same_nhs_number_written_three_ways_counts_once() -> None:
    finding = only(NhsNumberDetector().detect(body("NHS no 943 476 5919, NHS no 943-476-5919, NHS no 9434765919")))
    assert finding.count == 1


def test_distinct_nhs_numbers_are_counted_per_location() -> None:
    raw = make_message(
        body="Patient NHS numbers: 943 476 5919 and 401 023 2137.",
        attachments=[("p.txt", b"Patient NHS number 450 557 7104\n", "text/plain")],
    )
    findings = {f.location: f.count for f in NhsNumberDetector().detect(model(raw))}
    assert findings == {"body": 2, "attachment:p.txt": 1}


def test_the_same_number_in_the_plain_and_html_versions_of_the_body_counts_once() -> None:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "jane@council.example.gov.uk", "x@example.com", "Patient"
    msg.set_content("Patient NHS number 943 476 5919\n")
    msg.add_alternative("<p>Patient <b>NHS number</b> 943&nbsp;476&nbsp;5919</p>", subtype="html")
    finding = only(NhsNumberDetector().detect(model(msg.as_bytes(policy=email.policy.SMTP))))
    assert finding.location == "body" and finding.count == 1


# --- payment cards ---------------------------------------------------------------------------


def test_card_validators_check_luhn_and_issuer_range() -> None:
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert card_issuer("4111111111111111") == "Visa"
    assert card_issuer("5555555555554444") == "Mastercard"
    assert card_issuer("2223000048410010") == "Mastercard"
    assert card_issuer("378282246310005") == "American Express"
    assert card_issuer("1234567890123452") is None
    assert is_valid_card_number("3782 822463 10005")
    assert not is_valid_card_number("79927398713")        # passes Luhn, too short, no issuer


def test_card_without_context_grouped_like_a_card_counts_with_lower_confidence() -> None:
    grouped = only(PaymentCardDetector().detect(body("Please see 4111 1111 1111 1111.")))
    in_context = only(PaymentCardDetector().detect(body("Visa card 4111 1111 1111 1111.")))
    assert grouped.confidence == CONFIDENCE_WITHOUT_CONTEXT < in_context.confidence == CONFIDENCE_IN_CONTEXT


def test_ungrouped_card_number_without_context_is_not_a_finding() -> None:
    assert PaymentCardDetector().detect(body("Reference 4111111111111111 attached.")) == []


def test_card_followed_by_its_expiry_and_security_code_is_found() -> None:
    assert only(PaymentCardDetector().detect(body("card 5555 5555 5555 4444 12/27 123"))).count == 1


def test_distinct_cards_are_counted_whatever_their_separators() -> None:
    text = "Card 4111 1111 1111 1111, card 4111-1111-1111-1111, card 5555555555554444"
    assert only(PaymentCardDetector().detect(body(text))).count == 2


# --- bank accounts ---------------------------------------------------------------------------


def test_bank_validators_reject_one_repeated_digit() -> None:
    assert is_plausible_sort_code("20-00-00") and not is_plausible_sort_code("00-00-00")
    assert is_plausible_account_number("31926819") and not is_plausible_account_number("11111111")
    assert not is_plausible_account_number("123456")


def test_sort_code_alone_is_not_a_finding() -> None:
    assert BankAccountDetector().detect(body("Our sort code is 20-00-00.")) == []


def test_bank_account_counts_distinct_sort_code_and_account_pairs() -> None:
    text = "Sort code 20-00-00 account 31926819.\nSort code 20-00-00 account 31926819.\nSort code 40-47-84 account 31926819."
    assert account_pairs(text) == {("200000", "31926819"), ("404784", "31926819")}
    assert only(BankAccountDetector().detect(body(text))).count == 2


# --- IBAN ------------------------------------------------------------------------------------


def test_iban_validator_checks_mod_97_and_registry_length() -> None:
    assert is_valid_iban("GB82 WEST 1234 5698 7654 32") and is_valid_iban("gb82west12345698765432")
    assert not is_valid_iban("GB82 WEST 1234 5698 7654 33")
    assert not is_valid_iban("GB82 WEST 1234 5698 7654 3")


def test_iban_length_table_holds_the_whole_swift_registry() -> None:
    assert len(IBAN_LENGTHS) >= 89
    assert IBAN_LENGTHS["GB"] == 22 and IBAN_LENGTHS["NO"] == 15 and IBAN_LENGTHS["RU"] == 33
    assert all(15 <= n <= 34 for n in IBAN_LENGTHS.values())


def test_iban_followed_by_a_four_letter_word_is_still_found() -> None:
    assert only(IbanDetector().detect(body("Pay BE68 5390 0754 7034 then tell me."))).count == 1


# --- passports, driving licences, dates of birth ---------------------------------------------


def test_passport_number_without_context_is_not_a_finding() -> None:
    assert is_plausible_passport_number("925076473") and is_plausible_passport_number("AB1234567")
    assert not is_plausible_passport_number("111111111")
    assert PassportDetector().detect(body("Order 925076473 has shipped.")) == []


def test_driving_licence_validator_checks_the_birth_date_in_the_number() -> None:
    assert is_valid_driving_licence_number("MORGA 753116 SM9IJ 35")
    assert is_valid_driving_licence_number("SMITH852196AB9CD")       # 52: a woman born in February
    assert not is_valid_driving_licence_number("MORGA713116SM9IJ")    # month 13
    assert not is_valid_driving_licence_number("MORGA702316SM9IJ")    # 31 February


def test_driving_licence_without_context_is_not_a_finding() -> None:
    assert DrivingLicenceDetector().detect(body("Serial MORGA753116SM9IJ")) == []


def test_date_parser_reads_uk_order_first() -> None:
    assert str(parse_date("01/03/1980")) == "1980-03-01"
    assert str(parse_date("03/25/1980")) == "1980-03-25"
    assert str(parse_date("March 1st, 1980")) == "1980-03-01"
    assert parse_date("31/02/1980") is None


def test_date_without_birth_context_is_not_a_finding() -> None:
    assert DateOfBirthDetector().detect(body("The meeting is on 01/03/2024.")) == []


def test_dates_of_birth_count_distinct_dates_whatever_their_format() -> None:
    text = "DOB 01/03/1980\nDOB 1 March 1980\nDOB 1980-03-01\nDOB 02/03/1980"
    assert only(DateOfBirthDetector().detect(body(text))).count == 2


# --- weak signals ----------------------------------------------------------------------------


def test_postcode_validator_normalises_case_and_space() -> None:
    assert normalise_postcode("sw1a1aa") == "SW1A 1AA" and is_valid_postcode("GIR 0AA")
    assert not is_valid_postcode("SW1A 1CA")


def test_postcodes_count_distinct_normalised_values() -> None:
    finding = only(PostcodeDetector().detect(body("SW1A 1AA, sw1a1aa, M1 1AE")))
    assert finding.count == 2 and finding.strength is Strength.WEAK


def test_phone_numbers_count_distinct_e164_values() -> None:
    assert phone_numbers("020 7946 0000 or +44 20 7946 0000 or 0117 496 0123") == {"+442079460000", "+441174960123"}
    assert only(PhoneDetector().detect(body("020 7946 0000, +44 (0)20 7946 0000, 07911 123456"))).count == 2


def test_email_addresses_count_distinct_lowercased_values() -> None:
    assert email_addresses("Jane@Example.com, jane@example.com") == {"jane@example.com"}
    assert only(EmailAddressDetector().detect(body("Jane@Example.com, jane@example.com, bob@example.com"))).count == 2


def test_email_addresses_in_the_headers_alone_are_not_a_finding() -> None:
    raw = make_message(body="See you on Tuesday.", to=["a@example.com", "b@example.com"], cc=["c@example.com"])
    assert EmailAddressDetector().detect(model(raw)) == []


# --- the shared context helper ---------------------------------------------------------------


def test_context_words_match_whole_words_only() -> None:
    words = ContextWords(r"gp")
    assert words.has_context("my GP: 123", 8, 11)
    assert not words.has_context("GPS: 123", 5, 8)
    assert not words.has_context("x" * 200 + " GP\n" + "y" * 100 + "\n123", 309, 312)


def test_table_header_names_the_column_of_an_offset() -> None:
    text = 'Name,"NHS, number",Town\n"Smith, Jane",9434765919,Leeds\n'
    table = table_of(text)
    assert table.header_at(text.index("9434")) == "NHS, number"
    assert table.header_at(text.index("Leeds")) == "Town"
    assert table.header_at(text.index("NHS")) is None      # the header itself is in no column


def test_a_sentence_with_commas_does_not_name_the_lines_after_it() -> None:
    text = "We spoke to the hospital, the clinic, and the surgery about it yesterday afternoon.\nA,B,C,D\n"
    assert table_of(text).header_at(text.index("A,B")) is None


# --- speed: no pattern may backtrack badly on hostile text ------------------------------------


def test_every_detector_scans_hostile_text_in_linear_time() -> None:
    # Quadratic backtracking on any of these lines would take many seconds.
    hostile = "\n".join(
        [
            "1 " * 10000,
            "9" * 20000,
            "(" * 10000 + "0",
            "a." * 10000 + "@",
            "GB82 " * 4000,
            "12-34-56 " * 2000,
            "AAAAA" * 4000,
            ",".join(["x"] * 10000),
            "NHS passport licence DOB " + "0" * 10000,
        ]
    )
    message = body(hostile)
    started = time.perf_counter()
    for detector in INSTANCES.values():
        detector.detect(message)
    assert time.perf_counter() - started < 2.0
