"""Faults around the gateway, each checked for the right answer to the client and no lost mail.

The next hop misbehaves (Postfix's smtp-sink with its reject, disconnect and delay options),
goes away and comes back; the database is refused or hangs (a TCP proxy in front of the
machine's PostgreSQL that the test cuts or freezes); the quarantine's disk is full (a tiny
tmpfs). A temporary problem must be answered 4xx, never 250, and the upstream's retry must
then get the message through exactly once. Everything is on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import resource
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import make_message
from tests.fault_support import (
    SENDER,
    SMTP_SINK,
    LimitedGateway,
    NoReply,
    PostfixSink,
    Proxy,
    Session,
    mta_send,
)
from tests.support import Sink, free_port, smtp_route

EXTERNAL = "partner@supplier.example.com"
INTERNAL = "colleague@council.example.gov.uk"


def tagged(tag: str, subject: str = "Minutes of the meeting") -> bytes:
    return make_message(subject=subject, headers={"X-Load-Id": tag})


def arrivals(sink: Sink) -> Counter[tuple[str, str]]:
    """(X-Load-Id, recipient) -> copies the sink received, of the tests' own messages
    (not bounces or held notices)."""
    out: Counter[tuple[str, str]] = Counter()
    for m in sink.messages:
        if m.message["X-Load-Id"] is None:
            continue
        for r in m.rcpt_tos:
            out[(str(m.message["X-Load-Id"]), r)] += 1
    return out


def codes(replies: list[tuple[int, str]]) -> list[int]:
    return [c for c, _ in replies]


def send_until_accepted(port: int, lmtp: bool, rcpts: list[str], raw: bytes, attempts: int = 3) -> None:
    """The upstream MTA's retries: only recipients not yet accepted are tried again."""
    pending = list(rcpts)
    for _ in range(attempts):
        replies = mta_send(port, pending, raw, lmtp=lmtp)
        assert all(c < 500 for c in codes(replies)), replies
        pending = [r for r, (c, _) in zip(pending, replies) if c != 250]
        if not pending:
            return
    raise AssertionError(f"still not accepted after {attempts} attempts: {pending}")


# --- the next hop -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hop(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LimitedGateway, int]]:
    """One gateway whose both routes go to a fixed port; each test puts its own next hop there."""
    port = free_port()
    route = f"smtp://127.0.0.1:{port}?tls=none"
    gw = LimitedGateway(tmp_path_factory.mktemp("hop"), {"delivery": {"timeout": 1},
                                                         "routes": {"relay": route, "secure": route}})
    gw.start()
    yield gw, port
    gw.stop()


def test_next_hop_down_and_back_gets_4xx_then_every_retry_arrives_once(hop: tuple[LimitedGateway, int]) -> None:
    gw, port = hop
    sink = Sink(port=port).start()
    try:
        for n in range(3):
            assert codes(mta_send(gw.smtp_port, [EXTERNAL], tagged(f"before-smtp-{n}"))) == [250]
            assert codes(mta_send(gw.lmtp_port, [EXTERNAL, INTERNAL], tagged(f"before-lmtp-{n}"),
                                  lmtp=True)) == [250, 250]
        sink.wait_for(6)
        assert len(arrivals(sink)) == 9 and set(arrivals(sink).values()) == {1}
    finally:
        sink.stop()   # the gateway's cached next-hop sessions die with it

    # While the next hop is down: ten messages at once over both protocols, every recipient 4xx.
    down = [(f"down-smtp-{n}", False, [EXTERNAL]) for n in range(5)] + \
           [(f"down-lmtp-{n}", True, [EXTERNAL, INTERNAL]) for n in range(5)]
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
        replies = list(pool.map(lambda m: mta_send(gw.lmtp_port if m[1] else gw.smtp_port, m[2], tagged(m[0]),
                                                   lmtp=m[1]), down))
    for (tag, _, rcpts), reply in zip(down, replies):
        assert len(reply) == len(rcpts) and all(400 <= c < 500 for c in codes(reply)), (tag, reply)

    sink = Sink(port=port).start()   # back
    try:
        for tag, lmtp, rcpts in down:
            send_until_accepted(gw.lmtp_port if lmtp else gw.smtp_port, lmtp, rcpts, tagged(tag))
        got = sink.wait_for(len(down))
    finally:
        sink.stop()
    seen = arrivals(sink)
    assert {k: n for k, n in seen.items()} == {(tag, r): 1 for tag, _, rcpts in down for r in rcpts}, got


