"""Two gateway processes sharing the machine's real PostgreSQL and one quarantine directory.

This is how the gateway scales out (DESIGN.md, "Scaling out"): what one gateway holds,
another's CLI lists, shows, reads and releases, with the audit trail in the shared
database; whom a sender writes to, learnt from mail delivered through one gateway,
is known to the other.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SENDER, make_message
from tests.support import GatewayProcess, Sink, smtp_route, wait_until

pytestmark = pytest.mark.postgres

OUTSIDE = "partner@supplier.example.com"
MARKER = "MARKER-7d1e the depot plans"


@pytest.fixture
def pair(gateway_factory: Callable[..., GatewayProcess], sink: Sink, postgres_url: str,
         tmp_path: Path) -> tuple[GatewayProcess, GatewayProcess]:
    settings = {
        "routes": {"relay": smtp_route(sink), "secure": smtp_route(sink)},
        "storage": {"database_url": postgres_url, "quarantine_dir": str(tmp_path / "shared-quarantine")},
    }
    return gateway_factory(settings), gateway_factory(settings)


def cli_json(gw: GatewayProcess, *args: str) -> Any:
    out = gw.cli(*args)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def listed(gw: GatewayProcess, status: str = "held") -> list[dict[str, Any]]:
    out = gw.cli("quarantine", "list", "--status", status, "--json")
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


def history(gw: GatewayProcess, sender: str) -> dict[str, int]:
    out = gw.cli("history", "--config", str(gw.config_file), "show", sender, "--json")
    assert out.returncode == 0, out.stderr
    return {c["address"]: c["count"] for c in json.loads(out.stdout)["correspondents"]}


def delivered(sink: Sink) -> list[Any]:
    """What reached recipients (held notices and bounces come from the null sender)."""
    return [m for m in sink.messages if m.mail_from == SENDER]


def test_mail_held_by_one_gateway_is_listed_read_and_released_through_the_other(
    pair: tuple[GatewayProcess, GatewayProcess], sink: Sink, tmp_path: Path
) -> None:
    a, b = pair
    raw = make_message(subject="SECRET: depot plans", body=MARKER, to=[OUTSIDE])
    with a.smtp() as client:
        client.ehlo()
        client.mail(SENDER)
        client.rcpt(OUTSIDE)
        code, reply = client.data(raw)
    assert code == 250 and b"held for review" in reply
    assert delivered(sink) == []

    # B's CLI, with B's configuration, sees what A held; so does A's.
    (held,) = listed(b)
    assert listed(a) == [held]
    assert held["rules"] == ["secret-marking"] and held["sender"] == SENDER
    assert [(r["address"], r["status"]) for r in held["recipients"]] == [(OUTSIDE, "held")]
    assert (tmp_path / "shared-quarantine" / f"{held['id']}.eml").exists()
    shown = cli_json(b, "quarantine", "show", held["id"])
    assert shown["status"] == "held" and [e["action"] for e in shown["events"]] == ["held"]

    # The bytes A wrote are readable through B, and the reading is recorded.
    read = b.cli("quarantine", "read", held["id"], "--reason", "complaint from the recipient", "--actor", "analyst")
    assert read.returncode == 0, read.stderr
    assert MARKER in read.stdout and "SECRET: depot plans" in read.stdout

    released = b.cli("quarantine", "release", held["id"], "--reason", "checked with the sender", "--actor", "sec-team")
    assert released.returncode == 0, released.stderr
    assert released.stdout.startswith(f"{OUTSIDE}: 250")
    assert wait_until(lambda: len(delivered(sink)) == 1)
    (message,) = delivered(sink)
    assert message.rcpt_tos == [OUTSIDE]
    assert message.message["Subject"] == "SECRET: depot plans" and MARKER.encode() in message.data

    # The audit trail, read through either gateway: who did what and why.
    for gw in (a, b):
        shown = cli_json(gw, "quarantine", "show", held["id"])
        assert shown["status"] == "released"
        assert [(e["action"], e["actor"], e["reason"]) for e in shown["events"]][1:] == [
            ("viewed", "analyst", "complaint from the recipient"),
            ("released", "sec-team", "checked with the sender"),
        ]
        assert shown["events"][0]["action"] == "held" and shown["events"][0]["actor"] == "gateway"
    assert listed(a) == [] and listed(b) == []
    assert not (tmp_path / "shared-quarantine" / f"{held['id']}.eml").exists()

    # Releasing twice, through the other gateway, is refused and delivers nothing more.
    again = a.cli("quarantine", "release", held["id"], "--reason", "again", "--actor", "sec-team")
    assert again.returncode == 1 and "Traceback" not in again.stderr
    assert len(delivered(sink)) == 1


def test_both_gateways_hold_into_one_quarantine(pair: tuple[GatewayProcess, GatewayProcess], sink: Sink) -> None:
    a, b = pair
    for n in range(3):
        for gw in (a, b):
            with gw.smtp() as client:
                assert client.sendmail(SENDER, [OUTSIDE], make_message(subject=f"TOP SECRET: {n} via {gw.smtp_port}",
                                                                        to=[OUTSIDE])) == {}
    held_a, held_b = listed(a), listed(b)
    assert len(held_a) == 6 and held_a == held_b
    assert len({h["id"] for h in held_a}) == 6
    assert delivered(sink) == []
    # Each gateway's audit log has the decisions it made, under the references the index has.
    references = {r["reference"] for gw in (a, b) for r in gw.audit()}
    assert references == {h["id"] for h in held_a}


def test_history_learnt_through_one_gateway_is_seen_and_used_by_the_other(
    pair: tuple[GatewayProcess, GatewayProcess], sink: Sink
) -> None:
    a, b = pair
    usual = "j.smith@partner.example.org"
    for _ in range(3):
        with a.smtp() as client:
            assert client.sendmail(SENDER, [usual], make_message(to=[usual])) == {}
    # Recorded after the reply, by A; read through B's configuration.
    assert wait_until(lambda: history(b, SENDER).get(usual) == 3)
    assert history(a, SENDER) == history(b, SENDER)

    # B decides with what A learnt: an address one letter from the usual one is held.
    with b.smtp() as client:
        client.ehlo()
        client.mail(SENDER)
        client.rcpt("j.smyth@partner.example.org")
        code, reply = client.data(make_message(to=["j.smyth@partner.example.org"]))
    assert code == 250 and b"held for review" in reply
    (record,) = b.audit()
    assert "autocomplete-mistake" in record["recipients"][0]["rules"]
    (held,) = listed(a)
    assert held["recipients"][0]["address"] == "j.smyth@partner.example.org"
    assert len(delivered(sink)) == 3
