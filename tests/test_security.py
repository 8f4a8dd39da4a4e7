"""What an attacker on the network or in a message must not get from the gateway.

Not an open relay (IPv6 and IPv4 loopback told apart, an empty allowed list allows
nobody), no SMTP smuggling through bare line endings in DATA, no header injection
through envelope addresses or the HELO name into bounces or relayed mail, and an
admin listener that is loopback-only by default and serves no mail.
(The basic cases, a client from 127.0.0.2 refused and the classic `\\n.\\r\\n` smuggling,
are in test_relay.py.)
"""

from __future__ import annotations

import re
import smtplib
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from email.parser import BytesHeaderParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from gateway.config import load_config, parse_listen
from gateway.server import GatewaySMTP
from tests.conftest import SENDER, make_message
from tests.support import GatewayProcess, Sink, smtp_route, wait_until

NINO_BODY = "Hi,\n\nHer National Insurance number is AB 12 34 56 C, as discussed.\n\nJane"
INTERNAL = "colleague@council.example.gov.uk"


class AdminReadyGateway(GatewayProcess):
    """Started when /healthz answers: for listeners a test cannot greet from 127.0.0.1."""

    def _accepting(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {self.proc.returncode}:\n{self.log_file.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.admin_port}/healthz", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False


@pytest.fixture
def started(tmp_path: Path) -> Iterator[Callable[[dict[str, Any]], GatewayProcess]]:
    gateways: list[GatewayProcess] = []

    def start(settings: dict[str, Any]) -> GatewayProcess:
        workdir = tmp_path / f"gw{len(gateways)}"
        workdir.mkdir()
        gw = AdminReadyGateway(workdir, settings)
        gateways.append(gw)
        return gw.start()

    yield start
    for gw in gateways:
        gw.stop()


def greeting(host: str, port: int) -> bytes:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect((host, port))
        return s.recv(1024)


# --- not an open relay -------------------------------------------------------------------------------

def test_ipv6_loopback_is_a_client_of_its_own_for_allowed_networks(
    started: Callable[[dict[str, Any]], GatewayProcess], sink: Sink
) -> None:
    routes = {"relay": smtp_route(sink), "secure": smtp_route(sink)}
    port = _free_v6_port()
    v4_listed = started({"server": {"allowed_networks": ["127.0.0.0/8"], "smtp_listen": f"[::1]:{port}"},
                         "routes": routes})
    assert greeting("::1", port).startswith(b"554 5.7.1")                     # ::1 is not in 127.0.0.0/8
    assert greeting("127.0.0.1", v4_listed.lmtp_port).startswith(b"220")

    port = _free_v6_port()
    v6_listed = started({"server": {"allowed_networks": ["::1/128"], "smtp_listen": f"[::1]:{port}"},
                         "routes": routes})
    assert greeting("127.0.0.1", v6_listed.lmtp_port).startswith(b"554 5.7.1")   # 127.0.0.1 is not ::1/128
    with smtplib.SMTP("::1", port, timeout=30) as client:
        assert client.sendmail(SENDER, ["partner@supplier.example.com"], make_message()) == {}
    assert [m.rcpt_tos for m in sink.wait_for(1)] == [["partner@supplier.example.com"]]


def _free_v6_port() -> int:
    with socket.socket(socket.AF_INET6) as s:
        s.bind(("::1", 0))
        return s.getsockname()[1]


def test_an_empty_allowed_list_allows_nobody_and_relays_nothing(
    started: Callable[[dict[str, Any]], GatewayProcess], sink: Sink
) -> None:
    gw = started({"server": {"allowed_networks": []}, "routes": {"relay": smtp_route(sink), "secure": smtp_route(sink)}})
    for port in (gw.smtp_port, gw.lmtp_port):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            f = s.makefile("rb")
            assert f.readline().startswith(b"554 5.7.1")
            # Nothing a refused client says afterwards is read: the connection is closed.
            try:
                s.sendall(b"EHLO x\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@gmail.com>\r\nDATA\r\n")
                rest = f.read()
            except ConnectionResetError:   # the gateway had closed it: what was sent was never read
                rest = b""
            assert rest == b""
    assert sink.messages == []
    assert "not in server.allowed_networks" in gw.log_file.read_text()


def _allowed(networks: list[str], peer: Any) -> bool:
    import ipaddress

    smtp = GatewaySMTP.__new__(GatewaySMTP)
    smtp._networks = [ipaddress.ip_network(n, strict=False) for n in networks]
    smtp.session = SimpleNamespace(peer=peer)  # type: ignore[assignment]
    return smtp._client_allowed()


@pytest.mark.parametrize("networks, peer, allowed", [
    (["127.0.0.0/8"], ("::ffff:127.0.0.1", 25, 0, 0), True),        # IPv4 through a dual-stack listener
    (["127.0.0.0/8"], ("::ffff:10.1.2.3", 25, 0, 0), False),
    (["::1/128"], ("::ffff:127.0.0.1", 25, 0, 0), False),
    (["127.0.0.0/8"], ("::1", 25, 0, 0), False),
    (["::1/128"], ("127.0.0.1", 25), False),
    (["fe80::/10"], ("fe80::1%eth0", 25, 0, 2), True),               # a scope id does not break the match
    (["10.0.0.0/8"], ("10.0.0.1", 25), True),
    (["10.0.0.0/8"], ("not an address", 25), False),
    ([], ("127.0.0.1", 25), False),
    ([], ("::1", 25, 0, 0), False),
])
def test_which_peers_are_allowed(networks: list[str], peer: Any, allowed: bool) -> None:
    assert _allowed(networks, peer) is allowed


# --- SMTP smuggling ----------------------------------------------------------------------------------

SMUGGLE = [b"\n.\n", b"\r.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\n", b"\n.\r", b"\r\n.\r", b"\r\n.\r\r\n", b"\n.\n.\r\n"]


def as_relayed(content: bytes) -> bytes:
    """The message the next hop must get: SMTP's dot-stuffing undone on CRLF lines (the only
    lines DATA has), then bare CR and LF made CRLF (as aiosmtplib and Postfix send them)."""
    lines = [line[1:] if line.startswith(b".") else line for line in content.split(b"\r\n")]
    return re.sub(rb"\r\n|\r|\n", b"\r\n", b"\r\n".join(lines))


def _reply(f: Any) -> bytes:
    while True:
        line = f.readline()
        assert line, "connection closed"
        if line[3:4] != b"-":
            return line


@pytest.mark.parametrize("listener", ["smtp", "lmtp"])
@pytest.mark.parametrize("sequence", SMUGGLE, ids=[s.decode().encode("unicode_escape").decode() for s in SMUGGLE])
def test_bare_line_endings_in_data_neither_end_the_message_nor_start_another(
    relay: GatewayProcess, relay_sink: Sink, sequence: bytes, listener: str
) -> None:
    tag = f"smuggle-{listener}-{SMUGGLE.index(sequence)}"
    content = (
        f"From: <{SENDER}>\r\nTo: <{INTERNAL}>\r\nSubject: {tag}\r\n\r\nfirst part".encode() + sequence +
        b"MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<victim@gmail.com>\r\nDATA\r\n"
        b"Subject: smuggled\r\n\r\nsecond\r\n"
    )
    before = len(relay_sink.messages)
    port = relay.smtp_port if listener == "smtp" else relay.lmtp_port
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        f = s.makefile("rb")
        assert _reply(f).startswith(b"220")
        s.sendall(b"EHLO client.test\r\n" if listener == "smtp" else b"LHLO client.test\r\n")
        assert _reply(f).startswith(b"250")
        # Pipelined, as an attacker would send it: everything at once.
        s.sendall(b"MAIL FROM:<" + SENDER.encode() + b">\r\nRCPT TO:<" + INTERNAL.encode() + b">\r\nDATA\r\n")
        assert [_reply(f)[:3] for _ in range(3)] == [b"250", b"250", b"354"]
        s.sendall(content + b".\r\nQUIT\r\n")
        replies = [_reply(f) for _ in range(2)]
    # One reply for the one message, then QUIT's: a smuggled transaction would have been answered in between.
    assert replies[0].startswith(b"250") and replies[1].startswith(b"221"), replies
    assert wait_until(lambda: len(relay_sink.messages) > before)
    new = relay_sink.messages[before:]
    assert [m.rcpt_tos for m in new] == [[INTERNAL]]
    assert relay_sink.to("victim@gmail.com") == []
    # Internal mail is relayed as it came, behind the trace headers; the smuggled lines are its text.
    assert new[0].data.endswith(as_relayed(content)), new[0].data
    assert b"MAIL FROM:<evil@attacker.example>" in new[0].data


# --- header injection --------------------------------------------------------------------------------

HEADER_LINE = re.compile(rb"\A(?:[!-9;-~]+:.*|[ \t].*)\Z", re.DOTALL)
CONTROL = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")   # any C0 control but tab (CR and LF only as line ends)


def header_block(data: bytes) -> list[bytes]:
    head = data.split(b"\r\n\r\n", 1)[0]
    return head.split(b"\r\n")


def assert_clean_headers(data: bytes, expected_names: set[str] | None = None) -> None:
    for line in header_block(data):
        assert HEADER_LINE.match(line), f"not a header line: {line!r}"
        assert not CONTROL.search(line), f"control character in a header: {line!r}"
    names = {k.lower() for k in BytesHeaderParser().parsebytes(data.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n")}
    assert "bcc" not in names
    if expected_names is not None:
        assert names <= {n.lower() for n in expected_names}, names


BOUNCE_HEADERS = {"From", "To", "Subject", "Date", "Message-ID", "Auto-Submitted", "X-DLP-Reference",
                  "MIME-Version", "Content-Type", "Return-Path", "Delivered-To"}


def send_raw(port: int, sender: bytes, rcpts: list[bytes], data: bytes, helo: bytes = b"client.test",
             options: bytes = b"") -> list[bytes]:
    """One transaction with the addresses exactly as given; the replies, in order (it stops at a refusal)."""
    replies = []
    with socket.create_connection(("127.0.0.1", port), timeout=60) as s:
        f = s.makefile("rb")
        _reply(f)
        s.sendall(b"EHLO " + helo + b"\r\n")
        replies.append(_reply(f))
        for command in [b"MAIL FROM:<" + sender + b">" + options] + [b"RCPT TO:<" + r + b">" for r in rcpts] + [b"DATA"]:
            s.sendall(command + b"\r\n")
            replies.append(_reply(f))
            if not replies[-1][:1] in (b"2", b"3"):
                break
        else:
            s.sendall(re.sub(rb"(?m)^\.", b"..", data) + b".\r\n")
            replies.append(_reply(f))
        s.sendall(b"QUIT\r\n")
    return replies


# Printable tricks a client may put in an address: quotes, angle brackets, "Bcc:" text,
# escaped CR LF (a backslash and a letter, not the bytes), Unicode line separators.
PRINTABLE_TRICKS = [
    b'"a b>Bcc: evil@attacker.example"@council.example.gov.uk',
    b'"a\\"\\r\\nBcc: evil@attacker.example"@council.example.gov.uk',
    b'"<evil@attacker.example>,Bcc:evil@attacker.example"@council.example.gov.uk',
    '"a\u2028Bcc: evil@attacker.example"@council.example.gov.uk'.encode(),
    '"a\u0085Bcc: evil@attacker.example"@council.example.gov.uk'.encode(),
]


@pytest.mark.parametrize("sender", PRINTABLE_TRICKS, ids=range(len(PRINTABLE_TRICKS)))
def test_odd_but_printable_senders_get_a_bounce_with_no_injected_header(
    relay: GatewayProcess, relay_sink: Sink, sender: bytes
) -> None:
    options = b"" if sender.isascii() else b" SMTPUTF8"
    rcpt = b'"x>Bcc: evil@attacker.example"@gmail.com'
    before = len(relay_sink.messages)
    replies = send_raw(relay.smtp_port, sender, [rcpt], make_message(body=NINO_BODY, to=["someone@gmail.com"]),
                       options=options)
    if replies[1][:1] == b"5":
        return  # refused at MAIL FROM: nothing to bounce to
    assert replies[-1].startswith(b"250"), replies
    assert wait_until(lambda: len(relay_sink.messages) > before)
    (bounce,) = relay_sink.messages[before:]
    assert bounce.mail_from in ("", "<>") and len(bounce.rcpt_tos) == 1
    assert_clean_headers(bounce.data, BOUNCE_HEADERS)
    # The delivery-status part: one field per line, no field the gateway did not write.
    status = bounce.data.split(b"Content-Type: message/delivery-status\r\n\r\n", 1)[1].split(b"\r\n--", 1)[0]
    fields = {line.split(b":", 1)[0] for line in status.split(b"\r\n") if line}
    assert fields <= {b"Reporting-MTA", b"Arrival-Date", b"Final-Recipient", b"Action", b"Status",
                      b"Diagnostic-Code"}, fields
    assert relay_sink.to("evil@attacker.example") == []


CONTROLS = [b"\x0b", b"\x1c", b"\x00", b"\x7f", b"\t"]


@pytest.mark.parametrize("control", CONTROLS, ids=[c.hex() for c in CONTROLS])
def test_a_sender_with_control_characters_puts_none_in_a_bounce(
    started: Callable[[dict[str, Any]], GatewayProcess], control: bytes
) -> None:
    """With the embedded Maildir route nothing stands between the sender's address and the
    bounce headers: a control character there is a line break to some mail software."""
    gw = started({})
    sender = b'"a' + control + b'Bcc: evil@attacker.example"@council.example.gov.uk'
    replies = send_raw(gw.smtp_port, sender, [b"someone@gmail.com"],
                       make_message(body=NINO_BODY, to=["someone@gmail.com"]))
    if replies[1][:1] == b"5":
        return  # refused at MAIL FROM
    outbox = gw.workdir / "var" / "outbox" / "new"
    assert wait_until(lambda: outbox.exists() and any(outbox.iterdir()), timeout=10), replies
    for path in outbox.iterdir():
        assert_clean_headers(path.read_bytes(), BOUNCE_HEADERS)


@pytest.mark.parametrize("where", ["sender", "recipient"])
def test_an_address_with_control_characters_is_refused_not_retried_forever(
    relay: GatewayProcess, relay_sink: Sink, where: str
) -> None:
    """The next hop never takes such an address (aiosmtplib refuses it, as Postfix does), so
    accepting it means a 4xx after DATA on every retry until the upstream gives up."""
    hostile = b'"a\x0bBcc: evil@attacker.example"@council.example.gov.uk'
    sender, rcpt = (hostile, b"someone@gmail.com") if where == "sender" else (SENDER.encode(), hostile)
    body = NINO_BODY if where == "sender" else "The minutes are attached."
    replies = send_raw(relay.smtp_port, sender, [rcpt], make_message(body=body, to=["someone@gmail.com"]))
    refused_early = replies[-1][:1] == b"5" and len(replies) <= 3
    assert refused_early or not replies[-1].startswith(b"4"), replies
    assert b"internal error" not in b"".join(replies), replies


def test_a_hostile_helo_name_puts_no_control_character_in_relayed_headers(
    relay: GatewayProcess, relay_sink: Sink
) -> None:
    before = len(relay_sink.messages)
    replies = send_raw(relay.smtp_port, SENDER.encode(), [INTERNAL.encode()],
                       make_message(subject="helo", to=[INTERNAL]), helo=b"a\x0bBcc: evil@attacker.example")
    if replies[0][:1] == b"5":
        return  # refused at EHLO
    assert replies[-1].startswith(b"250"), replies
    assert wait_until(lambda: len(relay_sink.messages) > before)
    received = relay_sink.messages[-1]
    for line in header_block(received.data):
        assert not CONTROL.search(line), f"control character in a relayed header: {line!r}"


# --- the admin listener ------------------------------------------------------------------------------

def test_every_listener_is_loopback_only_by_default() -> None:
    defaults = load_config()
    for listen in (defaults.admin.listen, defaults.server.smtp_listen, defaults.server.lmtp_listen):
        assert parse_listen(listen)[0] == "127.0.0.1"  # type: ignore[index]
    assert defaults.server.allowed_networks == ["127.0.0.0/8", "::1/128"]


def _listening(port: int) -> set[str]:
    """Local addresses with a socket listening on `port`, from /proc/net (no connection made)."""
    import ipaddress

    found = set()
    for table, size in (("/proc/net/tcp", 4), ("/proc/net/tcp6", 16)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if fields[3] != "0A" or int(hex_port, 16) != port:
                continue
            raw = bytes.fromhex(address)
            # /proc prints each 32-bit word in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4)) if sys.byteorder == "little" else raw
            found.add(str(ipaddress.ip_address(raw)) if size == 4 else str(ipaddress.IPv6Address(raw)))
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc/net")
def test_the_gateway_binds_the_configured_loopback_address_only(relay: GatewayProcess) -> None:
    for port in (relay.admin_port, relay.smtp_port, relay.lmtp_port):
        assert _listening(port) == {"127.0.0.1"}


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None   # a redirect is an answer of its own here


def _request(url: str, method: str = "GET", headers: dict[str, str] | None = None,
             data: bytes | None = None) -> tuple[int, bytes, dict[str, str]]:
    opener = urllib.request.build_opener(_NoRedirect)
    request = urllib.request.Request(url, method=method, headers=headers or {}, data=data)
    try:
        with opener.open(request, timeout=30) as response:
            return response.status, response.read(), dict(response.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def test_the_admin_listener_serves_no_mail_and_takes_no_action_without_a_sign_in(
    relay: GatewayProcess, relay_sink: Sink
) -> None:
    marker = "MARKER-5c2e the depot plans"
    recipient = "admin-probe@supplier.example.com"
    with relay.smtp() as client:
        client.ehlo()
        client.mail(SENDER)
        client.rcpt(recipient)
        code, reply = client.data(make_message(subject="SECRET: admin-probe", body=marker, to=[recipient]))
    assert code == 250 and b"held for review" in reply
    reference = re.search(rb"reference ([0-9A-F]+)", reply)
    assert reference, reply
    ref = reference.group(1).decode()
    secrets = [marker, "SECRET: admin-probe", recipient]
    base = f"http://127.0.0.1:{relay.admin_port}"
    # A sign-in header from a client that is not a configured proxy (none is, by default) counts for nothing.
    forged = {"X-Forwarded-User": "admin", "X-Remote-User": "admin", "Remote-User": "admin"}
    for path in ("/", "/quarantine", f"/quarantine/{ref}", "/audit", "/audit.csv", f"/messages/{ref}",
                 "/api/quarantine", "/var/quarantine", f"/{ref}.eml", "/static/../../var/audit.log"):
        for headers in ({}, forged):
            status, body, response_headers = _request(base + path, headers=headers)
            assert status in (302, 303, 401, 403, 404), (path, status)
            if status in (302, 303):
                assert urllib.parse.urlsplit(response_headers["Location"]).path == "/login", response_headers
            for secret in secrets:
                assert secret.encode() not in body, (path, secret)
    for action in ("read", "release", "delete"):
        status, body, _ = _request(f"{base}/quarantine/{ref}/{action}", "POST", forged, b"reason=x&csrf=x")
        assert status in (401, 403, 404, 405), (action, status)
        assert marker.encode() not in body
    assert _request(f"{base}/metrics", "POST")[0] == 405
    for path in ("/metrics", "/healthz", "/readyz", "/login"):
        status, body, _ = _request(base + path)
        assert status == 200, path
        for secret in secrets + [SENDER]:
            assert secret.encode() not in body, (path, secret)
    # Still held and unread: nothing the admin listener was asked did anything to it.
    import json

    shown = json.loads(relay.cli("quarantine", "show", ref).stdout)
    assert shown["status"] == "held" and [e["action"] for e in shown["events"]] == ["held"]
    assert relay_sink.to(recipient) == []
