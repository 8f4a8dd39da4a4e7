"""Helpers for the load and fault tests: an asyncio SMTP/LMTP client that behaves like an
upstream MTA (it retries what was not acknowledged), a gateway process with raised limits,
a TCP proxy that can be cut, Postfix's smtp-sink as a misbehaving next hop, and /proc readers.

Everything connects to or listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import threading
from pathlib import Path
from typing import Any

from tests.support import BIN, GatewayProcess, free_port, wait_until

HOST = "127.0.0.1"
SENDER = "jane.doe@council.example.gov.uk"
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"


# --- /proc ----------------------------------------------------------------------------

def proc_status(pid: int) -> dict[str, str]:
    text = Path(f"/proc/{pid}/status").read_text()
    return {k: v.strip() for k, v in (line.split(":", 1) for line in text.splitlines() if ":" in line)}


def rss_kib(pid: int) -> int:
    """Resident set size of one process, KiB (VmRSS)."""
    return int(proc_status(pid)["VmRSS"].split()[0])


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def raise_nofile(want: int) -> int:
    """Raise this process's open-file limit to `want` (the hard limit too when root); returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    if hard < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, want))
            return want
        except (ValueError, OSError):
            want = hard
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


# --- the gateway with process limits -----------------------------------------------------

class LimitedGateway(GatewayProcess):
    """GatewayProcess whose process gets resource limits right after it starts (prlimit on its
    pid, inherited by the workers it spawns later; not preexec_fn, unsafe with the tests' threads)."""

    def __init__(self, workdir: Path, settings: dict[str, Any], nofile: int | None = None,
                 fsize: int | None = None):
        super().__init__(workdir, settings)
        self.nofile = nofile
        self.fsize = fsize

    def _limit(self, pid: int) -> None:
        if self.nofile:
            _, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
            try:
                resource.prlimit(pid, resource.RLIMIT_NOFILE, (self.nofile, max(hard, self.nofile)))
            except (ValueError, OSError):  # raising the hard limit needs CAP_SYS_RESOURCE
                resource.prlimit(pid, resource.RLIMIT_NOFILE, (min(hard, self.nofile), hard))
        if self.fsize is not None:
            # The soft limit only: the hard one stays, so the test can lift the soft one later.
            _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (self.fsize, hard))

    def start(self) -> LimitedGateway:
        with open(self.log_file, "ab") as log:
            self.proc = subprocess.Popen(
                [str(BIN / "dlp-gateway"), "serve", "--config", str(self.config_file)],
                cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
            )
        self._limit(self.proc.pid)
        if not wait_until(self._accepting, timeout=60):
            self.stop()
            raise RuntimeError(f"gateway did not start:\n{self.log_file.read_text()}")
        return self


# --- an upstream MTA ------------------------------------------------------------------

class NoReply(Exception):
    """The connection broke or went silent before the reply. `after_data` is True when the
    whole message had been sent: the outcome is then unknown (it may have been delivered)."""

    def __init__(self, why: str, after_data: bool = False):
        super().__init__(why)
        self.after_data = after_data


def dot_stuff(data: bytes) -> bytes:
    data = re.sub(rb"(?m)^\.", b"..", re.sub(rb"\r?\n", b"\r\n", data))
    return data if data.endswith(b"\r\n") else data + b"\r\n"


