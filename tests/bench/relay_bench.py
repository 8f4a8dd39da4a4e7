"""Relay benchmark: what the gateway costs in throughput, latency and memory against a direct sink.

Run by hand from the repository root (`make bench`, or
`.venv/bin/python -m tests.bench.relay_bench [--quick | --messages N]`); never in CI.

It builds N deterministic ~20 KB benign business messages (tests/bench/messages.py) and
sends them over 1 SMTP session and over 20 concurrent sessions, each session keeping its
connection open and sending its share one after another:

  direct   straight into a counting SMTP sink (tests/bench/sink.py, its own process): the baseline;
  gateway  into `dlp-gateway serve` (a fresh process per run), which inspects each message
           and relays it to the same sink.

For each run it reports messages/s (250 replies over the wall-clock time of the load),
p50 and p99 per-message latency (MAIL FROM to the 250 after DATA, measured by the client),
the gateway's peak memory (the largest sum of VmRSS over the gateway process and all its
descendants, sampled every 100 ms, and the sum of each process's own VmHWM) and the
gateway/direct ratio of messages/s. Every reply that is not 250, every message the sink did
not receive, every audit verdict other than deliver and every line the gateway logs at
WARNING or above is reported; any of them makes the exit status 1.

It must never send to or listen on anything but 127.0.0.1, and it must leave nothing
running: the sink and every gateway (and its workers) are stopped before it exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiosmtplib

from tests.bench.messages import BenchMessage, build_messages

HOST = "127.0.0.1"  # the only address this benchmark ever uses
REPO = Path(__file__).resolve().parents[2]
RESULTS_DIR = REPO / "var" / "bench"
SESSIONS = (1, 20)
DEFAULT_MESSAGES = 2000
QUICK_MESSAGES = 200
DEFAULT_WARMUP = 20
READY_TIMEOUT = 60.0       # seconds for the gateway to accept a TCP connection
STOP_GRACE = 15.0          # seconds between SIGTERM and SIGKILL
LEFTOVER_GRACE = 5.0       # seconds for the gateway's workers to go after it has exited
CLIENT_TIMEOUT = 180.0     # seconds for any one SMTP command; longer than the gateway's inspection limit
SAMPLE_INTERVAL = 0.1      # seconds between memory samples
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
LOG_LINES_SHOWN = 10


# ---------------------------------------------------------------- results


@dataclass
class LoadResult:
    """What the client saw while sending one load."""

    sessions: int
    sent: int = 0
    accepted: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)  # seconds, accepted messages only
    failures: Counter[str] = field(default_factory=Counter)

    def ok(self, latency: float) -> None:
        self.sent += 1
        self.accepted += 1
        self.latencies.append(latency)

    def fail(self, reply: str) -> None:
        self.sent += 1
        # Gateway references differ per message; keep one entry per kind of reply.
        self.failures[re.sub(r"\b[0-9A-F]{16,}\b", "<reference>", reply)[:160]] += 1


@dataclass
class MemoryPeak:
    peak_rss_mib: float        # largest sum of VmRSS over the process tree, sampled
    sum_hwm_mib: float         # sum over every process seen of its own VmHWM
    processes: int             # distinct processes seen in the tree
    samples: int


@dataclass
class RunResult:
    path: str                  # "direct" or "gateway"
    sessions: int
    messages: int
    accepted: int
    seconds: float
    messages_per_second: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    failures: dict[str, int]
    sink_received: int         # messages the sink took during the measured load
    warmup_accepted: int = 0
    memory: MemoryPeak | None = None
    audit_verdicts: dict[str, int] | None = None
    audit_rules: dict[str, int] | None = None
    gateway_log: list[str] | None = None
    leftover_processes: int = 0

    @property
    def problems(self) -> list[str]:
        found = [f"{n} x {reply}" for reply, n in self.failures.items()]
        if self.sink_received != self.accepted:
            found.append(f"sink received {self.sink_received} messages, client had {self.accepted} accepted")
        if self.audit_verdicts is not None:
            decisions = sum(self.audit_verdicts.values())
            if decisions != self.accepted + self.warmup_accepted:
                found.append(f"audit log has {decisions} decisions for {self.accepted + self.warmup_accepted} "
                             "accepted messages (warm-up included)")
            other = {v: n for v, n in self.audit_verdicts.items() if v != "deliver"}
            if other:
                found.append(f"audit verdicts other than deliver: {other}")
        if self.gateway_log:
            found.append(f"gateway logged {len(self.gateway_log)} line(s) at WARNING or above")
        if self.leftover_processes:
            found.append(f"{self.leftover_processes} gateway process(es) outlived it and were killed")
        return found


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), interpolating between closest ranks; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def run_result(path: str, load: LoadResult, sink_received: int, warmup: LoadResult) -> RunResult:
    ms = [s * 1000 for s in load.latencies]
    return RunResult(
        path=path,
        sessions=load.sessions,
        messages=load.sent,
        accepted=load.accepted,
        seconds=round(load.seconds, 3),
        messages_per_second=round(load.accepted / load.seconds, 1) if load.seconds else 0.0,
        p50_ms=round(percentile(ms, 50), 2),
        p99_ms=round(percentile(ms, 99), 2),
        mean_ms=round(statistics.fmean(ms), 2) if ms else 0.0,
        max_ms=round(max(ms, default=0.0), 2),
        failures=dict(load.failures),
        sink_received=sink_received,
        warmup_accepted=warmup.accepted,
    )


# ---------------------------------------------------------------- load client


async def connect(port: int) -> aiosmtplib.SMTP:
    client = aiosmtplib.SMTP(
        hostname=HOST, port=port, timeout=CLIENT_TIMEOUT, start_tls=False, local_hostname="bench-client.localhost"
    )
    await client.connect()
    await client.ehlo()
    return client


async def send_share(client: aiosmtplib.SMTP | None, port: int, share: list[BenchMessage], result: LoadResult) -> None:
    """Send `share` one after another over one session, reconnecting (untimed) if it drops."""
    for message in share:
        try:
            if client is None or not client.is_connected:
                client = await connect(port)
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as e:
            result.fail(f"cannot connect: {type(e).__name__}: {e}")
            client = None
            continue
        started = time.perf_counter()
        try:
            refused, _ = await client.sendmail(message.sender, list(message.recipients), message.data)
        except aiosmtplib.SMTPRecipientsRefused as e:
            for refusal in e.recipients:
                result.fail(f"RCPT {refusal.code} {refusal.message}")
        except aiosmtplib.SMTPResponseException as e:
            result.fail(f"{e.code} {e.message}")
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as e:
            result.fail(f"{type(e).__name__}: {e}")
        else:
            if refused:
                for address, response in refused.items():
                    result.fail(f"RCPT {response.code} {response.message} ({address})")
            else:
                result.ok(time.perf_counter() - started)
    if client is not None and client.is_connected:
        try:
            await client.quit()
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError):
            client.close()


async def run_load(port: int, messages: list[BenchMessage], sessions: int) -> LoadResult:
    """All sessions connect first; the clock runs from the first MAIL FROM to the last reply."""
    result = LoadResult(sessions=sessions)
    clients: list[aiosmtplib.SMTP | None] = []
    for _ in range(sessions):
        try:
            clients.append(await connect(port))
        except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError) as e:
            result.fail(f"cannot connect: {type(e).__name__}: {e}")
            clients.append(None)
    started = time.perf_counter()
    await asyncio.gather(*(send_share(clients[i], port, messages[i::sessions], result) for i in range(sessions)))
    result.seconds = time.perf_counter() - started
    return result


# ---------------------------------------------------------------- memory of a process tree


def _parent_pids() -> dict[int, int]:
    """pid -> parent pid for every process visible in /proc."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    return parents


