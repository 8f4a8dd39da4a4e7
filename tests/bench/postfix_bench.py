"""Postfix benchmark: the gateway as Postfix's content filter, against Postfix alone.

Run by hand from the repository root (as root, with Postfix installed):
`.venv/bin/python -m tests.bench.postfix_bench [--quick | --messages N] [--sessions S] [--length BYTES]`;
never in CI.

It starts, all on 127.0.0.1 and on free ports:

  sink     an SMTP sink in its own process that notes when each message arrives;
  gateway  a fresh `dlp-gateway --log-level WARNING serve` (workers: one per CPU) whose
           routes are Postfix's reinjection ports;
  postfix  a private Postfix instance (tests/postfix_support.py) configured with the
           shipped deploy/postfix/ snippets, relayhost = the sink, with two front ports:
             gateway  content_filter = the gateway (main.cf):  Postfix -> gateway -> Postfix -> sink
             direct   -o content_filter= (no filter):          Postfix -> sink

and for each path sends a warm-up (not measured) and then the load with Postfix's
`smtp-source` (N messages of --length bytes of body, --sessions parallel sessions, a new
connection per message, from a council address to one external recipient, so the
gateway adds the disclaimer), and waits until the sink has every message.

For each path it reports messages/s (messages at the sink divided by the time from the
first message's injection to the last one's arrival), p50/p99/max latency from injection
to arrival, and, for the gateway path, the gateway's peak memory (the largest sum of
VmRSS over the gateway process and its workers, sampled every 100 ms, and the sum of
each process's VmHWM), plus the gateway/direct ratio of messages/s.

Injection time: Postfix runs with enable_long_queue_ids, whose queue IDs encode the time
the queue file was created (at MAIL FROM) to the microsecond; the sink reads the queue
ID from the front smtpd's Received header (the oldest one) of each message it receives.

Any message missing at the sink, a message left in Postfix's queue, an audit verdict
other than deliver, a gateway log line at WARNING or above, or an smtp-source failure is
reported as a problem and makes the exit status 1. Nothing is left running: the sink, the
gateway (and its workers) and Postfix (every process of the instance) are stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tests.bench.relay_bench import Gateway, MemoryPeak, MemorySampler, cancel_on_signals, percentile
from tests.postfix_support import PostfixInstance, dlp_snippets, postfix_missing, queued_at
from tests.support import free_port

HOST = "127.0.0.1"  # the only address this benchmark uses
REPO = Path(__file__).resolve().parents[2]
RESULTS_DIR = REPO / "var" / "bench"
SENDER = "jane.doe@council.example.gov.uk"
RECIPIENT = "partner@supplier.example.com"
DEFAULT_MESSAGES = 2000
QUICK_MESSAGES = 200
DEFAULT_SESSIONS = 20
DEFAULT_LENGTH = 20000
DEFAULT_WARMUP = 20
DEFAULT_PROBES = 20
READY_TIMEOUT = 60.0
STOP_GRACE = 15.0
POLL = 0.2
POSTFIX_ID = re.compile(rb"\(Postfix\) with E?SMTP id (\w+)")
SUBJECT = re.compile(rb"(?mi)^Subject: ?(.*?)\r?$")


# ---------------------------------------------------------------- the sink (its own process)


def serve_sink() -> None:
    """`python -m tests.bench.postfix_bench --sink`: prints READY <port>; on standard input
    `count` -> COUNT <n>, `dump` -> one JSON line of [arrival, queue ID, subject] records,
    `reset` forgets them, `quit` (or end of input) stops."""
    from aiosmtpd.smtp import SMTP

    records: list[tuple[float, str, str]] = []

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            arrived = time.time()
            data = envelope.original_content or b""
            head = data[: data.find(b"\r\n\r\n")] if b"\r\n\r\n" in data else data
            ids = POSTFIX_ID.findall(head)
            subject = SUBJECT.search(head)
            records.append((arrived, ids[-1].decode() if ids else "",
                            subject.group(1).decode("ascii", "replace") if subject else ""))
            return "250 2.0.0 OK"

    async def run() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(lambda: SMTP(Handler(), hostname="bench-sink", decode_data=False),
                                          host=HOST, port=0)
        print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
        reader = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            command = line.strip().decode()
            if command == "count":
                print(f"COUNT {len(records)}", flush=True)
            elif command == "dump":
                print(json.dumps(records), flush=True)
            elif command == "reset":
                records.clear()
                print("OK", flush=True)
            elif command == "quit":
                break
        server.close()
        await server.wait_closed()

    asyncio.run(run())


class SinkProcess:
    def __init__(self, workdir: Path):
        self.stderr_path = workdir / "sink.stderr"
        self.port = 0
        self.proc: asyncio.subprocess.Process | None = None
        self._stderr: TextIO | None = None

    async def start(self) -> None:
        self._stderr = open(self.stderr_path, "w")
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.bench.postfix_bench", "--sink", cwd=REPO,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=self._stderr,
            limit=64 * 1024 * 1024, start_new_session=True)
        line = await self._reply()
        if not line.startswith("READY "):
            raise RuntimeError(f"the sink did not start: {line!r}; see {self.stderr_path}")
        self.port = int(line.split()[1])

    async def _reply(self) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        return (await asyncio.wait_for(self.proc.stdout.readline(), 30)).decode().strip()

    async def ask(self, command: str) -> str:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self._reply()

    async def count(self) -> int:
        return int((await self.ask("count")).split()[1])

    async def records(self) -> list[tuple[float, str, str]]:
        return [tuple(r) for r in json.loads(await self.ask("dump"))]  # type: ignore[misc]

    async def reset(self) -> None:
        await self.ask("reset")

    async def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.returncode is None:
            if proc.stdin is not None and not proc.stdin.is_closing():
                proc.stdin.write(b"quit\n")
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), STOP_GRACE)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        if self._stderr is not None:
            self._stderr.close()


# ---------------------------------------------------------------- the gateway


def gateway_process(workdir: Path, relay_port: int, secure_port: int) -> Gateway:
    """`dlp-gateway serve` with its routes on Postfix's reinjection ports."""
    return Gateway(workdir, {"relay": f"smtp://{HOST}:{relay_port}?tls=none",
                             "secure": f"smtp://{HOST}:{secure_port}?tls=none"})


