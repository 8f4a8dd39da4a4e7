"""The relay under load: many messages through a gateway that is killed and restarted, and
a thousand connections held open by idle and slow clients.

Loopback only: a real gateway process (`dlp-gateway serve`), a real SMTP sink as the next
hop, and clients that behave like an upstream MTA (a message whose transaction failed or
got no reply is sent again). Every loop is bounded by a deadline; waiting is polling.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import make_message
from tests.fault_support import (
    SENDER,
    LimitedGateway,
    NoReply,
    Session,
    open_fds,
    raise_nofile,
    rss_kib,
)
from tests.support import Sink, _children, smtp_route, wait_until

EXTERNAL = "partner@supplier.example.com"
INTERNAL = "colleague@council.example.gov.uk"
SESSIONS = 20
KILLS = 2
LOAD = {"lmtp": 10_000, "smtp": 2_000}
DEADLINE = 150.0                 # seconds for one whole load; a generous bound, never the assertion
ID_HEADER = re.compile(rb"^X-Load-Id: (\S+)\r?$", re.MULTILINE)


def template() -> bytes:
    """A benign ~1.5 KB message with @@ID@@ where each message's unique id goes."""
    body = "The minutes of Tuesday's meeting are below; the budget lines were agreed.\n" * 15
    raw = make_message(body=body, subject="Minutes @@ID@@", headers={"X-Load-Id": "@@ID@@"})
    return re.sub(rb"Message-ID: <[^>]*>", b"Message-ID: <@@ID@@@council.example.gov.uk>", raw)


@dataclass
class LoadResult:
    accepted: dict[str, int] = field(default_factory=dict)      # id -> attempts until every recipient had 250
    refused: dict[str, str] = field(default_factory=dict)       # id -> a permanent (5xx) reply
    unknown: Counter[str] = field(default_factory=Counter)      # id -> attempts whose reply was lost after DATA
    temporary: int = 0                                           # 4xx replies
    no_reply: int = 0                                            # attempts with no reply at all
    kills: list[float] = field(default_factory=list)             # seconds into the load
    restarts: list[float] = field(default_factory=list)          # seconds each restart took
    seconds: float = 0.0


async def send_load(gw: LimitedGateway, lmtp: bool, ids: list[str], rcpts_of: dict[str, list[str]],
                    raw: bytes) -> LoadResult:
    result = LoadResult()
    queue: asyncio.Queue[str] = asyncio.Queue()
    for i in ids:
        queue.put_nowait(i)
    started = time.monotonic()
    deadline = started + DEADLINE
    port = gw.lmtp_port if lmtp else gw.smtp_port

    async def client() -> None:
        session = Session(port, lmtp, timeout=60)
        try:
            while not queue.empty() and time.monotonic() < deadline:
                msg_id = queue.get_nowait()
                pending = list(rcpts_of[msg_id])
                data = raw.replace(b"@@ID@@", msg_id.encode())
                attempts = 0
                while pending and time.monotonic() < deadline:
                    attempts += 1
                    try:
                        replies = await session.send(SENDER, pending, data)
                    except NoReply as e:
                        result.no_reply += 1
                        if e.after_data:
                            result.unknown[msg_id] += 1
                        await asyncio.sleep(0.05)   # back off while the gateway restarts
                        continue
                    permanent = [f"{c} {t}" for c, t in replies if c >= 500]
                    if permanent:
                        result.refused[msg_id] = permanent[0]
                        break
                    result.temporary += sum(1 for c, _ in replies if 400 <= c < 500)
                    # Over LMTP only the recipients that were not accepted are tried again;
                    # over SMTP one reply covers them all.
                    pending = [r for r, (c, _) in zip(pending, replies) if c != 250]
                    if pending:
                        await asyncio.sleep(0.05)
                if not pending:
                    result.accepted[msg_id] = attempts
        finally:
            session.close()

    async def killer() -> None:
        for k in range(1, KILLS + 1):
            while len(result.accepted) < len(ids) * k // (KILLS + 1):
                if time.monotonic() > deadline:
                    return
                await asyncio.sleep(0.01)
            result.kills.append(time.monotonic() - started)
            await asyncio.to_thread(gw.kill)
            t = time.monotonic()
            await asyncio.to_thread(gw.start)
            result.restarts.append(time.monotonic() - t)

    await asyncio.gather(killer(), *(client() for _ in range(SESSIONS)))
    result.seconds = time.monotonic() - started
    return result