def process_tree(root: int) -> list[int]:
    parents = _parent_pids()
    tree, frontier = [root], [root]
    while frontier:
        frontier = [pid for pid, parent in parents.items() if parent in frontier]
        tree.extend(frontier)
    return tree


def memory_kib(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) in KiB, or None if the process has gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    values = {k: int(v.split()[0]) for k, _, v in (line.partition(":") for line in lines) if k in ("VmRSS", "VmHWM")}
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


class MemorySampler:
    """Samples the gateway's process tree every SAMPLE_INTERVAL until stopped."""

    def __init__(self, root: int):
        self.root = root
        self.peak_rss_kib = 0
        self.hwm_kib: dict[int, int] = {}
        self.samples = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        total = 0
        for pid in process_tree(self.root):
            memory = memory_kib(pid)
            if memory is None:
                continue
            rss, hwm = memory
            total += rss
            self.hwm_kib[pid] = max(self.hwm_kib.get(pid, 0), hwm)
        self.peak_rss_kib = max(self.peak_rss_kib, total)
        self.samples += 1

    async def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            try:
                await asyncio.wait_for(self._stop.wait(), SAMPLE_INTERVAL)
            except asyncio.TimeoutError:
                pass

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> MemoryPeak:
        self._stop.set()
        if self._task is not None:
            await self._task
        self.sample()
        return MemoryPeak(
            peak_rss_mib=round(self.peak_rss_kib / 1024, 1),
            sum_hwm_mib=round(sum(self.hwm_kib.values()) / 1024, 1),
            processes=len(self.hwm_kib),
            samples=self.samples,
        )


