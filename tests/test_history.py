"""Recipient history: the store (real SQLite and PostgreSQL), the checks it feeds, and the relay keeping it.

Only delivered mail is remembered; the history holds addresses, names, counts and
times, never content; it is bounded per sender and forgets what is not used.
"""

from __future__ import annotations

import json
import smtplib
import sqlite3
import subprocess
from pathlib import Path
from typing import Callable

import pytest
import yaml

from detectors.base import Signal
from detectors.recipients.domains import osa_distance
from detectors.recipients.history import RecipientHistoryDetector
from gateway.history import Delivered, RecipientHistory
from gateway.message import Correspondent, Envelope, SenderHistory, parse
from tests.conftest import SENDER, make_message
from tests.support import BIN, GatewayProcess, Sink, scan_message, smtp_route, wait_until

DATA = Path(__file__).parent / "data" / "recipients"
INTERNAL = ["council.example.gov.uk"]
DAY = 86400.0


# --- the store ------------------------------------------------------------------------

def test_delivered_recipients_are_counted_per_sender(database_url: str) -> None:
    history = RecipientHistory(database_url)
    history.record("Jane.Doe@Council.example.gov.uk", [Delivered("J.Smith@partner.example.org", "John Smith")], now=1000)
    history.record(SENDER, [Delivered("j.smith@partner.example.org"), Delivered("k.brown@partner.example.org")],
                   now=2000)
    known = history.lookup(SENDER, now=3000)
    assert [(c.address, c.count) for c in known.correspondents] == [
        ("j.smith@partner.example.org", 2), ("k.brown@partner.example.org", 1)]
    smith = known.get("J.SMITH@partner.example.org")
    assert smith is not None
    assert (smith.display_name, smith.first_seen, smith.last_seen) == ("John Smith", 1000, 2000)
    assert history.lookup("someone.else@council.example.gov.uk").correspondents == ()


def test_history_is_bounded_per_sender_least_recently_used_first(database_url: str) -> None:
    history = RecipientHistory(database_url, max_per_sender=3)
    for i in range(5):
        history.record(SENDER, [Delivered(f"person{i}@partner.example.org")], now=1000 + i)
    history.record(SENDER, [Delivered("person4@partner.example.org")], now=2000)
    kept = {c.address for c in history.lookup(SENDER, now=2001).correspondents}
    assert kept == {"person2@partner.example.org", "person3@partner.example.org", "person4@partner.example.org"}


def test_unused_entries_expire(database_url: str) -> None:
    history = RecipientHistory(database_url, expiry_days=30)
    history.record(SENDER, [Delivered("old@partner.example.org")], now=1000)
    # Not offered once past the expiry period, even before a sweep removes it.
    assert history.lookup(SENDER, now=1000 + 31 * DAY).correspondents == ()
    # Recording sweeps now and then: the old entry is gone from the database.
    history.record(SENDER, [Delivered("recent@partner.example.org")], now=1000 + 40 * DAY)
    assert [c.address for c in history.lookup(SENDER, now=1000 + 40 * DAY).correspondents] == [
        "recent@partner.example.org"]
    # `dlp-gateway history expire` sweeps on demand.
    assert RecipientHistory(database_url, expiry_days=30).expire(now=1000 + 80 * DAY) == 1
    assert history.forget(SENDER) == 0


def test_forget_erases_one_correspondent_or_a_whole_sender(database_url: str) -> None:
    history = RecipientHistory(database_url)
    history.record(SENDER, [Delivered("a@partner.example.org"), Delivered("b@partner.example.org")])
    assert history.forget(SENDER, "A@partner.example.org") == 1
    assert [c.address for c in history.lookup(SENDER).correspondents] == ["b@partner.example.org"]
    assert history.forget(SENDER) == 1
    assert history.lookup(SENDER).correspondents == ()


def test_registered_personal_accounts(database_url: str) -> None:
    history = RecipientHistory(database_url)
    assert history.add_personal(SENDER, "JaneD84@gmail.com", actor="security")
    assert not history.add_personal(SENDER, "janed84@gmail.com", actor="security")
    assert history.lookup(SENDER).personal_addresses == ("janed84@gmail.com",)
    assert [(s, a, by) for s, a, _, by in history.list_personal()] == [(SENDER, "janed84@gmail.com", "security")]
    assert history.remove_personal(SENDER, "janed84@gmail.com")
    assert not history.remove_personal(SENDER, "janed84@gmail.com")


