"""Detectors: each finds one kind of thing in a message model. Pure: no I/O, no policy."""

from __future__ import annotations

from typing import TYPE_CHECKING

from detectors.base import Detector

if TYPE_CHECKING:
    from gateway.config import Config


def build_detectors(config: "Config") -> list[Detector]:
    """Every detector the gateway runs, constructed once per process."""
    from detectors.attachments.findings import AttachmentDetector
    from detectors.markings.protective_marking import ProtectiveMarkingDetector
    from detectors.personal_data.date_of_birth import DateOfBirthDetector
    from detectors.personal_data.email_address import EmailAddressDetector
    from detectors.personal_data.iban import IbanDetector
    from detectors.personal_data.nhs_number import NhsNumberDetector
    from detectors.personal_data.payment_card import PaymentCardDetector
    from detectors.personal_data.person_name import PersonNameDetector
    from detectors.personal_data.special_category import SpecialCategoryDetector
    from detectors.personal_data.uk_bank_account import BankAccountDetector
    from detectors.personal_data.uk_driving_licence import DrivingLicenceDetector
    from detectors.personal_data.uk_nino import NinoDetector
    from detectors.personal_data.uk_passport import PassportDetector
    from detectors.personal_data.uk_phone import PhoneDetector
    from detectors.personal_data.uk_postcode import PostcodeDetector
    from detectors.recipients.exposed import ExposedRecipientsDetector
    from detectors.recipients.forwarding import ForwardingDetector
    from detectors.recipients.greeting import GreetingDetector
    from detectors.recipients.history import RecipientHistoryDetector
    from detectors.recipients.lookalike import LookalikeDetector
    from detectors.structure import StructureDetector

    ner = config.detectors.ner
    org = config.organisation
    recipients: list[Detector] = [
        ForwardingDetector(org.personal_domains),
        ExposedRecipientsDetector(org.internal_domains, config.policy.bcc_threshold),
        GreetingDetector(org.internal_domains),
        LookalikeDetector(org.internal_domains, org.trusted_domains, org.personal_domains,
                          frequent_min=config.history.frequent_min),
    ]
    if config.history.enabled:
        recipients.append(RecipientHistoryDetector(org.internal_domains, config.history.frequent_min))
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
        SpecialCategoryDetector(model=ner.model, max_chars=ner.max_chars, preload=ner.preload,
                                max_unit_chars=config.detectors.special_category.max_unit_chars),
        PersonNameDetector(model=ner.model, max_chars=ner.max_chars, preload=ner.preload,
                           min_rows=config.detectors.person_name.min_rows),
        ProtectiveMarkingDetector(**config.detectors.markings.model_dump()),
        StructureDetector(),
        AttachmentDetector(),
        *recipients,
    ]
