"""Real parts for the tests: an SMTP sink, a test certificate authority, a gateway process.

Everything listens on 127.0.0.1 only. The gateway runs as its own process (the
`dlp-gateway serve` a user runs) so tests can kill it with SIGKILL.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import signal
import smtplib
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from email.parser import BytesParser
from email import policy as email_policy
from pathlib import Path
from typing import Any

import yaml
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP as AioSMTP

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate: Any, timeout: float = 30.0, interval: float = 0.05) -> bool:
    """Poll `predicate` until it is true; the bound is generous and never what a test asserts."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


# --- a certificate authority made by the test ---------------------------------------

@dataclass
class TestCA:
    ca_file: Path
    cert_file: Path          # server certificate for 127.0.0.1 / localhost, signed by the CA
    key_file: Path
    untrusted_cert_file: Path  # self-signed, not from the CA
    untrusted_key_file: Path


def make_test_ca(directory: Path) -> TestCA:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def write_key(key: Any, path: Path) -> None:
        path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = (
        x509.CertificateBuilder().subject_name(name("dlp-gateway test CA")).issuer_name(name("dlp-gateway test CA"))
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    def server_cert(issuer_key: Any, issuer_name: x509.Name) -> tuple[Any, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder().subject_name(name("localhost")).issuer_name(issuer_name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(issuer_key, hashes.SHA256())
        )
        return key, cert

    directory.mkdir(parents=True, exist_ok=True)
    ca = TestCA(directory / "ca.pem", directory / "server.pem", directory / "server.key",
                directory / "untrusted.pem", directory / "untrusted.key")
    ca.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    key, cert = server_cert(ca_key, ca_cert.subject)
    ca.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_key(key, ca.key_file)
    rogue_key = ec.generate_private_key(ec.SECP256R1())
    key, cert = server_cert(rogue_key, name("localhost"))
    ca.untrusted_cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    write_key(key, ca.untrusted_key_file)
    return ca


# --- an SMTP sink: the next hop ---------------------------------------------------------

@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    mail_options: list[str]
    data: bytes
    tls: bool

    @property
    def message(self) -> Any:
        return BytesParser(policy=email_policy.default).parsebytes(self.data)


@dataclass
class SinkHandler:
    messages: list[Received] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)   # address -> reply for RCPT
    requiretls: bool = False                                 # offer RFC 8689 REQUIRETLS over TLS
    greetings: int = 0                                       # EHLOs seen: new sessions (twice with STARTTLS)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, options: list[str]) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_EHLO(self, server: Any, session: Any, envelope: Any, hostname: str,
                          responses: list[str]) -> list[str]:
        session.host_name = hostname
        self.greetings += 1
        if self.requiretls and session.ssl is not None:  # RFC 8689: offered only over TLS
            responses.insert(-1, "250-REQUIRETLS")
        return responses

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), list(envelope.mail_options),
                                      envelope.original_content, session.ssl is not None))
        return "250 2.0.0 queued by sink"


class _SinkSMTP(AioSMTP):
    def _getparams(self, params: list[str]) -> Any:
        # aiosmtpd refuses MAIL parameters it does not know; the sink accepts REQUIRETLS when it offers it.
        return super()._getparams([p for p in params if p.upper() != "REQUIRETLS"])


class Sink:
    """A real SMTP server on loopback that keeps what it receives (optionally STARTTLS)."""

    def __init__(self, port: int | None = None, cert: Path | None = None, key: Path | None = None):
        self.port = port or free_port()
        self.handler = SinkHandler()
        self.cert, self.key = cert, key
        self.controller: Controller | None = None

    def start(self) -> "Sink":
        tls = None
        if self.cert:
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(self.cert, self.key)
        handler = self.handler

        class _Controller(Controller):
            def factory(self) -> AioSMTP:
                return _SinkSMTP(handler, decode_data=False, enable_SMTPUTF8=True, tls_context=tls,
                                 hostname="sink.test")

        self.controller = _Controller(handler, hostname="127.0.0.1", port=self.port)
        self.controller.start()
        return self

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        wait_until(lambda: len(self.messages) >= count, timeout)
        return list(self.messages)

    def to(self, address: str) -> list[Received]:
        return [m for m in self.messages if address in m.rcpt_tos]

    def bounces_to(self, address: str) -> list[Received]:
        return [m for m in self.messages if m.mail_from in ("", "<>") and address in m.rcpt_tos]