NEXT_HOP_FAULTS = [
    pytest.param(["-r", "DATA"], 4, id="soft-reject-DATA-command"),
    pytest.param(["-r", "."], 4, id="soft-reject-end-of-data"),
    pytest.param(["-r", "RCPT"], 4, id="soft-reject-RCPT"),
    pytest.param(["-Q", "."], 4, id="421-and-disconnect-after-end-of-data"),
    pytest.param(["-q", "."], 4, id="disconnect-after-end-of-data-without-reply"),
    pytest.param(["-q", "DATA"], 4, id="disconnect-after-DATA-command"),
    pytest.param(["-q", "RCPT"], 4, id="disconnect-after-RCPT"),
    pytest.param(["-Q", "CONNECT"], 4, id="421-greeting"),
    pytest.param(["-A", "0"], 4, id="abort-in-DATA"),
    pytest.param(["-w", "3"], 4, id="DATA-reply-slower-than-delivery-timeout"),
    pytest.param(["-f", "."], 5, id="hard-reject-end-of-data"),
]


@pytest.mark.skipif(not os.path.exists(SMTP_SINK), reason="Postfix's smtp-sink is not installed")
@pytest.mark.parametrize("options, reply_class", NEXT_HOP_FAULTS)
def test_a_misbehaving_next_hop_is_never_acknowledged(hop: tuple[LimitedGateway, int], options: list[str],
                                                     reply_class: int, request: pytest.FixtureRequest) -> None:
    """Every recipient of every message gets the fault's class of reply (4xx for anything
    temporary), never 250, also on the gateway's next-hop session reused after the fault;
    once a working next hop is back, the upstream's retries arrive exactly once each."""
    gw, port = hop
    case = request.node.callspec.id
    messages = [(f"{case}-smtp-1", False, [EXTERNAL]),
                (f"{case}-lmtp", True, [EXTERNAL, INTERNAL]),
                (f"{case}-smtp-2", False, [EXTERNAL, INTERNAL])]
    faulty = PostfixSink(options, port=port).start()
    try:
        for tag, lmtp, rcpts in messages:  # one after another: the later ones may reuse the next-hop session
            try:
                reply = mta_send(gw.lmtp_port if lmtp else gw.smtp_port, rcpts, tagged(tag), lmtp=lmtp, timeout=30)
            except NoReply as e:
                pytest.fail(f"{tag}: no reply from the gateway: {e}")
            assert len(reply) == len(rcpts)
            assert all(c // 100 == reply_class for c in codes(reply)), (
                f"{tag} over {'LMTP' if lmtp else 'SMTP'}: next hop {' '.join(options)} should give "
                f"{reply_class}xx to every recipient, got {reply}")
    finally:
        faulty.stop()
    if reply_class == 5:
        return  # a permanent refusal goes back to the upstream, which bounces it
    sink = Sink(port=port).start()
    try:
        for tag, lmtp, rcpts in messages:
            send_until_accepted(gw.lmtp_port if lmtp else gw.smtp_port, lmtp, rcpts, tagged(tag))
        sink.wait_for(len(messages))
    finally:
        sink.stop()
    assert dict(arrivals(sink)) == {(tag, r): 1 for tag, _, rcpts in messages for r in rcpts}


# --- the database --------------------------------------------------------------------------

SECRET = "SECRET: depot plans"


@pytest.fixture
def db_proxy() -> Iterator[Proxy]:
    proxy = Proxy(5432).start()
    yield proxy
    proxy.thaw()
    proxy.stop()


@pytest.fixture
def db_gateway(tmp_path: Path, postgres_url: str, db_proxy: Proxy, sink: Sink) -> Iterator[LimitedGateway]:
    """A gateway whose quarantine index and history are in PostgreSQL, reached through db_proxy."""
    assert "127.0.0.1:5432" in postgres_url
    url = postgres_url.replace("127.0.0.1:5432", f"127.0.0.1:{db_proxy.port}")
    (tmp_path / "gw").mkdir()
    gw = LimitedGateway(tmp_path / "gw", {"storage": {"database_url": url, "timeout": 5}, "delivery": {"timeout": 5},
                                          "routes": {"relay": smtp_route(sink), "secure": smtp_route(sink)}})
    gw.start()
    yield gw
    db_proxy.thaw()
    gw.stop()


def held_items(gw: LimitedGateway) -> list[dict]:
    out = gw.cli("quarantine", "list", "--json")
    assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines()]