# ---------------------------------------------------------------- the processes under test


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Sink:
    """tests/bench/sink.py in its own process, so it does not share the client's event loop."""

    def __init__(self, workdir: Path):
        self.stderr_path = workdir / "sink.stderr"
        self.port = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._stderr: TextIO | None = None

    async def start(self) -> None:
        self._stderr = open(self.stderr_path, "w")
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "tests.bench.sink", "--port", "0",
            cwd=REPO, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=self._stderr,
            start_new_session=True,  # Ctrl-C reaches only the benchmark, which stops the sink in order
        )
        line = await self._reply()
        if not line.startswith("READY "):
            raise RuntimeError(f"the sink did not start: {line!r}; see {self.stderr_path}")
        self.port = int(line.split()[1])

    async def _reply(self) -> str:
        assert self._proc is not None and self._proc.stdout is not None
        return (await asyncio.wait_for(self._proc.stdout.readline(), 30)).decode().strip()

    async def received(self) -> int:
        """Messages the sink has accepted since it started."""
        assert self._proc is not None and self._proc.stdin is not None
        self._proc.stdin.write(b"count\n")
        await self._proc.stdin.drain()
        line = await self._reply()
        if not line.startswith("COUNT "):
            raise RuntimeError(f"unexpected answer from the sink: {line!r}")
        return int(line.split()[1])

    async def stop(self) -> None:
        proc = self._proc
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


def gateway_config(smtp_port: int, lmtp_port: int, routes: dict[str, str], admin_port: int, key_file: Path) -> str:
    return json.dumps({  # JSON is YAML
        "server": {"smtp_listen": f"{HOST}:{smtp_port}", "lmtp_listen": f"{HOST}:{lmtp_port}", "workers": 0},
        "admin": {"listen": f"{HOST}:{admin_port}"},
        "quarantine": {"keys": [str(key_file)]},   # as deployed: held mail encrypted
        "routes": routes,
        "organisation": {"internal_domains": ["council.example.gov.uk"]},
        "audit": {"path": "var/audit.log"},
    }, indent=2) + "\n"


