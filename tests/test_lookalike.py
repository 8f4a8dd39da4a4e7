"""Lookalike recipient domains (POLICY.md rule 8): a recipient domain that is not listed but looks
like an internal or trusted domain, or one the sender writes to often, is held for checking.

The table of domains is in data/recipients/lookalike.tsv (configurations in
lookalike_profiles.tsv); the tests here say what a finding holds and what is never judged.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import yaml

from detectors.base import Category, Signal
from detectors.recipients.lookalike import LookalikeDetector
from gateway.message import Correspondent, Envelope, Message, SenderHistory, parse
from tests.conftest import SENDER, make_message
from tests.support import scan_message

DATA = Path(__file__).parent / "data" / "recipients"
INTERNAL = ["camden.gov.uk"]
TRUSTED = ["nhs.net", "*.police.uk", "cjsm.net"]
PERSONAL = ["gmail.com", "googlemail.com", "hotmail.co.uk"]


def _rows(name: str) -> list[list[str]]:
    lines = (DATA / name).read_text(encoding="utf-8").splitlines()
    return [line.split("\t") for line in lines if line.strip() and not line.startswith("#")]


def _list(cell: str) -> list[str]:
    return [] if cell == "-" else cell.split(",")


@dataclass(frozen=True)
class Profile:
    internal: list[str]
    trusted: list[str]
    personal: list[str]


PROFILES = {name: Profile(_list(i), _list(t), _list(p)) for name, i, t, p in _rows("lookalike_profiles.tsv")}
TABLE = _rows("lookalike.tsv")


def _history(domains: list[str], count: int = 3) -> SenderHistory:
    return SenderHistory(correspondents=tuple(
        Correspondent(f"someone@{domain}", "", count, 1000.0, 2000.0) for domain in domains))


def _message(rcpts: list[str], history: SenderHistory = SenderHistory(), to: list[str] | None = None,
             body: str = "Hello,\n\nThe minutes of Tuesday's meeting are attached.\n\nJane") -> Message:
    raw = make_message(to=to or ["partner@example.org"], body=body)
    return parse(raw, Envelope(SENDER, tuple(rcpts)), history=history)


def _detector(**kwargs: object) -> LookalikeDetector:
    settings: dict[str, object] = {"internal_domains": INTERNAL, "trusted_domains": TRUSTED,
                                   "personal_domains": PERSONAL}
    settings.update(kwargs)
    return LookalikeDetector(**settings)  # type: ignore[arg-type]


# --- the table ------------------------------------------------------------------------

@pytest.mark.parametrize("profile, frequent, recipient, resembles, note", TABLE, ids=[row[-1] for row in TABLE])
def test_lookalike_domains(profile: str, frequent: str, recipient: str, resembles: str, note: str) -> None:
    p = PROFILES[profile]
    detector = LookalikeDetector(p.internal, p.trusted, p.personal)
    findings = detector.detect(_message([f"someone@{recipient}"], _history(_list(frequent))))
    assert [f.detail for f in findings] == ([] if resembles == "-" else [resembles])


def test_the_table_holds_enough_cases_both_ways() -> None:
    positives = sum(1 for row in TABLE if row[3] != "-")
    assert positives >= 40 and len(TABLE) - positives >= 40


# --- what a finding holds ------------------------------------------------------------------

def test_a_finding_names_the_recipient_and_the_domain_it_resembles_and_nothing_else() -> None:
    message = _message(["j.smith@nhs-net.com"], body="Her NI number is AB 12 34 56 C. MARKER-7f3a")
    [finding] = _detector().detect(message)
    assert finding.detector == "lookalike_domain"
    assert finding.category is Category.MISADDRESSED
    assert finding.signal is Signal.LOOKALIKE
    assert finding.location == "envelope"
    assert finding.recipients == ("j.smith@nhs-net.com",)
    assert finding.detail == "nhs.net"
    assert finding.kind == "recipient domain that looks like a trusted domain"
    assert "MARKER" not in repr(finding.to_json()) and "AB 12" not in repr(finding.to_json())


def test_the_kind_says_whose_domain_it_resembles() -> None:
    history = _history(["acme-supplies.co.uk"])
    kinds = {f.detail: f.kind for f in _detector().detect(
        _message(["a@camdem.gov.uk", "b@nhs.com", "c@acme-supplies.com"], history))}
    assert kinds == {
        "camden.gov.uk": "recipient domain that looks like one of our own domains",
        "nhs.net": "recipient domain that looks like a trusted domain",
        "acme-supplies.co.uk": "recipient domain that looks like one the sender writes to often",
    }


def test_one_finding_per_lookalike_recipient() -> None:
    message = _message(["a@nhs.com", "b@nhs.com", "A@nhs.com", "c@nhs.net", "d@example.org"])
    findings = _detector().detect(message)
    assert [f.recipients for f in findings] == [("a@nhs.com",), ("b@nhs.com",)]


def test_only_envelope_recipients_are_judged() -> None:
    message = _message(["partner@example.org"], to=["partner@nhs-net.com", "someone@camdem.gov.uk"])
    assert _detector().detect(message) == []


def test_listed_domains_are_never_lookalikes_of_each_other() -> None:
    internal = ["camden.gov.uk", "camden.org.uk", ".camdem.gov.uk"]
    trusted = ["nhs.net", "nhs.uk", "nhs.scot", "*.police.uk", "police.scot", "cjsm.net", "cjsm.com"]
    personal = ["gmail.com", "gmail.co.uk", "googlemail.com", "email.com", "ymail.com"]
    detector = LookalikeDetector(internal, trusted, personal)
    domains = [d.lstrip("*.") for d in internal + trusted + personal]
    message = _message([f"someone@{d}" for d in domains], _history(domains))
    assert detector.detect(message) == []


def test_a_subdomain_of_a_listed_domain_is_its_own_but_a_listed_name_in_front_of_another_is_not() -> None:
    detector = _detector()
    assert detector.detect(_message(["a@mail.nhs.net", "b@secure.mail.nhs.net"])) == []
    [finding] = detector.detect(_message(["a@nhs.net.evil.example"]))
    assert finding.detail == "nhs.net"


# --- the sender's history ---------------------------------------------------------------------

def test_history_domains_count_once_their_messages_add_up_to_frequent_min() -> None:
    def history(*counts: int) -> SenderHistory:
        return SenderHistory(correspondents=tuple(
            Correspondent(f"person{i}@acme-supplies.co.uk", "", n, 1000.0, 2000.0) for i, n in enumerate(counts)))

    detector = _detector()
    assert detector.detect(_message(["x@acme-supplies.com"], history(2))) == []
    # Two people at the same domain, 1 + 2 messages: the domain is written to often.
    [finding] = detector.detect(_message(["x@acme-supplies.com"], history(1, 2)))
    assert finding.detail == "acme-supplies.co.uk"
    assert _detector(frequent_min=5).detect(_message(["x@acme-supplies.com"], history(1, 2))) == []


def test_a_domain_the_sender_writes_to_often_is_no_slip_for_another_one() -> None:
    history = _history(["acme.co.uk", "acme.com"])
    assert _detector().detect(_message(["a@acme.com", "b@acme.co.uk"], history)) == []
    # ...but it is still judged against the organisation's own and trusted domains.
    assert [f.detail for f in _detector().detect(_message(["a@nhs-net.com"], _history(["nhs-net.com"])))] == [
        "nhs.net"]


def test_without_history_only_listed_domains_are_resembled() -> None:
    assert _detector().detect(_message(["a@gmial.com", "b@acme-supplies.com"])) == []


# --- odd input ----------------------------------------------------------------------------------

ODD_RECIPIENTS = [
    "", "postmaster", "a@", "@", "a@.", "a@..", "a@[127.0.0.1]", "a@[IPv6:::1]", "a@-", "a@-.com",
    "a@xn--", "a@xn--.xn--", "a@xn--zz", "a@xn--99999999.net", "a@" + "x" * 300 + ".net",
    "a@" + ".".join(["a"] * 200), "a@" + "xn--" + "a" * 60 + ".net", "a@\udcff.com", "a@nhs\u3002net",
    "a@ｎｈｓ．ｎｅｔ", "a@NHS.NET.", "a@nhs.net..", "a@b@nhs.com", '"a@b"@nhs.net', "a@\u0000.com",
    "a@\u200b.net", "a@\U0001f600.com", "a@é", "a@1", "a@127.0.0.1",
]


def test_odd_recipients_never_raise_and_listed_ones_never_flag() -> None:
    findings = _detector().detect(_message(ODD_RECIPIENTS))
    flagged = {f.recipients[0] for f in findings}
    assert not flagged & {"a@NHS.NET.", '"a@b"@nhs.net', "", "postmaster", "a@[127.0.0.1]"}
    assert "a@b@nhs.com" in flagged and "a@ｎｈｓ．ｎｅｔ" in flagged


def test_random_domains_never_raise() -> None:
    rng = random.Random(20240611)
    letters = "abcdefghijklmnopqrstuvwxyz0123456789-_@[]\u0430\u0435\u043e\u0455\u00fc\u3002\uff0e\u200b\ud800\U0001f600"
    detector = _detector()
    message = _message(["someone@example.org"], _history(["gmail.com", "acme-supplies.co.uk"]))
    for _ in range(3000):
        labels = ["".join(rng.choice(letters) for _ in range(rng.randint(0, 12))) for _ in range(rng.randint(0, 5))]
        domain = ".".join(("xn--" if rng.random() < 0.3 else "") + label for label in labels)
        envelope = replace(message.envelope, rcpt_tos=(f"a@{domain}",))
        detector.detect(replace(message, envelope=envelope))


# --- end to end: `dlp-gateway scan` (needs LookalikeDetector in detectors.build_detectors) ---------

def test_scan_holds_mail_to_a_lookalike_of_a_trusted_domain_and_delivers_the_real_one(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({"organisation": {"internal_domains": ["camden.gov.uk"],
                                                       "trusted_domains": ["nhs.net", "*.police.uk"]}}))
    raw = make_message(sender="jane.doe@camden.gov.uk", to=["j.smith@nhs.net", "j.smith@nhs-net.com"])
    result = scan_message(tmp_path, raw, "--config", str(config))
    by_address = {r["address"]: r for r in result["recipients"]}
    assert by_address["j.smith@nhs-net.com"]["action"] == "quarantine"
    assert "lookalike-domain" in by_address["j.smith@nhs-net.com"]["rules"]
    assert by_address["j.smith@nhs.net"]["action"] == "deliver"
    assert "lookalike-domain" not in by_address["j.smith@nhs.net"]["rules"]
    [finding] = [f for f in result["findings"] if f["detector"] == "lookalike_domain"]
    assert finding["category"] == "misaddressed"
    assert finding["detail"] == "nhs.net" and finding["recipients"] == ["j.smith@nhs-net.com"]
    assert result["verdict"] == "quarantine"


def test_scan_holds_mail_to_a_homoglyph_of_our_own_domain(tmp_path: Path) -> None:
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump({"organisation": {"internal_domains": ["camden.gov.uk"]}}))
    raw = make_message(sender="jane.doe@camden.gov.uk", to=["j.smith@xn--cmden-4ve.gov.uk"])
    result = scan_message(tmp_path, raw, "--config", str(config))
    [recipient] = result["recipients"]
    assert recipient["action"] == "quarantine" and "lookalike-domain" in recipient["rules"]
    [finding] = [f for f in result["findings"] if f["detector"] == "lookalike_domain"]
    assert finding["detail"] == "camden.gov.uk"
