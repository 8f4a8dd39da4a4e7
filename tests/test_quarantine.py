"""The quarantine on real SQLite and the real PostgreSQL: hold, list, read, release, delete;
encryption at rest and key rotation; retention; sender notices; the CLI around them."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import subprocess
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import yaml

from gateway.actions.delivery import build_route
from gateway.actions.quarantine import DELETED, EXPIRED, HELD, RELEASED, Quarantine, QuarantineError
from gateway.config import Config, ConfigError, load_config
from gateway.message import Envelope
from gateway.pipeline import Pipeline
from gateway.quarantine_keys import MAGIC, KeyRing, keygen, load_key
from gateway.routes import parse_route
from gateway.store import engine_for, quarantine_items
from tests.conftest import SENDER, make_message
from tests.support import BIN, GatewayProcess, Sink, smtp_route, wait_until

if TYPE_CHECKING:
    from tests.support import TestCA  # imported by name, pytest would try to collect it

MARKER = "MARKER-q7Zk2 the plans for the depot"   # message text that must never be on disk in the clear
DAYS = 86400


def new_key(tmp_path: Path, name: str) -> Path:
    path = tmp_path / "keys" / name
    keygen(path)
    return path


def quarantine_in(tmp_path: Path, database_url: str, *key_files: Path, **kwargs: Any) -> Quarantine:
    keys = KeyRing.from_files([str(k) for k in key_files])
    return Quarantine(database_url, str(tmp_path / "held"), keys, **kwargs)


def hold(quarantine: Quarantine, rcpts: tuple[str, ...] = ("a@supplier.example.com",),
         config: Config | None = None, body: str = MARKER) -> tuple[str, bytes]:
    config = config or load_config()
    raw = make_message(subject="SECRET: plans", body=body, to=list(rcpts))
    envelope = Envelope(SENDER, rcpts, ("BODY=8BITMIME",))
    inspection = Pipeline(config).inspect(raw, envelope)
    return quarantine.hold(inspection, raw, envelope, list(inspection.decision.recipients)), raw


def held_message(tmp_path: Path, database_url: str, rcpts: tuple[str, ...]) -> tuple[Quarantine, str, bytes]:
    quarantine = quarantine_in(tmp_path, database_url)
    ref, raw = hold(quarantine, rcpts)
    return quarantine, ref, raw


def file_of(quarantine: Quarantine, ref: str) -> Path:
    return quarantine.directory / f"{ref}.eml"


def backdate(database_url: str, days: float) -> None:
    with engine_for(database_url).begin() as conn:
        conn.execute(quarantine_items.update().values(created_at=quarantine_items.c.created_at - days * DAYS))


def config_file(tmp_path: Path, settings: dict[str, Any], name: str = "gateway.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(settings))
    return path


def relay_to(sink: Sink, tls: str = "none", ca: Path | None = None) -> Any:
    return build_route("relay", parse_route(smtp_route(sink, tls, ca)), 30, "gateway.test")


# --- holding, reading, releasing, deleting ---------------------------------------------------

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
        route = relay_to(sink)
        results = asyncio.run(quarantine.release(ref, {"relay": route, "secure": route}, "analyst", "false positive",
                                                 ["a@supplier.example.com"]))
        assert [r.code for r in results.values()] == [250]
        (received,) = sink.wait_for(1)
        assert received.rcpt_tos == ["a@supplier.example.com"] and received.data == raw
        assert "BODY=8BITMIME" in received.mail_options
        held = quarantine.require(ref)
        assert held.status == HELD  # b@gmail.com is still held, and so is the content
        assert {r.address: r.status for r in held.recipients} == {"a@supplier.example.com": RELEASED,
                                                                 "b@gmail.com": HELD}
        assert file_of(quarantine, ref).exists()
        asyncio.run(quarantine.release(ref, {"relay": route, "secure": route}, "analyst", "agreed with sender"))
        assert quarantine.require(ref).status == RELEASED
        with pytest.raises(QuarantineError):
            asyncio.run(quarantine.release(ref, {"relay": route, "secure": route}, "analyst", "again"))
    finally:
        sink.stop()


def test_release_to_the_last_held_recipient_removes_the_content(tmp_path: Path, database_url: str,
                                                                sink: Sink) -> None:
    quarantine, ref, _ = held_message(tmp_path, database_url, ("a@supplier.example.com",))
    route = relay_to(sink)
    asyncio.run(quarantine.release(ref, {"relay": route, "secure": route}, "analyst", "false positive"))
    held = quarantine.require(ref)
    assert held.status == RELEASED and held.rules == ("secret-marking",) and not held.to_json()["content_kept"]
    assert not file_of(quarantine, ref).exists()
    with pytest.raises(QuarantineError, match="released to every recipient; its content was removed"):
        quarantine.read(ref, "analyst", "curious")


def test_delete_removes_the_content_and_keeps_the_decision(tmp_path: Path, database_url: str) -> None:
    quarantine, ref, _ = held_message(tmp_path, database_url, ("a@supplier.example.com",))
    quarantine.delete(ref, "analyst", "sent in error")
    held = quarantine.require(ref)
    assert held.status == DELETED and held.rules == ("secret-marking",) and held.storage_key == ""
    assert not list((tmp_path / "held").glob("*.eml"))
    with pytest.raises(QuarantineError):
        quarantine.read(ref, "analyst", "curious")
    with pytest.raises(QuarantineError, match="already"):
        quarantine.delete(ref, "analyst", "twice")
    assert [e.action for e in quarantine.events(ref)] == ["held", "deleted"]


def test_release_of_a_deliver_tls_recipient_never_falls_back_to_plaintext(
    tmp_path: Path, database_url: str, sink: Sink, tls_sink: Sink, test_ca: TestCA
) -> None:
    config = load_config(config_file(tmp_path, {"organisation": {"trusted_domains": ["nhs.net"]}}))
    quarantine = quarantine_in(tmp_path, database_url, new_key(tmp_path, "k1"))
    ref, raw = hold(quarantine, ("gp.practice@nhs.net",), config,
                    body="Her National Insurance number is AB 12 34 56 C, as discussed.")
    (rcpt,) = quarantine.require(ref).recipients
    assert rcpt.release_route == "secure"  # personal data to a trusted partner: verified TLS only
    plain = Sink().start()   # a next hop with no STARTTLS where verified TLS is required
    try:
        routes = {"relay": relay_to(sink), "secure": relay_to(plain, "verify", test_ca.ca_file)}
        results = asyncio.run(quarantine.release(ref, routes, "analyst", "checked"))
        assert results["gp.practice@nhs.net"].temporary
        assert plain.messages == [] and sink.messages == []
        assert quarantine.require(ref).status == HELD and file_of(quarantine, ref).exists()
    finally:
        plain.stop()
    routes = {"relay": relay_to(sink), "secure": relay_to(tls_sink, "verify", test_ca.ca_file)}
    results = asyncio.run(quarantine.release(ref, routes, "analyst", "checked again"))
    assert results["gp.practice@nhs.net"].ok
    (received,) = tls_sink.wait_for(1)
    assert received.tls and received.data == raw and sink.messages == []


# --- encryption at rest -----------------------------------------------------------------------

def test_with_a_key_the_held_file_is_encrypted_and_reads_back(tmp_path: Path, database_url: str,
                                                              sink: Sink) -> None:
    key = new_key(tmp_path, "k1")
    quarantine = quarantine_in(tmp_path, database_url, key)
    ref, raw = hold(quarantine)
    on_disk = file_of(quarantine, ref).read_bytes()
    assert MARKER.encode() in raw
    assert MARKER.encode() not in on_disk and b"SECRET" not in on_disk and SENDER.encode() not in on_disk
    assert on_disk.startswith(MAGIC) and load_key(key).id in on_disk[:32]
    assert quarantine.read(ref, "analyst", "complaint") == raw
    route = relay_to(sink)
    asyncio.run(quarantine.release(ref, {"relay": route, "secure": route}, "analyst", "false positive"))
    (received,) = sink.wait_for(1)
    assert received.data == raw


def test_rotation_add_a_key_first_rekey_then_the_old_key_can_go(tmp_path: Path, database_url: str) -> None:
    old, new = new_key(tmp_path, "old"), new_key(tmp_path, "new")
    before, raw_before = hold(quarantine_in(tmp_path, database_url, old))
    plain, raw_plain = hold(quarantine_in(tmp_path, database_url))   # held before any key was set
    rotated = quarantine_in(tmp_path, database_url, new, old)
    after, raw_after = hold(rotated)
    assert file_of(rotated, after).read_bytes()[9:17] == load_key(new).id
    assert rotated.read(before, "analyst", "check") == raw_before  # the old key still decrypts

    report = rotated.rekey("sec-team")
    assert set(report.rekeyed) == {before, plain} and report.unchanged == (after,) and not report.failed
    (event,) = [e for e in rotated.events(before) if e.action == "rekeyed"]
    assert event.actor == "sec-team"
    assert json.loads(event.detail) == {"from": load_key(old).hex_id, "to": load_key(new).hex_id}
    assert json.loads([e for e in rotated.events(plain) if e.action == "rekeyed"][0].detail)["from"] == "unencrypted"
    assert MARKER.encode() not in file_of(rotated, plain).read_bytes()
    assert not list(rotated.directory.glob(".*.tmp"))

    new_only = quarantine_in(tmp_path, database_url, new)
    for ref, raw in ((before, raw_before), (plain, raw_plain), (after, raw_after)):
        assert new_only.read(ref, "analyst", "after rotation") == raw
    assert new_only.rekey("sec-team").rekeyed == ()


def test_an_item_whose_key_is_gone_is_refused_naming_the_key_and_kept(tmp_path: Path, database_url: str) -> None:
    old, new = new_key(tmp_path, "old"), new_key(tmp_path, "new")
    ref, _ = hold(quarantine_in(tmp_path, database_url, old))
    quarantine = quarantine_in(tmp_path, database_url, new)
    hex_id = load_key(old).hex_id
    with pytest.raises(QuarantineError, match=f"encrypted with key {hex_id}, which is not in quarantine.keys"):
        quarantine.read(ref, "analyst", "check")
    with pytest.raises(QuarantineError, match=hex_id):
        asyncio.run(quarantine.release(ref, {}, "analyst", "check"))
    report = quarantine.rekey("sec-team")
    assert hex_id in report.failed[ref] and report.rekeyed == ()
    assert quarantine.require(ref).status == HELD and file_of(quarantine, ref).exists()
    assert [e.action for e in quarantine.events(ref)] == ["held"]  # refused reads are not views


def test_a_tampered_file_is_refused_and_kept(tmp_path: Path, database_url: str) -> None:
    quarantine = quarantine_in(tmp_path, database_url, new_key(tmp_path, "k1"))
    ref, _ = hold(quarantine)
    path = file_of(quarantine, ref)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(QuarantineError, match="altered or damaged"):
        quarantine.read(ref, "analyst", "check")
    path.write_bytes(bytes(data[:20]))
    with pytest.raises(QuarantineError, match="cut short"):
        quarantine.read(ref, "analyst", "check")
    assert quarantine.require(ref).status == HELD and path.exists()


def test_files_swapped_between_items_do_not_open(tmp_path: Path, database_url: str) -> None:
    quarantine = quarantine_in(tmp_path, database_url, new_key(tmp_path, "k1"))
    first, _ = hold(quarantine)
    second, _ = hold(quarantine, body="another message")
    file_of(quarantine, second).write_bytes(file_of(quarantine, first).read_bytes())
    with pytest.raises(QuarantineError, match="another item's file"):
        quarantine.read(second, "analyst", "check")


def test_quarantine_keygen_writes_a_private_key_and_never_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "q1.key"
    made = subprocess.run([str(BIN / "dlp-gateway"), "quarantine-keygen", str(path)], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    assert os.stat(path).st_mode & 0o777 == 0o600
    key = load_key(path)
    assert key.hex_id in made.stdout and str(path.resolve()) in made.stdout
    before = path.read_bytes()
    again = subprocess.run([str(BIN / "dlp-gateway"), "quarantine-keygen", str(path)], capture_output=True, text=True)
    assert again.returncode == 1 and "already exists" in again.stderr and path.read_bytes() == before


def test_bad_key_files_are_configuration_errors_naming_the_key_and_file(tmp_path: Path) -> None:
    good = new_key(tmp_path, "good")
    open_to_all = new_key(tmp_path, "open")
    open_to_all.chmod(0o644)
    short = tmp_path / "keys" / "short"
    short.write_text("c2hvcnQ=\n")
    short.chmod(0o600)
    garbage = tmp_path / "keys" / "garbage"
    garbage.write_text("not base64 at all!\n")
    garbage.chmod(0o600)
    missing = tmp_path / "keys" / "missing"
    copy = tmp_path / "keys" / "copy"
    copy.write_bytes(good.read_bytes())
    copy.chmod(0o600)
    path = config_file(tmp_path, {"quarantine": {"keys": [str(good), str(missing), str(open_to_all), str(short),
                                                          str(garbage)]}})
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    problems = caught.value.problems
    assert len(problems) == 4, problems
    assert problems[0].startswith(f"{path}: quarantine.keys.1: cannot read the quarantine key file {missing}")
    assert problems[1].startswith(f"{path}: quarantine.keys.2: the quarantine key file {open_to_all} can be read "
                                  "or changed by every user (mode 0644)")
    assert problems[2].startswith(f"{path}: quarantine.keys.3: the quarantine key file {short} holds 5 bytes")
    assert problems[3].startswith(f"{path}: quarantine.keys.4: the quarantine key file {garbage} is not one line of "
                                  "base64")
    twice = config_file(tmp_path, {"quarantine": {"keys": [str(good), str(copy)]}}, "twice.yaml")
    with pytest.raises(ConfigError, match=f"quarantine.keys: {good} and {copy} hold the same key"):
        load_config(twice)

    out = subprocess.run([str(BIN / "dlp-gateway"), "check-config", "--config", str(path)],
                         capture_output=True, text=True)
    assert out.returncode != 0 and out.stdout == ""
    assert f"{path}: quarantine.keys.2: the quarantine key file {open_to_all}" in out.stderr
    assert "Traceback" not in out.stderr


# --- retention ----------------------------------------------------------------------------------

def test_expiry_removes_the_content_and_keeps_the_decision(tmp_path: Path, database_url: str) -> None:
    quarantine = quarantine_in(tmp_path, database_url, new_key(tmp_path, "k1"), retention_days=30)
    old, _ = hold(quarantine, ("a@supplier.example.com", "b@gmail.com"))
    backdate(database_url, 31)
    recent, _ = hold(quarantine)
    report = quarantine.expire()
    assert report.expired == (old,)
    held = quarantine.require(old)
    assert held.status == EXPIRED and held.storage_key == ""
    assert held.rules == ("secret-marking",) and held.findings
    assert {r.address: r.status for r in held.recipients} == {"a@supplier.example.com": EXPIRED,
                                                              "b@gmail.com": EXPIRED}
    assert not file_of(quarantine, old).exists() and file_of(quarantine, recent).exists()
    (event,) = [e for e in quarantine.events(old) if e.action == "expired"]
    assert event.actor == "retention" and "30 days" in event.reason
    with pytest.raises(QuarantineError, match="expired"):
        quarantine.read(old, "analyst", "too late")
    with pytest.raises(QuarantineError, match="expired"):
        asyncio.run(quarantine.release(old, {}, "analyst", "too late"))
    assert quarantine.expire().expired == ()
    assert quarantine.require(recent).status == HELD
    assert [m.id for m in quarantine.list(status=EXPIRED)] == [old]


def test_expiry_removes_content_an_interruption_left_behind(tmp_path: Path, database_url: str) -> None:
    quarantine = quarantine_in(tmp_path, database_url)
    ref, _ = hold(quarantine)
    with engine_for(database_url).begin() as conn:  # as if the process died between the status and the unlink
        conn.execute(quarantine_items.update().values(status=DELETED))
    assert quarantine.expire(dry_run=True).purged == (ref,) and file_of(quarantine, ref).exists()
    assert quarantine.expire().purged == (ref,)
    assert not file_of(quarantine, ref).exists() and quarantine.require(ref).storage_key == ""


def test_gateways_expiring_at_the_same_time_expire_each_item_once(tmp_path: Path, postgres_url: str) -> None:
    first = quarantine_in(tmp_path, postgres_url)
    refs = [hold(first, body=f"message {n}")[0] for n in range(6)]
    backdate(postgres_url, 40)
    second = quarantine_in(tmp_path, postgres_url)
    start = threading.Barrier(2)
    reports: list[Any] = []
    errors: list[BaseException] = []

    def run(quarantine: Quarantine) -> None:
        start.wait()
        try:
            reports.append(quarantine.expire())
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(q,)) for q in (first, second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    expired = [ref for report in reports for ref in report.expired]
    assert sorted(expired) == sorted(refs)  # each by exactly one of them
    for ref in refs:
        assert [e.action for e in first.events(ref)].count("expired") == 1
        assert first.require(ref).status == EXPIRED and not file_of(first, ref).exists()


def test_cli_expire_dry_run_changes_nothing_and_expire_does(tmp_path: Path, gateway_factory: Any) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    gw: GatewayProcess = gateway_factory({"storage": {"database_url": url, "quarantine_dir": str(tmp_path / "held")},
                                          "quarantine": {"retention_days": 7}}, start=False)
    quarantine = quarantine_in(tmp_path, url)
    ref, _ = hold(quarantine)
    backdate(url, 8)
    dry = gw.cli("quarantine", "expire", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"{ref}: would expire" in dry.stdout and "nothing was changed" in dry.stdout
    assert quarantine.require(ref).status == HELD and file_of(quarantine, ref).exists()
    assert [e.action for e in quarantine.events(ref)] == ["held"]
    done = gw.cli("quarantine", "expire", "--actor", "sec-team")
    assert done.returncode == 0, done.stderr
    assert f"{ref}: expired" in done.stdout
    assert quarantine.require(ref).status == EXPIRED and not file_of(quarantine, ref).exists()
    (event,) = [e for e in quarantine.events(ref) if e.action == "expired"]
    assert event.actor == "retention" and "sec-team" in event.detail
    listed = gw.cli("quarantine", "list", "--status", "expired", "--json")
    assert json.loads(listed.stdout)["id"] == ref


def test_gateways_sharing_postgresql_expire_old_mail_when_they_start(tmp_path: Path, gateway_factory: Any,
                                                                    postgres_url: str, sink: Sink) -> None:
    shared = tmp_path / "held"
    quarantine = quarantine_in(tmp_path, postgres_url)
    refs = [hold(quarantine, body=f"message {n}")[0] for n in range(3)]
    backdate(postgres_url, 31)
    settings = {"routes": {"relay": smtp_route(sink), "secure": smtp_route(sink)},
                "storage": {"database_url": postgres_url, "quarantine_dir": str(shared)}}
    gateways = [gateway_factory(settings), gateway_factory(settings)]
    assert wait_until(lambda: all(quarantine.require(r).status == EXPIRED for r in refs))
    for ref in refs:
        assert [e.action for e in quarantine.events(ref)].count("expired") == 1
    assert not list(shared.glob("*.eml"))
    for gw in gateways:
        gw.stop()
        log = gw.log_file.read_text()
        assert "retention run failed" not in log and "Traceback" not in log
        assert "held mail is stored unencrypted" in log  # no key: said once at start


# --- sender notices -------------------------------------------------------------------------------

def notify_config(tmp_path: Path, database_url: str, sink: Sink) -> Config:
    return load_config(config_file(tmp_path, {
        "routes": {"relay": smtp_route(sink), "secure": smtp_route(sink)},
        "storage": {"database_url": database_url, "quarantine_dir": str(tmp_path / "held")},
        "quarantine": {"notify_sender": True},
        "bounce": {"postmaster": "postmaster@council.example.gov.uk"},
    }))


def test_the_sender_is_told_of_a_release_and_of_a_delete_through_the_relay(tmp_path: Path, sink: Sink) -> None:
    url = f"sqlite:///{tmp_path}/q.db"
    config = notify_config(tmp_path, url, sink)
    from gateway.actions import build_routes

    quarantine = Quarantine.from_config(config, build_routes(config))
    released, _ = hold(quarantine, config=config)
    deleted, _ = hold(quarantine, config=config)
    asyncio.run(quarantine.release(released, build_routes(config), "analyst", "agreed with the sender"))
    quarantine.delete(deleted, "analyst", "sent in error")
    assert wait_until(lambda: len(sink.to(SENDER)) == 2)
    notices = {n.message["Subject"]: n for n in sink.to(SENDER)}
    assert all(n.mail_from in ("", "<>") for n in notices.values())
    assert any(released in s and "Released" in s for s in notices)
    assert any(deleted in s and "Deleted" in s for s in notices)
    assert [e.action for e in quarantine.events(released)][-1] == "notified"
    assert [e.action for e in quarantine.events(deleted)][-1] == "notified"


def test_a_notice_that_fails_never_undoes_a_release_or_a_delete(tmp_path: Path, database_url: str,
                                                                sink: Sink) -> None:
    async def broken(*_: Any) -> str:
        raise ConnectionRefusedError("relay down")

    quarantine = quarantine_in(tmp_path, database_url, notify=broken)
    released, _ = hold(quarantine)
    deleted, _ = hold(quarantine)
    route = relay_to(sink)
    results = asyncio.run(quarantine.release(released, {"relay": route, "secure": route}, "analyst", "fine"))
    assert all(r.ok for r in results.values()) and quarantine.require(released).status == RELEASED
    quarantine.delete(deleted, "analyst", "sent in error")
    assert quarantine.require(deleted).status == DELETED and not file_of(quarantine, deleted).exists()
    assert "notified" not in [e.action for e in quarantine.events()]


# --- the CLI and the relay ----------------------------------------------------------------------

def test_the_reason_is_asked_for_on_a_terminal_and_refused_without_one(monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from gateway.cli import _reason

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdin", Terminal("checked with the sender\n"))
    assert _reason(argparse.Namespace(reason=None), "releasing this message") == "checked with the sender"
    captured = capsys.readouterr()
    assert "Reason for releasing this message" in captured.err and captured.out == ""  # stdout may be the message
    monkeypatch.setattr("sys.stdin", Terminal(""))  # Ctrl-D
    with pytest.raises(SystemExit):
        _reason(argparse.Namespace(reason=None), "reading this message")
    monkeypatch.setattr("sys.stdin", io.StringIO("a reason on a pipe is not read\n"))
    with pytest.raises(SystemExit):
        _reason(argparse.Namespace(reason="  "), "deleting this message")
    assert "--reason" in capsys.readouterr().err


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
    assert sink.to("partner@supplier.example.com") == []


def test_a_gateway_with_a_key_holds_encrypted_and_the_cli_reads_and_rekeys(tmp_path: Path, gateway_factory,
                                                                           sink: Sink) -> None:
    first = new_key(tmp_path, "first")
    settings = {"routes": {"relay": smtp_route(sink), "secure": smtp_route(sink)},
                "quarantine": {"keys": [str(first)]}}
    gw: GatewayProcess = gateway_factory(settings)
    raw = make_message(subject="SECRET: plans", body=MARKER)
    with gw.smtp() as client:
        assert client.sendmail(SENDER, ["partner@supplier.example.com"], raw) == {}
    (held,) = [json.loads(line) for line in gw.cli("quarantine", "list", "--json").stdout.splitlines()]
    on_disk = (gw.workdir / "var" / "quarantine" / f"{held['id']}.eml").read_bytes()
    assert MARKER.encode() not in on_disk
    read = gw.cli("quarantine", "read", held["id"], "--reason", "complaint")
    assert read.returncode == 0 and MARKER in read.stdout
    gw.stop()
    assert "stored unencrypted" not in gw.log_file.read_text()

    second = new_key(tmp_path, "second")
    gw.config_file.write_text(yaml.safe_dump({**gw.settings, "quarantine": {"keys": [str(second), str(first)]}}))
    rekeyed = gw.cli("quarantine", "rekey", "--actor", "sec-team")
    assert rekeyed.returncode == 0, rekeyed.stderr
    assert f"1 held message(s) re-encrypted under key {load_key(second).hex_id}" in rekeyed.stdout
    gw.config_file.write_text(yaml.safe_dump({**gw.settings, "quarantine": {"keys": [str(second)]}}))
    read = gw.cli("quarantine", "read", held["id"], "--reason", "after rotation")
    assert read.returncode == 0 and MARKER in read.stdout
    gw.config_file.write_text(yaml.safe_dump({**gw.settings, "quarantine": {"keys": [str(first)]}}))
    refused = gw.cli("quarantine", "read", held["id"], "--reason", "with the old key only")
    assert refused.returncode == 1 and load_key(second).hex_id in refused.stderr and "Traceback" not in refused.stderr