@pytest.mark.postgres
def test_database_down_mail_to_hold_gets_4xx_and_is_held_on_retry(
    db_gateway: LimitedGateway, db_proxy: Proxy, sink: Sink
) -> None:
    gw = db_gateway
    assert codes(mta_send(gw.smtp_port, [EXTERNAL], tagged("up", SECRET))) == [250]  # the index works

    db_proxy.cut()   # PostgreSQL refuses connections; open ones are closed
    assert 400 <= codes(mta_send(gw.smtp_port, [EXTERNAL], tagged("down-smtp", SECRET)))[0] < 500
    # Over LMTP the recipient to hold gets 4xx; the internal one, delivered, gets 250.
    lmtp = mta_send(gw.lmtp_port, [EXTERNAL, INTERNAL], tagged("down-lmtp", SECRET), lmtp=True)
    assert 400 <= lmtp[0][0] < 500 and lmtp[1][0] == 250, lmtp
    # Ordinary mail still flows: the history it would consult only sharpens the checks.
    assert codes(mta_send(gw.smtp_port, [EXTERNAL], tagged("benign"))) == [250]

    db_proxy.resume()
    send_until_accepted(gw.smtp_port, False, [EXTERNAL], tagged("down-smtp", SECRET))
    send_until_accepted(gw.lmtp_port, True, [EXTERNAL], tagged("down-lmtp", SECRET))
    held = held_items(gw)
    assert len(held) == 3 and all("secret-marking" in h["rules"] for h in held)
    assert all([r["address"] for r in h["recipients"]] == [EXTERNAL] for h in held)
    sink.wait_for(2 + 3)
    assert dict(arrivals(sink)) == {("down-lmtp", INTERNAL): 1, ("benign", EXTERNAL): 1}
    assert len(sink.bounces_to(SENDER)) == 3  # one held notice per hold, none for the failed ones


@pytest.mark.postgres
def test_a_hold_that_fails_at_the_database_leaves_no_content_behind(
    db_gateway: LimitedGateway, db_proxy: Proxy
) -> None:
    """Held content must not outlive its purpose: a hold answered 4xx (index not written)
    must not leave the message's bytes in the quarantine directory, unaccounted for."""
    gw = db_gateway
    db_proxy.cut()
    for n in range(3):
        assert 400 <= codes(mta_send(gw.smtp_port, [EXTERNAL], tagged(f"retry-{n}", SECRET)))[0] < 500
    db_proxy.resume()
    assert held_items(gw) == []
    qdir = gw.workdir / "var" / "quarantine"
    left = sorted(p.name for p in qdir.iterdir()) if qdir.exists() else []
    assert left == [], f"content of messages that were never held is left in {qdir}: {left}"


@pytest.mark.postgres
def test_a_database_that_hangs_gets_an_answer_not_silence(
    db_gateway: LimitedGateway, db_proxy: Proxy, sink: Sink
) -> None:
    """The database accepts connections but answers nothing (a hung server, a network that drops
    packets). The design says such a database gets 4xx for mail that must be held; silence would
    leave the upstream to time out (Postfix waits up to 600 s), then resend what the gateway may
    still hold or deliver later, and every session would pile up meanwhile. The bound below is
    four times the gateway's storage.timeout, the longest a database step may take."""
    gw = db_gateway
    assert codes(mta_send(gw.smtp_port, [EXTERNAL], tagged("warm", SECRET))) == [250]  # pooled connections exist
    db_proxy.freeze()

    async def both() -> list[object]:
        async def one(tag: str, subject: str) -> object:
            s = Session(gw.smtp_port, lmtp=False, timeout=20)
            try:
                return await s.send(SENDER, [EXTERNAL], tagged(tag, subject))
            except NoReply as e:
                return e
            finally:
                s.close()
        return await asyncio.gather(one("hung-secret", SECRET), one("hung-benign", "Minutes"))

    secret, benign = asyncio.run(both())
    db_proxy.thaw()
    assert not isinstance(secret, NoReply), f"mail to hold got no answer within 20 s while the database hung ({secret})"
    assert 400 <= secret[0][0] < 500, secret
    assert not isinstance(benign, NoReply), (
        f"ordinary mail got no answer within 20 s while the database hung ({benign})")
    assert benign[0][0] == 250 or 400 <= benign[0][0] < 500, benign


# --- the quarantine's disk -------------------------------------------------------------------