@pytest.mark.parametrize("protocol", ["lmtp", "smtp"])
def test_every_message_arrives_through_two_sigkills(protocol: str, tmp_path: Path) -> None:
    """LOAD[protocol] messages over 20 concurrent sessions while the gateway is SIGKILLed and
    restarted twice: every message is delivered at least once, and exactly once unless a kill
    cut off the reply to an attempt whose data had all been sent (the only window in which the
    next hop may have it while the client does not know)."""
    lmtp = protocol == "lmtp"
    count = LOAD[protocol]
    sink = Sink().start()
    (tmp_path / "gw").mkdir()
    gw = LimitedGateway(tmp_path / "gw", {"server": {"workers": 2},
                                          "routes": {"relay": smtp_route(sink), "secure": smtp_route(sink)}})
    try:
        gw.start()
        ids = [f"{protocol}-{n:05d}" for n in range(count)]
        # Every tenth message also goes to an internal colleague: two recipients, one reply each over LMTP.
        rcpts_of = {i: [EXTERNAL, INTERNAL] if n % 10 == 0 else [EXTERNAL] for n, i in enumerate(ids)}
        result = asyncio.run(send_load(gw, lmtp, ids, rcpts_of, template()))
        expected = sum(len(r) for r in rcpts_of.values())
        wait_until(lambda: sum(len(m.rcpt_tos) for m in sink.messages) >= expected, timeout=30)
    finally:
        gw.stop()
        sink.stop()

    delivered: Counter[tuple[str, str]] = Counter()
    for m in sink.messages:
        found = ID_HEADER.search(m.data)
        assert found, m.data[:500]
        for rcpt in m.rcpt_tos:
            delivered[(found.group(1).decode(), rcpt)] += 1
    duplicates = {k: n for k, n in delivered.items() if n > 1}
    print(f"\n{protocol}: {count} messages ({sum(len(r) for r in rcpts_of.values())} recipients) over "
          f"{SESSIONS} sessions in {result.seconds:.1f} s ({count / result.seconds:.0f} msg/s); kills at "
          f"{', '.join(f'{k:.1f}' for k in result.kills)} s; restarts took "
          f"{', '.join(f'{r:.1f}' for r in result.restarts)} s; {result.temporary} 4xx, {result.no_reply} "
          f"attempts without a reply ({sum(result.unknown.values())} after the data); duplicates {duplicates}")

    assert result.refused == {}, f"permanent replies: {list(result.refused.items())[:5]}"
    assert len(result.kills) == KILLS and len(result.restarts) == KILLS
    assert len(result.accepted) == count, (
        f"only {len(result.accepted)} of {count} messages were accepted within {DEADLINE:.0f} s")
    missing = [(i, r) for i in ids for r in rcpts_of[i] if delivered[(i, r)] == 0]
    assert missing == [], f"{len(missing)} accepted recipients never reached the next hop: {missing[:5]}"
    assert {i for i, _ in delivered} == set(ids)  # nothing that was not sent
    # A duplicate only where a kill cut off the reply after the whole message was sent, and no
    # more copies than such lost replies.
    unexplained = {k: n for k, n in duplicates.items() if n > 1 + result.unknown[k[0]]}
    assert unexplained == {}, f"duplicates not explained by a lost reply: {unexplained}"


# --- a thousand connections and slow clients ---------------------------------------------------

IDLE = 900            # connect, read the greeting, say nothing
TRICKLE = 50          # send "NOOP\r\n" a byte every TRICKLE_GAP seconds
TRICKLE_GAP = 1.5
HEAVY_STALL = 40      # stop in DATA after 1 MB and never finish (they hang up at the end)
LIGHT_STALL = 10      # stop in the middle of a small message in DATA, finish it at the end
HEAVY_BYTES = 1_000_000
RSS_LIMIT_KIB = 600 * 1024


def tree_rss(pid: int) -> tuple[int, int]:
    """VmRSS of the gateway process, and of it with its children (the inspection workers), KiB."""
    main = rss_kib(pid)
    total = main
    for child in _children(pid):
        try:
            total += rss_kib(child)
        except (OSError, KeyError):
            pass  # gone meanwhile
    return main, total


async def _reply(reader: asyncio.StreamReader) -> bytes:
    while True:
        line = await asyncio.wait_for(reader.readline(), 60)
        if not line:
            raise ConnectionError("closed")
        if line[3:4] != b"-":
            return line


async def _open(port: int, gate: asyncio.Semaphore) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    async with gate:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert (await _reply(reader)).startswith(b"220")
        return reader, writer