# --- the checks -----------------------------------------------------------------------

def _table() -> list[tuple[str, ...]]:
    rows = []
    for line in (DATA / "autocomplete.tsv").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            rows.append(tuple(line.split("\t")))
    return rows


def _findings(history: SenderHistory, rcpt: str, shown_name: str = "") -> dict[Signal, str]:
    to = f'"{shown_name}" <{rcpt}>' if shown_name else rcpt
    raw = make_message(to=[to])
    message = parse(raw, Envelope(SENDER, (rcpt,)), history=history)
    return {f.signal: f.detail for f in RecipientHistoryDetector(INTERNAL, frequent_min=3).detect(message)}


@pytest.mark.parametrize("usual, usual_name, count, new, new_name, expected, note", _table(),
                         ids=[row[-1] for row in _table()])
def test_autocomplete_mistakes(usual: str, usual_name: str, count: str, new: str, new_name: str, expected: str,
                               note: str) -> None:
    history = SenderHistory(correspondents=(
        Correspondent(usual, "" if usual_name == "-" else usual_name, int(count), 1000.0, 2000.0),
    ))
    found = _findings(history, new, "" if new_name == "-" else new_name)
    assert found.get(Signal.AUTOCOMPLETE, "-") == expected


def test_a_new_outside_address_of_a_known_sender_is_a_first_time_recipient() -> None:
    history = SenderHistory(correspondents=(Correspondent("k.brown@partner.example.org", "", 9, 1.0, 2.0),))
    assert Signal.FIRST_TIME in _findings(history, "new.person@elsewhere.example.com")
    assert Signal.FIRST_TIME not in _findings(history, "k.brown@partner.example.org")
    assert Signal.FIRST_TIME not in _findings(history, "colleague@council.example.gov.uk")


def test_a_sender_without_history_has_no_first_time_recipients() -> None:
    # A new gateway knows nobody's habits: everything would be "first time".
    assert _findings(SenderHistory(), "new.person@elsewhere.example.com") == {}


def test_osa_distance() -> None:
    assert osa_distance("smith", "smtih", 2) == 1
    assert osa_distance("smith", "smyth", 2) == 1
    assert osa_distance("smith", "smith", 2) == 0
    assert osa_distance("smith", "brownstone", 2) == 3   # limit + 1 once beyond the limit


# --- through the relay ----------------------------------------------------------------

def _send(gw: GatewayProcess, rcpt: str, body: str = "Hello,\n\nThe agenda is attached.\n\nJane") -> None:
    raw = make_message(to=[rcpt], body=body)
    with smtplib.SMTP("127.0.0.1", gw.smtp_port, timeout=60) as client:
        client.sendmail(SENDER, [rcpt], raw)


