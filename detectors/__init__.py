"""Detectors: each finds one kind of thing in a message model. Pure: no I/O, no policy."""

from __future__ import annotations

from typing import TYPE_CHECKING

from detectors.base import Detector

if TYPE_CHECKING:
    from gateway.config import Config


def build_detectors(config: "Config") -> list[Detector]:
    """Every detector the gateway runs, constructed once per process."""
    from detectors.markings.protective_marking import ProtectiveMarkingDetector
    from detectors.personal_data.date_of_birth import DateOfBirthDetector
    from detectors.personal_data.email_address import EmailAddressDetector
    from detectors.personal_data.iban import IbanDetector
    from detectors.personal_data.nhs_number import NhsNumberDetector
    from detectors.personal_data.payment_card import PaymentCardDetector
    from detectors.personal_data.uk_bank_account import BankAccountDetector
    from detectors.personal_data.uk_driving_licence import DrivingLicenceDetector
    from detectors.personal_data.uk_nino import NinoDetector
    from detectors.personal_data.uk_passport import PassportDetector
    from detectors.personal_data.uk_phone import PhoneDetector
    from detectors.personal_data.uk_postcode import PostcodeDetector
    from detectors.structure import StructureDetector

    return [
        NinoDetector(),
        NhsNumberDetector(),
        PaymentCardDetector(),
        BankAccountDetector(),
        IbanDetector(),
        PassportDetector(),
        DrivingLicenceDetector(),
        DateOfBirthDetector(),
        PostcodeDetector(),
        PhoneDetector(),
        EmailAddressDetector(),
        ProtectiveMarkingDetector(),
        StructureDetector(),
    ]