async def _start_data(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    for command in (b"EHLO slow.test\r\n", f"MAIL FROM:<{SENDER}>\r\n".encode(),
                    f"RCPT TO:<{EXTERNAL}>\r\n".encode()):
        writer.write(command)
        assert (await _reply(reader)).startswith(b"250"), command
    writer.write(b"DATA\r\n")
    assert (await _reply(reader)).startswith(b"354")


def test_a_thousand_connections_and_slow_clients_do_not_stop_normal_mail(tmp_path: Path) -> None:
    """1,000 connections held at once (idle, trickling a byte every 1.5 s, stalled in DATA, 40 of
    them with 1 MB of unfinished data): a normal message still gets through over SMTP and LMTP, the
    trickling and stalled clients are served in the end, and the gateway's RSS stays under 600 MB."""
    raise_nofile(4096)
    sink = Sink().start()
    (tmp_path / "gw").mkdir()
    gw = LimitedGateway(tmp_path / "gw", {"server": {"workers": 2},
                                          "routes": {"relay": smtp_route(sink), "secure": smtp_route(sink)}},
                        nofile=4096)
    samples: list[tuple[int, int]] = []   # (gateway process RSS, with its workers), KiB
    try:
        gw.start()
        assert gw.proc is not None
        pid = gw.proc.pid
        baseline = tree_rss(pid)
        report = asyncio.run(_thousand_connections(gw, pid, samples, sink))
        peak = max(main for main, _ in samples)
        print(f"\ngateway RSS: baseline {baseline[0] / 1024:.0f} MiB ({baseline[1] / 1024:.0f} MiB with workers), "
              f"peak {peak / 1024:.0f} MiB ({max(t for _, t in samples) / 1024:.0f} MiB with workers) with "
              f"{IDLE + TRICKLE + HEAVY_STALL + LIGHT_STALL} connections; {report}")
        assert peak < RSS_LIMIT_KIB, f"gateway RSS {peak / 1024:.0f} MiB over {RSS_LIMIT_KIB // 1024} MiB"
    finally:
        gw.stop()
        sink.stop()


async def _thousand_connections(gw: LimitedGateway, pid: int, samples: list[int],
                                sink: Sink) -> str:
    gate = asyncio.Semaphore(100)   # at most 100 connects in flight (the listen backlog is 100)
    stop_sampling = asyncio.Event()

    async def sample() -> None:
        while not stop_sampling.is_set():
            samples.append(tree_rss(pid))
            await asyncio.sleep(0.1)

    sampler = asyncio.create_task(sample())
    started = time.monotonic()
    total = IDLE + TRICKLE + HEAVY_STALL + LIGHT_STALL
    conns = await asyncio.gather(*(_open(gw.smtp_port, gate) for _ in range(total)))
    idle = conns[:IDLE]
    trickle = conns[IDLE:IDLE + TRICKLE]
    heavy = conns[IDLE + TRICKLE:IDLE + TRICKLE + HEAVY_STALL]
    light = conns[IDLE + TRICKLE + HEAVY_STALL:]
    connected = time.monotonic() - started

    # Stalled in DATA: the heavy ones with 1 MB sent, the light ones half-way through a small message.
    line = b"x" * 76 + b"\r\n"
    heavy_data = b"Subject: stalled\r\n\r\n" + line * (HEAVY_BYTES // len(line))
    light_raw = [make_message(subject=f"stalled {n}", headers={"X-Load-Id": f"light-{n}"}) for n in range(LIGHT_STALL)]
    for reader, writer in heavy:
        await _start_data(reader, writer)
        writer.write(heavy_data)
        await writer.drain()
    for (reader, writer), raw in zip(light, light_raw):
        await _start_data(reader, writer)
        writer.write(raw[: len(raw) // 2])
        await writer.drain()

    async def trickle_noop(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        for byte in b"NOOP\r\n":
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(TRICKLE_GAP)
        return await _reply(reader)

    trickling = asyncio.gather(*(trickle_noop(r, w) for r, w in trickle))
    # Every connection is really held by the gateway: one descriptor each.
    fds_held = await asyncio.to_thread(wait_until, lambda: open_fds(pid) >= len(conns), 30)
    assert fds_held, f"gateway holds {open_fds(pid)} descriptors for {len(conns)} connections"

    # A normal message, over SMTP and over LMTP, still gets through while all that goes on.
    t = time.monotonic()
    normal = make_message(subject="normal", headers={"X-Load-Id": "normal-smtp"})
    smtp = Session(gw.smtp_port, lmtp=False, timeout=60)
    lmtp = Session(gw.lmtp_port, lmtp=True, timeout=60)
    assert [c for c, _ in await smtp.send(SENDER, [EXTERNAL], normal)] == [250]
    assert [c for c, _ in await lmtp.send(SENDER, [EXTERNAL, INTERNAL],
                                          normal.replace(b"normal-smtp", b"normal-lmtp"))] == [250, 250]
    smtp.close()
    lmtp.close()
    normal_seconds = time.monotonic() - t

    # The slow clients are served, not just tolerated.
    assert all(r.startswith(b"250") for r in await trickling)
    for (reader, writer), raw in zip(light, light_raw):
        writer.write(raw[len(raw) // 2:] + b".\r\n")
        assert (await _reply(reader)).startswith(b"250")
    # The idle ones are all still there and answered.
    for reader, writer in idle:
        writer.write(b"NOOP\r\n")
    replies = await asyncio.gather(*(_reply(r) for r, _ in idle))
    assert all(r.startswith(b"250") for r in replies)
    stop_sampling.set()
    await sampler
    for _, writer in conns:
        writer.close()

    sink.wait_for(2 + LIGHT_STALL)
    tags = Counter(m.message["X-Load-Id"] for m in sink.messages)
    assert tags["normal-smtp"] == 1 and tags["normal-lmtp"] == 1
    assert all(tags[f"light-{n}"] == 1 for n in range(LIGHT_STALL))
    assert "stalled" not in [m.message["Subject"] for m in sink.messages]  # unfinished data is never relayed
    return (f"connected in {connected:.1f} s, normal messages took {normal_seconds:.2f} s, "
            f"whole scenario {time.monotonic() - started:.1f} s")