class Session:
    """One SMTP or LMTP client connection; raises NoReply whenever the conversation breaks."""

    def __init__(self, port: int, lmtp: bool, timeout: float = 60.0):
        self.port = port
        self.lmtp = lmtp
        self.timeout = timeout
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _reply(self) -> tuple[int, str]:
        assert self.reader is not None
        lines = []
        while True:
            try:
                line = await asyncio.wait_for(self.reader.readline(), self.timeout)
            except (TimeoutError, OSError, asyncio.IncompleteReadError) as e:
                raise NoReply(repr(e)) from None
            if not line.endswith(b"\n") or len(line) < 4:
                raise NoReply(f"connection closed ({line!r})")
            lines.append(line[4:].decode("utf-8", "replace").strip())
            if line[3:4] != b"-":
                return int(line[:3]), " ".join(lines)

    async def _command(self, text: bytes) -> tuple[int, str]:
        assert self.writer is not None
        try:
            self.writer.write(text)
            await self.writer.drain()
        except OSError as e:
            raise NoReply(repr(e)) from None
        return await self._reply()

    async def connect(self) -> None:
        try:
            self.reader, self.writer = await asyncio.wait_for(asyncio.open_connection(HOST, self.port), self.timeout)
        except (TimeoutError, OSError) as e:
            raise NoReply(repr(e)) from None
        code, text = await self._reply()
        if code != 220:
            self.close()
            raise NoReply(f"greeting {code} {text}")
        code, text = await self._command(b"LHLO load.test\r\n" if self.lmtp else b"EHLO load.test\r\n")
        if code != 250:
            self.close()
            raise NoReply(f"greeting {code} {text}")

    @property
    def connected(self) -> bool:
        return self.writer is not None and not self.writer.is_closing()

    async def send(self, sender: str, rcpts: list[str], data: bytes) -> list[tuple[int, str]]:
        """One transaction: a reply per recipient (LMTP), or the one reply repeated (SMTP).
        Recipients refused at RCPT get that reply. Raises NoReply if the conversation broke."""
        if not self.connected:
            await self.connect()
        try:
            code, text = await self._command(f"MAIL FROM:<{sender}>\r\n".encode())
            if code != 250:
                await self._command(b"RSET\r\n")
                return [(code, text)] * len(rcpts)
            replies: dict[str, tuple[int, str]] = {}
            accepted = []
            for r in rcpts:
                replies[r] = await self._command(f"RCPT TO:<{r}>\r\n".encode())
                if replies[r][0] == 250:
                    accepted.append(r)
            if not accepted:
                await self._command(b"RSET\r\n")
                return [replies[r] for r in rcpts]
            code, text = await self._command(b"DATA\r\n")
            if code != 354:
                return [(code, text) if r in accepted else replies[r] for r in rcpts]
            try:
                final = await self._command(dot_stuff(data) + b".\r\n")
                if self.lmtp:
                    after = {accepted[0]: final}
                    for r in accepted[1:]:
                        after[r] = await self._reply()
                else:
                    after = {r: final for r in accepted}
            except NoReply as e:
                raise NoReply(str(e), after_data=True) from None
            if final[0] == 421:
                self.close()
            return [after.get(r, replies[r]) for r in rcpts]
        except NoReply:
            self.close()
            raise

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
            self.reader = None


def mta_send(port: int, rcpts: list[str], data: bytes, lmtp: bool = False, sender: str = SENDER,
             timeout: float = 60.0) -> list[tuple[int, str]]:
    """One message on a new connection, from a plain thread; raises NoReply like Session.send."""

    async def run() -> list[tuple[int, str]]:
        s = Session(port, lmtp, timeout)
        try:
            return await s.send(sender, rcpts, data)
        finally:
            s.close()

    return asyncio.run(run())


# --- a TCP proxy that can be cut -------------------------------------------------------------

class Proxy:
    """A TCP relay on 127.0.0.1 to another loopback port. `cut()` closes every connection and
    stops listening (the far side is down: connections are refused); `resume()` listens again
    on the same port. `freeze()` keeps every connection open and accepts new ones but passes
    nothing on (the far side hangs); `thaw()` lets the bytes through again."""

    def __init__(self, target_port: int, port: int | None = None):
        self.target = (HOST, target_port)
        self.port = port or free_port()
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._flowing = threading.Event()
        self._flowing.set()

    def freeze(self) -> None:
        self._flowing.clear()

    def thaw(self) -> None:
        self._flowing.set()

    def start(self) -> Proxy:
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((HOST, self.port))
        self._listener.listen(64)
        t = threading.Thread(target=self._accept, args=(self._listener,), daemon=True)
        t.start()
        self._threads.append(t)
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=10)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns.update((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while chunk := src.recv(65536):
                while not self._flowing.wait(0.1):
                    if dst.fileno() < 0:
                        return
                dst.sendall(chunk)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        if self._listener is not None:
            try:  # wakes the thread blocked in accept(); close() alone would leave it listening
                self._listener.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._listener.close()
            self._listener = None
        with self._lock:
            conns, self._conns = list(self._conns), set()
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def resume(self) -> None:
        self.start()

    def stop(self) -> None:
        self.cut()


# --- Postfix's smtp-sink as a misbehaving next hop ----------------------------------------------

class PostfixSink:
    """`smtp-sink` on 127.0.0.1 with the given options (e.g. ["-r", "."] soft-rejects end of data)."""

    def __init__(self, options: list[str], port: int | None = None):
        self.port = port or free_port()
        self.options = options
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> PostfixSink:
        args = [SMTP_SINK, *self.options]
        if os.geteuid() == 0:
            args += ["-u", "nobody"]  # smtp-sink refuses to run as root without it
        args += [f"{HOST}:{self.port}", "64"]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def listening() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"smtp-sink exited: {self.proc.stderr.read().decode() if self.proc.stderr else ''}")
            try:
                with socket.create_connection((HOST, self.port), timeout=1):
                    return True
            except OSError:
                return False

        if not wait_until(listening, timeout=10):
            self.stop()
            raise RuntimeError("smtp-sink did not start listening")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc = None