class Gateway:
    """`dlp-gateway serve` in a working directory of its own, listening on free loopback ports."""

    def __init__(self, workdir: Path, routes: dict[str, str]):
        self.workdir = workdir
        self.routes = routes
        self.port = 0
        self.lmtp_port = 0
        self.log_path = workdir / "gateway.log"
        self.proc: asyncio.subprocess.Process | None = None
        self.leftovers = 0
        self._seen: set[int] = set()
        self._log: TextIO | None = None

    async def start(self) -> None:
        executable = Path(sys.executable).with_name("dlp-gateway")
        if not executable.exists():
            raise RuntimeError(f"{executable} not found; run `make .venv/.installed` first")
        self.workdir.mkdir(parents=True)
        self.port, self.lmtp_port = free_port(), free_port()
        config = self.workdir / "gateway.yaml"
        key_file = self.workdir / "quarantine.key"
        subprocess.run([str(executable), "quarantine-keygen", str(key_file)], check=True, capture_output=True)
        config.write_text(gateway_config(self.port, self.lmtp_port, self.routes, free_port(), key_file))
        self._log = open(self.log_path, "w")
        self.proc = await asyncio.create_subprocess_exec(
            str(executable), "--log-level", "WARNING", "serve", "--config", str(config),
            cwd=self.workdir, stdin=asyncio.subprocess.DEVNULL, stdout=self._log, stderr=self._log,
            start_new_session=True,  # its own process group: Ctrl-C reaches only the benchmark
        )
        await self._wait_ready()

    async def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.returncode is not None:
                raise RuntimeError(f"the gateway exited with status {self.proc.returncode}: {self.log_tail()}")
            try:
                _, writer = await asyncio.open_connection(HOST, self.port)
            except OSError:
                await asyncio.sleep(0.2)
                continue
            writer.close()
            await writer.wait_closed()
            return
        raise RuntimeError(f"the gateway did not accept connections within {READY_TIMEOUT:.0f}s: {self.log_tail()}")

    def note_processes(self) -> None:
        """Remember the gateway's process tree, to be sure none of it is left behind."""
        if self.proc is not None and self.proc.returncode is None:
            self._seen.update(process_tree(self.proc.pid))

    async def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        self.note_processes()
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), STOP_GRACE)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
        await self._reap_leftovers(proc.pid)
        if self._log is not None:
            self._log.close()

    async def _reap_leftovers(self, group: int) -> None:
        """Kill any process of the gateway's tree that is still in its process group after LEFTOVER_GRACE."""
        deadline = time.monotonic() + LEFTOVER_GRACE
        alive = self._alive_in_group(group)
        while alive and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            alive = self._alive_in_group(group)
        for pid in alive:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
        self.leftovers = len(alive)

    def _alive_in_group(self, group: int) -> list[int]:
        alive = []
        for pid in self._seen:
            try:
                if os.getpgid(pid) == group:
                    alive.append(pid)
            except ProcessLookupError:
                continue
        return alive

    def log_lines(self) -> list[str]:
        try:
            return [line for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            return []

    def log_tail(self) -> str:
        return " | ".join(self.log_lines()[-5:]) or "(nothing logged)"

    @property
    def seen(self) -> set[int]:
        return self._seen

    def audit(self) -> tuple[dict[str, int], dict[str, int]]:
        """Verdict counts and rule counts from the gateway's audit log."""
        verdicts: Counter[str] = Counter()
        rules: Counter[str] = Counter()
        path = self.workdir / "var" / "audit.log"
        if path.exists():
            for line in path.read_text().splitlines():
                record = json.loads(line)
                verdicts[record["verdict"]] += 1
                rules.update(record["rules"])
        return dict(verdicts), dict(rules)


# ---------------------------------------------------------------- the runs


async def measured_load(sink: Sink, port: int, messages: list[BenchMessage], sessions: int,
                        warmup: int) -> tuple[LoadResult, int, LoadResult]:
    """A warm-up over one session (not measured, but its failures count), then the load;
    returns the load, the messages the sink received during it, and the warm-up."""
    warm = await run_load(port, messages[:warmup], 1) if warmup else LoadResult(sessions=1)
    before = await sink.received()
    load = await run_load(port, messages, sessions)
    received = await sink.received() - before
    for reply, n in warm.failures.items():
        load.failures[f"warm-up: {reply}"] += n
    return load, received, warm


async def run_direct(sink: Sink, messages: list[BenchMessage], sessions: int, warmup: int) -> RunResult:
    return run_result("direct", *await measured_load(sink, sink.port, messages, sessions, warmup))


async def run_gateway(sink: Sink, workdir: Path, messages: list[BenchMessage], sessions: int,
                      warmup: int) -> RunResult:
    route = f"smtp://{HOST}:{sink.port}?tls=none"
    gateway = Gateway(workdir, {"relay": route, "secure": route})
    sampler: MemorySampler | None = None
    try:
        await gateway.start()
        assert gateway.proc is not None
        sampler = MemorySampler(gateway.proc.pid)
        sampler.start()
        gateway.note_processes()
        measured = await measured_load(sink, gateway.port, messages, sessions, warmup)
        gateway.note_processes()
        memory = await sampler.stop()
        sampler = None
    finally:
        if sampler is not None:
            await sampler.stop()
        await gateway.stop()
    result = run_result("gateway", *measured)
    result.memory = memory
    result.audit_verdicts, result.audit_rules = gateway.audit()
    result.gateway_log = gateway.log_lines()
    result.leftover_processes = gateway.leftovers
    return result


def cancel_on_signals(task: asyncio.Task[Any]) -> None:
    """SIGINT, SIGTERM and SIGHUP cancel `task` (once), so its finally blocks stop what it started."""
    loop = asyncio.get_running_loop()

    def cancel() -> None:
        if not task.cancelling():
            task.cancel()

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, cancel)