# ---------------------------------------------------------------- one run


@dataclass
class RunResult:
    path: str                       # "direct" or "gateway"
    messages: int
    sessions: int
    length: int
    at_sink: int
    inject_seconds: float           # smtp-source's wall-clock time (Postfix accepting the load)
    seconds: float                  # first injection to last arrival
    messages_per_second: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    mean_ms: float
    idle_p50_ms: float = 0.0        # one message at a time, each sent once the one before has arrived
    idle_max_ms: float = 0.0
    memory: MemoryPeak | None = None
    audit_verdicts: dict[str, int] | None = None
    problems: list[str] = field(default_factory=list)


async def smtp_source(port: int, messages: int, sessions: int, length: int, subject: str) -> tuple[int, str]:
    tool = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
    proc = await asyncio.create_subprocess_exec(
        tool, "-m", str(messages), "-s", str(sessions), "-l", str(length), "-f", SENDER, "-t", RECIPIENT,
        "-S", subject, "-M", "bench-client.test", f"{HOST}:{port}",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    return proc.returncode or 0, out.decode(errors="replace").strip()


async def wait_at_sink(sink: SinkProcess, count: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    got = await sink.count()
    while got < count and time.monotonic() < deadline:
        await asyncio.sleep(POLL)
        got = await sink.count()
    return got


async def wait_queue_empty(postfix: PostfixInstance, timeout: float) -> list[Any]:
    deadline = time.monotonic() + timeout
    left = await asyncio.to_thread(postfix.queue)
    while left and time.monotonic() < deadline:
        await asyncio.sleep(POLL)
        left = await asyncio.to_thread(postfix.queue)
    return left


async def run_path(path: str, port: int, sink: SinkProcess, postfix: PostfixInstance,
                   gateway: Gateway | None, args: argparse.Namespace) -> RunResult:
    problems: list[str] = []
    timeout = max(120.0, args.messages / 5)
    if args.warmup:
        await sink.reset()
        rc, out = await smtp_source(port, args.warmup, 1, args.length, f"postfix-bench warm-up {path}")
        if rc:
            problems.append(f"warm-up smtp-source exited {rc}: {out[-300:]}")
        if await wait_at_sink(sink, args.warmup, timeout) < args.warmup:
            problems.append("warm-up messages did not all reach the sink")
        await wait_queue_empty(postfix, 30)
    await sink.reset()
    sampler = None
    if gateway is not None:
        assert gateway.proc is not None
        gateway.note_processes()
        sampler = MemorySampler(gateway.proc.pid)
        sampler.start()
    subject = f"postfix-bench {path}"
    started = time.time()
    rc, out = await smtp_source(port, args.messages, args.sessions, args.length, subject)
    injected = time.time() - started
    if rc:
        problems.append(f"smtp-source exited {rc}: {out[-300:]}")
    at_sink = await wait_at_sink(sink, args.messages, timeout)
    memory = await sampler.stop() if sampler is not None else None
    if gateway is not None:
        gateway.note_processes()
    records = [r for r in await sink.records() if r[2] == subject]
    if at_sink != args.messages or len(records) != args.messages:
        problems.append(f"{len(records)} of {args.messages} messages reached the sink")
    left = await wait_queue_empty(postfix, 30)
    if left:
        problems.append(f"{len(left)} message(s) left in Postfix's queue, e.g. {left[0]}")
    latencies, injections, arrivals = timings(records, problems)
    seconds = (max(arrivals) - min(injections)) if arrivals else 0.0
    # Unloaded latency: one message at a time, so no message waits behind another.
    await sink.reset()
    probe_subject = f"postfix-bench probe {path}"
    for i in range(args.probes):
        rc, out = await smtp_source(port, 1, 1, args.length, probe_subject)
        if rc or await wait_at_sink(sink, i + 1, 30) < i + 1:
            problems.append(f"probe message {i + 1} did not reach the sink (smtp-source: {rc} {out[-200:]})")
            break
    idle, _, _ = timings([r for r in await sink.records() if r[2] == probe_subject], problems)
    return RunResult(
        path=path, messages=args.messages, sessions=args.sessions, length=args.length, at_sink=len(records),
        inject_seconds=round(injected, 3), seconds=round(seconds, 3),
        messages_per_second=round(len(latencies) / seconds, 1) if seconds else 0.0,
        p50_ms=round(percentile(latencies, 50), 1), p99_ms=round(percentile(latencies, 99), 1),
        max_ms=round(max(latencies, default=0.0), 1),
        mean_ms=round(statistics.fmean(latencies), 1) if latencies else 0.0,
        idle_p50_ms=round(percentile(idle, 50), 1), idle_max_ms=round(max(idle, default=0.0), 1),
        memory=memory, problems=problems)


def timings(records: list[tuple[float, str, str]], problems: list[str]) -> tuple[list[float], list[float], list[float]]:
    """(latencies in ms, injection times, arrival times) of the records with a long queue ID."""
    latencies, injections, arrivals = [], [], []
    for arrived, queue_id, _ in records:
        try:
            queued = queued_at(queue_id)
        except ValueError:
            problems.append(f"a message arrived without a long Postfix queue ID ({queue_id!r})")
            continue
        injections.append(queued)
        arrivals.append(arrived)
        latencies.append((arrived - queued) * 1000)
    return latencies, injections, arrivals


# ---------------------------------------------------------------- the whole benchmark


async def run_benchmark(args: argparse.Namespace, workdir: Path) -> tuple[list[RunResult], PostfixInstance | None]:
    task = asyncio.current_task()
    assert task is not None
    cancel_on_signals(task)
    sink = SinkProcess(workdir)
    relay_port, secure_port, direct_port = free_port(), free_port(), free_port()
    gateway = gateway_process(workdir / "gateway", relay_port, secure_port)
    postfix: PostfixInstance | None = None
    results: list[RunResult] = []
    try:
        await sink.start()
        await gateway.start()
        main_cf, master_cf = dlp_snippets(gateway.lmtp_port, relay_port, secure_port)
        master_cf += (f"\n# The benchmark's baseline: the same Postfix without the filter.\n"
                      f"127.0.0.1:{direct_port} inet n - n - - smtpd\n"
                      f"  -o syslog_name=postfix/direct\n  -o content_filter=\n")
        postfix = PostfixInstance(workdir / "postfix", relayhost=f"[{HOST}]:{sink.port}",
                                  main_cf=main_cf, master_cf=master_cf)
        await asyncio.to_thread(postfix.start)
        args.postfix_version = postfix.parameter("mail_version")
        for path, port in (("direct", direct_port), ("gateway", postfix.front_port)):
            print(f"  {path}: {args.messages} messages over {args.sessions} sessions ...", flush=True)
            results.append(await run_path(path, port, sink, postfix, gateway if path == "gateway" else None, args))
    finally:
        if postfix is not None:
            await asyncio.to_thread(postfix.stop)
        await gateway.stop()
        await sink.stop()
    for r in results:
        if r.path == "gateway":
            r.audit_verdicts = gateway.audit()[0]
            expected = args.messages + args.warmup + args.probes
            if sum(r.audit_verdicts.values()) != expected:
                r.problems.append(f"audit log has {sum(r.audit_verdicts.values())} decisions for {expected} messages")
            if set(r.audit_verdicts) - {"deliver"}:
                r.problems.append(f"audit verdicts other than deliver: {r.audit_verdicts}")
            log = gateway.log_lines()
            if log:
                r.problems.append(f"gateway logged {len(log)} line(s) at WARNING or above, e.g. {log[0][:200]}")
            if gateway.leftovers:
                r.problems.append(f"{gateway.leftovers} gateway process(es) outlived it and were killed")
    if postfix is not None and postfix.processes() and results:
        results[-1].problems.append("Postfix processes outlived the instance")
    return results, postfix


def ratio(results: list[RunResult]) -> float | None:
    by_path = {r.path: r for r in results}
    if "direct" in by_path and "gateway" in by_path and by_path["direct"].messages_per_second:
        return round(by_path["gateway"].messages_per_second / by_path["direct"].messages_per_second, 3)
    return None


def table(results: list[RunResult], meta: dict[str, Any]) -> str:
    lines = [
        f"Postfix benchmark: {meta['messages']} messages of {meta['length']} bytes of body (smtp-source), "
        f"{meta['sessions']} sessions, {meta['warmup']} warm-up messages first; {meta['cpus']} CPUs, "
        f"Postfix {meta['postfix']}, gateway workers: one per CPU",
        "",
        f"{'path':<8} {'msgs/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'at sink':>7} "
        f"{'inject s':>8} {'idle p50':>8} {'idle max':>8} {'peak RSS MiB':>12} {'ΣHWM MiB':>9}",
    ]
    for r in results:
        rss = f"{r.memory.peak_rss_mib:12.1f} {r.memory.sum_hwm_mib:9.1f}" if r.memory else f"{'-':>12} {'-':>9}"
        lines.append(f"{r.path:<8} {r.messages_per_second:8.1f} {r.p50_ms:8.1f} {r.p99_ms:8.1f} {r.max_ms:8.1f} "
                     f"{r.at_sink:7d} {r.inject_seconds:8.2f} {r.idle_p50_ms:8.1f} {r.idle_max_ms:8.1f} {rss}")
    if (q := ratio(results)) is not None:
        lines.append(f"gateway/direct messages/s: {q:.3f}")
    lines += [
        "",
        "direct: smtp-source -> Postfix -> sink; gateway: smtp-source -> Postfix -> dlp-filter (LMTP) -> gateway",
        "        -> Postfix reinjection (127.0.0.1, deploy/postfix/master.cf) -> sink",
        "latency: Postfix queue-file creation at the front port (long queue ID) to arrival at the sink;",
        "msgs/s: messages at the sink / (last arrival - first injection); inject s: smtp-source's own run time;",
        f"idle p50/max: latency of {meta['probes']} messages sent one at a time after the load (no queueing)",
        "peak RSS: largest sum of VmRSS over the gateway and its descendants, sampled every 100 ms; ΣHWM: sum of",
        "their VmHWM (an upper bound)",
    ]
    for r in results:
        if r.audit_verdicts is not None:
            lines.append(f"audit verdicts (gateway, warm-up and probes included): {r.audit_verdicts}")
    problems = [(r, p) for r in results for p in r.problems]
    lines.append("")
    if not problems:
        lines.append("every message reached the sink once, nothing was left in Postfix's queue, "
                     "and the gateway delivered every one")
    for r, p in problems:
        lines.append(f"PROBLEM ({r.path}): {p}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.postfix_bench",
                                     description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--messages", type=int, default=DEFAULT_MESSAGES, metavar="N",
                      help=f"messages in each run (default {DEFAULT_MESSAGES})")
    size.add_argument("--quick", action="store_const", dest="messages", const=QUICK_MESSAGES,
                      help=f"{QUICK_MESSAGES} messages in each run")
    parser.add_argument("--sessions", type=int, default=DEFAULT_SESSIONS, metavar="S",
                        help=f"parallel smtp-source sessions (default {DEFAULT_SESSIONS})")
    parser.add_argument("--length", type=int, default=DEFAULT_LENGTH, metavar="BYTES",
                        help=f"body bytes per message (default {DEFAULT_LENGTH})")
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, metavar="W",
                        help=f"unmeasured messages sent before each run (default {DEFAULT_WARMUP})")
    parser.add_argument("--probes", type=int, default=DEFAULT_PROBES, metavar="P",
                        help="messages sent one at a time after the load, for unloaded latency "
                             f"(default {DEFAULT_PROBES})")
    parser.add_argument("--sink", action="store_true", help=argparse.SUPPRESS)  # the sink process itself
    args = parser.parse_args(argv)
    if min(args.messages, args.sessions, args.length) < 1 or min(args.warmup, args.probes) < 0:
        parser.error("--messages, --sessions and --length must be positive, --warmup and --probes not negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.sink:
        serve_sink()
        return 0
    if (missing := postfix_missing()) is not None:
        print(f"cannot run: {missing}", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("cannot run: a private Postfix instance must be started as root", file=sys.stderr)
        return 2
    meta: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "messages": args.messages, "sessions": args.sessions, "length": args.length, "warmup": args.warmup,
        "probes": args.probes,
        "cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
    }
    with tempfile.TemporaryDirectory(prefix="postfix-bench-") as tmp:
        try:
            results, _ = asyncio.run(run_benchmark(args, Path(tmp)))
            meta["postfix"] = getattr(args, "postfix_version", "?")
        except asyncio.CancelledError:
            print("interrupted; the gateway, Postfix and the sink have been stopped", file=sys.stderr)
            return 130
    print()
    print(table(results, meta))
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"postfix-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(json.dumps({"meta": meta, "runs": [asdict(r) for r in results],
                               "gateway_over_direct_messages_per_second": ratio(results)}, indent=2) + "\n")
    print(f"\nresults written to {out.relative_to(REPO)}")
    return 1 if any(r.problems for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
