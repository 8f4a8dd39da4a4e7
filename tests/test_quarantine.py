"""The quarantine store on real SQLite and the real PostgreSQL: hold, list, read, release, delete."""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from gateway.actions.delivery import build_route
from gateway.actions.quarantine import DELETED, HELD, RELEASED, Quarantine, QuarantineError
from gateway.config import load_config
from gateway.message import Envelope
from gateway.pipeline import Pipeline
from gateway.routes import parse_route
from tests.conftest import SENDER, make_message
from tests.support import GatewayProcess, Sink, smtp_route

POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A schema of our own in the machine's PostgreSQL, dropped afterwards."""
    schema = f"dlp_test_{secrets.token_hex(4)}"
    engine = sa.create_engine(POSTGRES.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    except sa.exc.OperationalError as e:
        pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is not answering (make test starts it): {e}")
    yield f"{POSTGRES}?options=-csearch_path%3D{schema}"
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/q.db"
    return request.getfixturevalue("postgres_url")


def held_message(tmp_path: Path, database_url: str, rcpts: tuple[str, ...]) -> tuple[Quarantine, str, bytes]:
    config = load_config()
    raw = make_message(subject="SECRET: plans", to=list(rcpts))
    envelope = Envelope(SENDER, rcpts, ("BODY=8BITMIME",))
    inspection = Pipeline(config).inspect(raw, envelope)
    quarantine = Quarantine(database_url, str(tmp_path / "held"))
    ref = quarantine.hold(inspection, raw, envelope, list(inspection.decision.recipients))
    return quarantine, ref, raw


def test_hold_stores_bytes_and_an_index_without_content(tmp_path: Path, database_url: str) -> None:
    quarantine, ref, raw = held_message(tmp_path, database_url, ("a@supplier.example.com",))
    (listed,) = quarantine.list()
    assert listed.id == ref and listed.status == HELD and listed.sender == SENDER
    assert listed.rules == ("secret-marking",)
    assert listed.mail_options == ("BODY=8BITMIME",)
    assert [(r.address, r.rclass, r.release_route) for r in listed.recipients] == [
        ("a@supplier.example.com", "external", "relay")]
    assert "plans" not in json.dumps(listed.to_json())  # the subject is content: not in the index
    assert quarantine.read(ref, "analyst", "checking a complaint") == raw
    assert [(e.action, e.actor, e.reason) for e in quarantine.events(ref)][1:] == [
        ("viewed", "analyst", "checking a complaint")]


def test_release_delivers_held_recipients_and_records_who_and_why(tmp_path: Path, database_url: str) -> None:
    sink = Sink().start()
    try:
        quarantine, ref, raw = held_message(tmp_path, database_url, ("a@supplier.example.com", "b@gmail.com"))
        route = build_route("relay", parse_route(smtp_route(sink)), 30, "gateway.test")
        results = asyncio.run(quarantine.release(ref, {"relay": route, "secure": route}, "analyst", "false positive",
                                                 ["a@supplier.example.com"]))
        assert [r.code for r in results.values()] == [250]
        (received,) = sink.wait_for(1)
        assert received.rcpt_tos == ["a@supplier.example.com"] and received.data == raw
        assert "BODY=8BITMIME" in received.mail_options
        held = quarantine.require(ref)
        assert held.status == HELD  # b@gmail.com is still held
        assert {r.address: r.status for r in held.recipients} == {"a@supplier.example.com": RELEASED,
                                                                 "b@gmail.com": HELD}
        asyncio.run(quarantine.release(ref, {"relay": route, "secure": route}, "analyst", "agreed with sender"))
        assert quarantine.require(ref).status == RELEASED
        with pytest.raises(QuarantineError):
            asyncio.run(quarantine.release(ref, {"relay": route, "secure": route}, "analyst", "again"))
    finally:
        sink.stop()


def test_delete_removes_the_content_and_keeps_the_decision(tmp_path: Path, database_url: str) -> None:
    quarantine, ref, _ = held_message(tmp_path, database_url, ("a@supplier.example.com",))
    quarantine.delete(ref, "analyst", "sent in error")
    held = quarantine.require(ref)
    assert held.status == DELETED and held.rules == ("secret-marking",)
    assert not list((tmp_path / "held").glob("*.eml"))
    with pytest.raises(QuarantineError):
        quarantine.read(ref, "analyst", "curious")
    assert [e.action for e in quarantine.events(ref)] == ["held", "deleted"]


def test_relay_holds_into_postgresql_and_the_cli_lists_it(gateway_factory, sink: Sink, postgres_url: str) -> None:
    gw: GatewayProcess = gateway_factory({
        "routes": {"relay": smtp_route(sink), "secure": smtp_route(sink)},
        "storage": {"database_url": postgres_url},
    })
    with gw.smtp() as client:
        reply = client.sendmail(SENDER, ["partner@supplier.example.com"], make_message(subject="TOP SECRET: x"))
    assert reply == {}
    out = gw.cli("quarantine", "list", "--json")
    assert out.returncode == 0, out.stderr
    (held,) = [json.loads(line) for line in out.stdout.splitlines()]
    assert held["recipients"][0]["address"] == "partner@supplier.example.com"
    assert sink.messages == []