async def run_benchmark(messages: list[BenchMessage], warmup: int, workdir: Path) -> list[RunResult]:
    task = asyncio.current_task()
    assert task is not None
    cancel_on_signals(task)
    sink = Sink(workdir)
    results: list[RunResult] = []
    try:
        await sink.start()
        for sessions in SESSIONS:
            print(f"  {sessions} session(s): direct ...", flush=True)
            results.append(await run_direct(sink, messages, sessions, warmup))
            print(f"  {sessions} session(s): gateway ...", flush=True)
            results.append(await run_gateway(sink, workdir / f"gateway-{sessions}", messages, sessions, warmup))
    finally:
        await sink.stop()
    return results


# ---------------------------------------------------------------- reporting


def ratios(results: list[RunResult]) -> dict[int, float]:
    """gateway/direct messages/s for each number of sessions."""
    by_key = {(r.path, r.sessions): r for r in results}
    out = {}
    for sessions in SESSIONS:
        direct, gateway = by_key.get(("direct", sessions)), by_key.get(("gateway", sessions))
        if direct and gateway and direct.messages_per_second:
            out[sessions] = round(gateway.messages_per_second / direct.messages_per_second, 3)
    return out


def table(results: list[RunResult], meta: dict[str, Any]) -> str:
    sizes = meta["message_bytes"]
    lines = [
        f"Relay benchmark: {meta['messages']} messages of {sizes['mean'] / 1000:.1f} KB on average "
        f"({sizes['min'] / 1000:.1f}-{sizes['max'] / 1000:.1f} KB), 2 recipients each, "
        f"{meta['warmup']} warm-up messages before each run; {meta['cpus']} CPUs, gateway workers: 0 (one per CPU)",
        "",
        f"{'sessions':>8}  {'path':<8} {'msgs/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} "
        f"{'failed':>6} {'at sink':>7} {'peak RSS MiB':>12} {'ΣHWM MiB':>9}",
    ]
    rate = ratios(results)
    for r in results:
        rss = f"{r.memory.peak_rss_mib:12.1f} {r.memory.sum_hwm_mib:9.1f}" if r.memory else f"{'-':>12} {'-':>9}"
        lines.append(
            f"{r.sessions:>8}  {r.path:<8} {r.messages_per_second:8.1f} {r.p50_ms:8.1f} {r.p99_ms:8.1f} "
            f"{r.max_ms:8.1f} {r.messages - r.accepted:6d} {r.sink_received:7d} {rss}"
        )
        if r.path == "gateway" and r.sessions in rate:
            lines.append(f"{'':>8}  gateway/direct messages/s: {rate[r.sessions]:.3f}")
    lines += [
        "",
        "latency: MAIL FROM to the 250 after DATA, client side; msgs/s: 250 replies / wall-clock time of the load",
        "peak RSS: largest sum of VmRSS over the gateway process and its descendants, sampled every 100 ms;",
        "ΣHWM: sum of each of those processes' own VmHWM (their peaks need not coincide, so it is an upper bound)",
    ]
    for r in results:
        if r.path == "gateway":
            lines.append(f"audit verdicts ({r.sessions} session(s)): {r.audit_verdicts or 'none'}"
                         + (f", rules fired: {r.audit_rules}" if r.audit_rules else ""))
    problems = [(r, p) for r in results for p in r.problems]
    lines.append("")
    if not problems:
        lines.append("every message was answered 250, reached the sink once, and was delivered by the policy")
    for r, problem in problems:
        lines.append(f"PROBLEM ({r.path}, {r.sessions} session(s)): {problem}")
    for r in results:
        for line in (r.gateway_log or [])[:LOG_LINES_SHOWN]:
            lines.append(f"  gateway log ({r.sessions} session(s)): {line[:300]}")
    return "\n".join(lines)


