"""The default policy of POLICY.md: recipient classes and the rules table."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from detectors.base import Category, Finding, MarkingLevel, Signal, Strength
from gateway.config import load_config
from gateway.decision import Action, RecipientClass
from gateway.message import Envelope, parse
from gateway.policy import Classifier, Policy
from tests.conftest import make_message

DATA = Path(__file__).parent / "data"
RECIPIENTS = {
    "internal": "internal@council.example.gov.uk",
    "trusted": "someone@nhs.net",
    "external": "partner@supplier.example.com",
    "personal": "someone@gmail.com",
}


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory):
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    path.write_text("organisation: {internal_domains: [council.example.gov.uk], trusted_domains: [nhs.net, '*.police.uk']}\n")
    return load_config(path)


def finding(spec: dict) -> Finding:
    return Finding(
        detector=spec["detector"],
        category=Category(spec["category"]),
        kind=spec["detector"],
        location="body",
        count=spec.get("count", 1),
        strength=Strength(spec["strength"]) if "strength" in spec else None,
        signal=Signal(spec["signal"]) if "signal" in spec else None,
        level=MarkingLevel(spec["level"]) if "level" in spec else None,
        recipients=tuple(spec.get("recipients", ())),
    )


ROWS = yaml.safe_load((DATA / "policy_table.yaml").read_text())


@pytest.mark.parametrize("row", ROWS, ids=[f"{i}-{r['rule']}" for i, r in enumerate(ROWS)])
def test_default_rules_give_each_class_the_action_of_policy_md(config, row: dict) -> None:
    attachments = [("report.bin", b"\x00\x01", "application/octet-stream")] if row.get("attachment") else []
    message = parse(make_message(attachments=attachments), Envelope("jane@council.example.gov.uk",
                                                                    tuple(RECIPIENTS.values())))
    decision = Policy(config.organisation, config.policy).decide(message, [finding(f) for f in row["findings"]])
    got = {r.rclass.value: r.action.value for r in decision.recipients}
    assert got == row["expect"]
    if row["rule"] != "none":
        assert row["rule"] in decision.rules


@pytest.mark.parametrize(
    "address,expected",
    [
        ("a@council.example.gov.uk", RecipientClass.INTERNAL),
        ("a@COUNCIL.example.gov.uk", RecipientClass.INTERNAL),
        ("a@nhs.net", RecipientClass.TRUSTED),
        ("a@met.police.uk", RecipientClass.TRUSTED),
        ("a@police.uk", RecipientClass.TRUSTED),
        ("a@notpolice.uk", RecipientClass.EXTERNAL),
        ("a@gmail.com", RecipientClass.PERSONAL),
        ("a@mail.gmail.com", RecipientClass.EXTERNAL),
        ("a@supplier.example.com", RecipientClass.EXTERNAL),
    ],
)
def test_recipient_classes(config, address: str, expected: RecipientClass) -> None:
    assert Classifier(config.organisation).classify(address) is expected


def test_strictest_action_wins_and_release_route_remembers_tls(config) -> None:
    message = parse(make_message(), Envelope("jane@council.example.gov.uk", ("gp@nhs.net",)))
    findings = [finding({"detector": "uk_nino", "category": "personal_data", "strength": "strong", "count": 40})]
    (decision,) = Policy(config.organisation, config.policy).decide(message, findings).recipients
    assert decision.action is Action.QUARANTINE
    assert decision.rules == ("personal-data", "bulk-personal-data")
    assert decision.release_route == "secure"


def test_disclaimer_is_due_only_when_a_non_internal_recipient_gets_a_copy(config) -> None:
    policy = Policy(config.organisation, config.policy)
    internal = parse(make_message(), Envelope("j@council.example.gov.uk", ("a@council.example.gov.uk",)))
    external = parse(make_message(), Envelope("j@council.example.gov.uk", ("a@council.example.gov.uk",
                                                                            "b@supplier.example.com")))
    assert policy.decide(internal, []).disclaimer is False
    assert policy.decide(external, []).disclaimer is True
    nino = [finding({"detector": "uk_nino", "category": "personal_data", "strength": "strong"})]
    assert policy.decide(external, nino).disclaimer is False  # the external copy is refused