# --- the gateway as a user runs it -----------------------------------------------------

class GatewayProcess:
    def __init__(self, workdir: Path, settings: dict[str, Any]):
        self.workdir = workdir
        self.smtp_port = free_port()
        self.lmtp_port = free_port()
        self.admin_port = free_port()
        base = {
            "server": {"smtp_listen": f"127.0.0.1:{self.smtp_port}", "lmtp_listen": f"127.0.0.1:{self.lmtp_port}",
                       "workers": 1, "hostname": "gateway.test"},
            "admin": {"listen": f"127.0.0.1:{self.admin_port}"},
            "organisation": {"internal_domains": ["council.example.gov.uk"], "trusted_domains": ["nhs.net"]},
            "bounce": {"postmaster": "postmaster@council.example.gov.uk"},
            # Workers load the name model only when a message needs it: most tests never do.
            "detectors": {"ner": {"preload": False}},
        }
        self.settings = _merge(base, settings)
        self.config_file = workdir / "gateway.yaml"
        self.config_file.write_text(yaml.safe_dump(self.settings))
        self.log_file = workdir / "gateway.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> "GatewayProcess":
        log = open(self.log_file, "ab")
        self.proc = subprocess.Popen(
            [str(BIN / "dlp-gateway"), "serve", "--config", str(self.config_file)],
            cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
        )
        log.close()
        if not wait_until(self._accepting, timeout=60):
            self.stop()
            raise RuntimeError(f"gateway did not start:\n{self.log_file.read_text()}")
        return self

    def _accepting(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log_file.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", self.smtp_port), timeout=1) as s:
                return s.recv(4).startswith(b"220")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL the gateway and its worker processes, as a crash would."""
        assert self.proc is not None
        children = _children(self.proc.pid)
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)
        for pid in children:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.kill()

    def smtp(self, **kwargs: Any) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.smtp_port, timeout=30, **kwargs)

    def lmtp(self) -> "LmtpClient":
        return LmtpClient(self.lmtp_port)

    def cli(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "dlp-gateway"), *args[:1], "--config", str(self.config_file), *args[1:]]
                              if args and args[0] in ("quarantine", "scan", "check-config") else
                              [str(BIN / "dlp-gateway"), *args],
                              cwd=self.workdir, capture_output=True, text=True, input=input, timeout=120)

    def audit(self) -> list[dict[str, Any]]:
        import json

        path = self.workdir / "var" / "audit.log"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _children(pid: int) -> list[int]:
    out = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid):
            out.append(int(status.parent.name))
    return out


class LmtpClient:
    """smtplib's LMTP with per-recipient replies after DATA (smtplib reads only the first)."""

    def __init__(self, port: int):
        self.client = smtplib.LMTP("127.0.0.1", port, timeout=30)

    def send(self, sender: str, rcpts: list[str], data: bytes) -> list[tuple[int, str]]:
        c = self.client
        c.ehlo_or_helo_if_needed()
        code, msg = c.mail(sender)
        assert code == 250, (code, msg)
        accepted = []
        for r in rcpts:
            code, msg = c.rcpt(r)
            if code == 250:
                accepted.append(r)
        code, msg = c.docmd("DATA")
        assert code == 354, (code, msg)
        data = re.sub(rb"(?m)^\.", b"..", re.sub(rb"\r?\n", b"\r\n", data))
        c.send(data if data.endswith(b"\r\n") else data + b"\r\n")
        c.send(b".\r\n")
        return [(lambda r: (r[0], r[1].decode()))(c.getreply()) for _ in accepted]

    def close(self) -> None:
        try:
            self.client.quit()
        except Exception:
            self.client.close()


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def scan_message(directory: Path, raw: bytes, *args: str) -> dict[str, Any]:
    """`dlp-gateway scan [ARGS] FILE` of one message, as a user runs it: its one JSON record.
    `args` go before the file, e.g. "--config", str(path), "--sender", "a@b"."""
    import json

    path = directory / "m.eml"
    path.write_bytes(raw)
    out = subprocess.run([str(BIN / "dlp-gateway"), "scan", *args, str(path)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def smtp_route(sink: Sink, tls: str = "none", ca: Path | None = None) -> str:
    url = f"smtp://127.0.0.1:{sink.port}?tls={tls}"
    return url + (f"&ca={ca}" if ca else "")