def write_json(results: list[RunResult], meta: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"relay-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    document = {
        "meta": meta,
        "runs": [{**asdict(r), "problems": r.problems} for r in results],
        "gateway_over_direct_messages_per_second": {str(k): v for k, v in ratios(results).items()},
    }
    path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    return path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.relay_bench", description=__doc__.splitlines()[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--messages", type=int, default=DEFAULT_MESSAGES, metavar="N",
                      help=f"messages in each run (default {DEFAULT_MESSAGES})")
    size.add_argument("--quick", action="store_const", dest="messages", const=QUICK_MESSAGES,
                      help=f"{QUICK_MESSAGES} messages in each run")
    parser.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, metavar="W",
                        help=f"unmeasured messages sent before each run (default {DEFAULT_WARMUP})")
    args = parser.parse_args(argv)
    if args.messages < max(SESSIONS):
        parser.error(f"--messages must be at least {max(SESSIONS)}")
    if args.warmup < 0:
        parser.error("--warmup cannot be negative")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(f"building {args.messages} messages ...", flush=True)
    messages = build_messages(args.messages)
    sizes = [len(m.data) for m in messages]
    meta: dict[str, Any] = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "messages": len(messages),
        "warmup": min(args.warmup, len(messages)),
        "sessions": list(SESSIONS),
        "message_bytes": {"mean": round(statistics.fmean(sizes)), "min": min(sizes), "max": max(sizes)},
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "memory_method": "peak_rss_mib: max over 100 ms samples of the summed VmRSS of the gateway and its "
                         "descendants; sum_hwm_mib: sum of each such process's VmHWM",
    }
    with tempfile.TemporaryDirectory(prefix="relay-bench-") as tmp:
        try:
            results = asyncio.run(run_benchmark(messages, meta["warmup"], Path(tmp)))
        except asyncio.CancelledError:
            print("interrupted; the gateway and the sink have been stopped", file=sys.stderr)
            return 130
    print()
    print(table(results, meta))
    print(f"\nresults written to {write_json(results, meta).relative_to(REPO)}")
    return 1 if any(r.problems for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