def _history(gw: GatewayProcess) -> dict[str, object]:
    out = subprocess.run([str(BIN / "dlp-gateway"), "history", "show", SENDER, "--json", "--config",
                          str(gw.config_file)], cwd=gw.workdir, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _counts(gw: GatewayProcess) -> dict[str, int]:
    return {c["address"]: c["count"] for c in _history(gw)["correspondents"]}  # type: ignore[index]


def test_relay_learns_from_delivered_mail_and_holds_an_autocomplete_mistake(
    gateway_factory: Callable[..., GatewayProcess], sink: Sink
) -> None:
    gw = gateway_factory({"routes": {"relay": smtp_route(sink), "secure": smtp_route(sink)}})
    for _ in range(3):
        _send(gw, "j.smith@partner.example.org")
    assert wait_until(lambda: _counts(gw).get("j.smith@partner.example.org") == 3)
    assert len(sink.messages) == 3

    # A new address one letter from a usual one: held, not delivered, and not learnt.
    raw = make_message(to=["j.smyth@partner.example.org"])
    with smtplib.SMTP("127.0.0.1", gw.smtp_port, timeout=60) as client:
        client.ehlo()
        client.mail(SENDER)
        client.rcpt("j.smyth@partner.example.org")
        code, reply = client.data(raw)
    assert code == 250 and b"held for review" in reply
    # Nothing more reached the recipients (the sender is told it is held: that notice comes from <>).
    assert len([m for m in sink.messages if m.mail_from == SENDER]) == 3
    audit = [json.loads(line) for line in (gw.workdir / "var" / "audit.log").read_text().splitlines()]
    assert "autocomplete-mistake" in audit[-1]["recipients"][0]["rules"]
    # Held mail is not delivered mail: it is not learnt. (The history is written after the reply,
    # so wait for a later delivered message to be recorded before looking.)
    _send(gw, "k.brown@partner.example.org")
    assert wait_until(lambda: "k.brown@partner.example.org" in _counts(gw))
    assert "j.smyth@partner.example.org" not in _counts(gw)


def test_history_never_holds_message_content(gateway_factory: Callable[..., GatewayProcess], sink: Sink) -> None:
    gw = gateway_factory({"routes": {"relay": smtp_route(sink), "secure": smtp_route(sink)}})
    _send(gw, "k.brown@partner.example.org", body="Hello,\n\nMARKER-a81f3c the plan for Tuesday.\n\nJane")
    assert wait_until(lambda: _counts(gw).get("k.brown@partner.example.org") == 1)
    db = gw.workdir / "var" / "dlp-gateway.db"
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT * FROM recipient_history").fetchall()
    assert rows and "MARKER-a81f3c" not in repr(rows)
    # Nor the WAL or the database file itself.
    for path in db.parent.glob("dlp-gateway.db*"):
        assert b"MARKER-a81f3c" not in path.read_bytes()


def test_scan_reads_the_relays_history(gateway_factory: Callable[..., GatewayProcess], sink: Sink,
                                       tmp_path: Path) -> None:
    gw = gateway_factory({"routes": {"relay": smtp_route(sink), "secure": smtp_route(sink)}})
    for _ in range(3):
        _send(gw, "j.smith@partner.example.org")
    assert wait_until(lambda: _counts(gw).get("j.smith@partner.example.org") == 3)
    config = tmp_path / "scan.yaml"
    settings = yaml.safe_load(gw.config_file.read_text())
    settings["storage"] = {"database_url": f"sqlite:///{gw.workdir}/var/dlp-gateway.db"}
    config.write_text(yaml.safe_dump(settings))

    result = scan_message(tmp_path, make_message(to=["j.smtih@partner.example.org"]), "--config", str(config))
    assert result["verdict"] == "quarantine"
    assert result["recipients"][0]["rules"] == ["autocomplete-mistake"]
    finding = next(f for f in result["findings"] if f["detector"] == "autocomplete_mistake")
    assert finding["category"] == "misaddressed" and finding["detail"] == "j.smith@partner.example.org"

    # Sensitive content to a trusted address the sender has not used: still delivered over TLS,
    # and the first-time finding is there for the audit and the sender.
    nino = make_message(to=["new.person@nhs.net"], body="Her National Insurance number is AB 12 34 56 C, as discussed.")
    result = scan_message(tmp_path, nino, "--config", str(config))
    assert result["recipients"][0]["action"] == "deliver_tls"
    assert result["recipients"][0]["rules"] == ["personal-data", "first-time-recipient"]


def test_history_can_be_switched_off(gateway_factory: Callable[..., GatewayProcess], sink: Sink) -> None:
    gw = gateway_factory({"routes": {"relay": smtp_route(sink), "secure": smtp_route(sink)},
                          "history": {"enabled": False}})
    _send(gw, "k.brown@partner.example.org")
    assert wait_until(lambda: len(sink.messages) == 1)
    assert _counts(gw) == {}


def test_a_refusal_names_the_rules_that_refused_not_the_first_time_note(
    gateway_factory: Callable[..., GatewayProcess], sink: Sink
) -> None:
    gw = gateway_factory({"routes": {"relay": smtp_route(sink), "secure": smtp_route(sink)}})
    _send(gw, "k.brown@partner.example.org")
    assert wait_until(lambda: "k.brown@partner.example.org" in _counts(gw))
    raw = make_message(to=["someone@gmail.com"], body="Her National Insurance number is AB 12 34 56 C.")
    with smtplib.SMTP("127.0.0.1", gw.smtp_port, timeout=60) as client:
        client.ehlo()
        client.mail(SENDER)
        client.rcpt("someone@gmail.com")
        code, reply = client.data(raw)
    assert code == 250 and b"refused by policy (personal-data);" in reply
    audit = [json.loads(line) for line in (gw.workdir / "var" / "audit.log").read_text().splitlines()]
    assert audit[-1]["recipients"][0]["rules"] == ["personal-data", "first-time-recipient"]