class FullDisk:
    """The quarantine directory on a 64 KiB tmpfs that can be filled and emptied. Where mounting is
    not permitted, the gateway's RLIMIT_FSIZE (set with preexec_fn, lifted with prlimit) makes
    writing a message larger than the limit fail with EFBIG instead."""

    FSIZE = 1 << 20

    def __init__(self, directory: Path):
        self.directory = directory
        directory.mkdir(parents=True)
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(directory)],
                              capture_output=True, text=True, check=False)
        self.mounted = done.returncode == 0
        self.why = done.stderr.strip()
        self.pid: int | None = None

    @property
    def message_body(self) -> str:
        # Over the file size limit when that is what stands for the full disk.
        return "Figures for the depot.\n" if self.mounted else ("y" * 70 + "\n") * (2 * self.FSIZE // 71)

    def fill(self) -> None:
        if not self.mounted:
            return  # the limit is in place from the start
        fd = os.open(self.directory / "filler", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        try:
            while os.write(fd, b"\0" * 4096):
                pass
        except OSError:
            pass  # no space left
        finally:
            os.close(fd)

    def make_room(self) -> None:
        if self.mounted:
            (self.directory / "filler").unlink()
        else:
            assert self.pid is not None
            _, hard = resource.prlimit(self.pid, resource.RLIMIT_FSIZE)
            resource.prlimit(self.pid, resource.RLIMIT_FSIZE, (hard, hard))

    def entries(self) -> list[str]:
        return sorted(p.name for p in self.directory.iterdir() if p.name != "filler")

    def close(self) -> None:
        if self.mounted and subprocess.run(["umount", str(self.directory)], capture_output=True,
                                           check=False).returncode != 0:
            subprocess.run(["umount", "-l", str(self.directory)], capture_output=True, check=False)


@pytest.fixture
def full_disk(tmp_path: Path, sink: Sink) -> Iterator[tuple[LimitedGateway, FullDisk]]:
    disk = FullDisk(tmp_path / "quarantine")
    (tmp_path / "gw").mkdir()
    gw = LimitedGateway(tmp_path / "gw", {"storage": {"quarantine_dir": str(disk.directory)},
                                          "routes": {"relay": smtp_route(sink), "secure": smtp_route(sink)}},
                        fsize=None if disk.mounted else FullDisk.FSIZE)
    try:
        gw.start()
        assert gw.proc is not None
        disk.pid = gw.proc.pid
        yield gw, disk
    finally:
        gw.stop()
        disk.close()


def test_quarantine_disk_full_gets_4xx_and_the_retry_is_held_once_there_is_room(
    full_disk: tuple[LimitedGateway, FullDisk], sink: Sink
) -> None:
    gw, disk = full_disk
    disk.fill()
    smtp_raw = make_message(subject=SECRET, body=disk.message_body, headers={"X-Load-Id": "full-smtp"})
    lmtp_raw = make_message(subject=SECRET, body=disk.message_body, headers={"X-Load-Id": "full-lmtp"})
    reply = mta_send(gw.smtp_port, [EXTERNAL], smtp_raw)
    assert 400 <= reply[0][0] < 500, f"disk full ({'tmpfs' if disk.mounted else 'RLIMIT_FSIZE'}): {reply}"
    reply = mta_send(gw.lmtp_port, [EXTERNAL, INTERNAL], lmtp_raw, lmtp=True)
    assert 400 <= reply[0][0] < 500 and reply[1][0] == 250, reply

    disk.make_room()
    send_until_accepted(gw.smtp_port, False, [EXTERNAL], smtp_raw)
    send_until_accepted(gw.lmtp_port, True, [EXTERNAL], lmtp_raw)
    held = held_items(gw)
    assert len(held) == 2 and all("secret-marking" in h["rules"] for h in held)
    assert {f"{h['id']}.eml" for h in held} <= set(disk.entries())
    sink.wait_for(1 + 2)
    assert dict(arrivals(sink)) == {("full-lmtp", INTERNAL): 1}
    assert len(sink.bounces_to(SENDER)) == 2  # one held notice per hold, none for the failed ones


def test_a_quarantine_write_that_fails_leaves_no_partial_file(
    full_disk: tuple[LimitedGateway, FullDisk]
) -> None:
    """A hold that failed for want of space must not leave its partial temporary file behind:
    nothing ever removes it, and it keeps the space taken once there is room again."""
    gw, disk = full_disk
    disk.fill()
    for n in range(3):
        raw = make_message(subject=SECRET, body=disk.message_body, headers={"X-Load-Id": f"partial-{n}"})
        assert 400 <= mta_send(gw.smtp_port, [EXTERNAL], raw)[0][0] < 500
    disk.make_room()
    assert disk.entries() == [], f"left in the quarantine directory after failed holds: {disk.entries()}"
