"""Hostile and broken input, generated: the gateway answers it and decides it, never crashes on it.

Hypothesis builds MIME structures (nested multiparts with random boundaries, random
content types, charsets and transfer encodings, broken base64 and quoted-printable,
encoded words, attachments of random bytes under random names, bare line endings)
and plain random bytes. Each goes through the in-process Pipeline (the one code path
that decides), fewer through `dlp-gateway scan`, and some over SMTP to a running
gateway. Derandomized, so CI sees the same examples on every run; no example database
is written. The whole file takes well under a minute.
"""

from __future__ import annotations

import base64
import quopri
import re
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytest.importorskip("hypothesis", reason="Hypothesis is a test dependency: pip install -e '.[test]'")

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detectors.base import Signal
from gateway.config import Config, load_config
from gateway.decision import Action
from gateway.message import Envelope
from gateway.pipeline import Pipeline
from tests.support import BIN, GatewayProcess

SETTINGS = {"organisation": {"internal_domains": ["council.example.gov.uk"], "trusted_domains": ["nhs.net"]}}

FUZZ = settings(derandomize=True, database=None, deadline=None, print_blob=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.large_base_example])

# --- strategies --------------------------------------------------------------------------------

CHARSETS = ["utf-8", "us-ascii", "iso-8859-1", "windows-1252", "utf-16", "utf-16le", "utf-7", "shift_jis",
            "koi8-r", "gb2312", "big5", "x-unknown-charset", "", "utf-8\"; x=\"", "cp65001", "unicode-1-1-utf-7"]
CTES = ["7bit", "8bit", "binary", "base64", "quoted-printable", "BASE64", "x-uuencode", "bogus", ""]
LEAF_TYPES = ["text/plain", "text/html", "text/csv", "text/rtf", "text/calendar", "application/octet-stream",
              "application/pdf", "application/zip", "application/x-7z-compressed", "application/gzip",
              "application/msword", "application/vnd.ms-outlook", "application/pkcs7-mime",
              "application/pgp-encrypted", "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
              "image/png", "message/delivery-status", "text/rfc822-headers", "x/y", "text", "", "multipart/mixed"]
MULTIPART = ["mixed", "alternative", "related", "signed", "encrypted", "report", "digest", "x-weird"]
MAGIC = [b"PK\x03\x04", b"%PDF-1.7\n", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", b"7z\xbc\xaf\x27\x1c", b"\x1f\x8b\x08",
         b"BZh91AY&SY", b"\xfd7zXZ\x00", b"{\\rtf1\\ansi ", b"-----BEGIN PGP MESSAGE-----\n", b"\x89PNG\r\n\x1a\n",
         b"From: a@b\r\n\r\n", b"<html><body>", b"\xef\xbb\xbf", b"\xff\xfe"]
SNIPPETS = ["Her NI number is AB 12 34 56 C.", "NHS number 943 476 5919", "card 4111 1111 1111 1111",
            "IBAN GB82 WEST 1234 5698 7654 32", "sort code 12-34-56 account 31926819", "OFFICIAL-SENSITIVE",
            "OFFICIAL SENSITIVE: PERSONAL", "SECRET", "TOP SECRET", "John Smith was diagnosed with HIV last year.",
            "Mrs Patel attends the mosque.", "date of birth 01/02/1980", "SW1A 1AA", "020 7946 0000",
            "Dear Bob,", "Auto-Submitted: auto-forwarded", "\u200b\u00ad", "\u202e", "\x00", "\ufffd", "=?", "?=",
            "--", "\r\n.\r\n", "Content-Type: multipart/mixed; boundary=x"]
ADDRESSES = ["partner@supplier.example.com", "colleague@council.example.gov.uk", "gp.practice@nhs.net",
             "someone@gmail.com", "someone@counci1.example.gov.uk", "j.smith@partner.example.org",
             "UPPER@GMAIL.COM", '"quoted local"@example.com', "user+tag@sub.council.example.gov.uk",
             "zoë@exämple.com", "x@[127.0.0.1]", "a@b", "no-at-sign", "trailing.dot.@example.com"]
SENDERS = ["jane.doe@council.example.gov.uk", "", "Jane.Doe@COUNCIL.example.gov.uk", "outsider@example.net"]
HEADER_NAMES = ["Subject", "From", "To", "Cc", "Bcc", "Reply-To", "Message-ID", "X-Protective-Marking",
                "msip_labels", "Auto-Submitted", "Resent-From", "X-MS-Exchange-Inbox-Rules-Loop", "Received",
                "Content-Type", "Content-Transfer-Encoding", "MIME-Version", "X-DLP-Verdict", "Date", "Comments"]

line_text = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=60)
raw_line = st.binary(max_size=60).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))


@st.composite
def encoded_word(draw: st.DrawFn) -> bytes:
    charset = draw(st.sampled_from(CHARSETS + ["utf-8*en"]))
    if draw(st.booleans()):
        payload = base64.b64encode(draw(st.binary(max_size=40))).decode()
        payload = draw(st.sampled_from([payload, payload[:-1], payload.rstrip("="), payload + "!!", payload[::2]]))
        encoding = draw(st.sampled_from(["B", "b"]))
    else:
        payload = quopri.encodestring(draw(st.binary(max_size=40)), header=True).decode("ascii", "replace")
        payload = draw(st.sampled_from([payload, payload + "=", payload + "=ZZ", payload.replace(" ", "_")]))
        encoding = draw(st.sampled_from(["Q", "q", "X"]))
    return f"=?{charset}?{encoding}?{payload}?=".encode("utf-8", "replace")


header_value = st.lists(
    st.one_of(line_text.map(lambda t: t.encode("utf-8")), encoded_word(), raw_line,
              st.sampled_from(SNIPPETS).map(str.encode), st.sampled_from(ADDRESSES).map(str.encode)),
    max_size=4,
).map(b" ".join)


@st.composite
def header(draw: st.DrawFn, names: list[str] = HEADER_NAMES) -> bytes:
    if draw(st.integers(0, 7)):
        name = draw(st.sampled_from(names)).encode()
    else:
        name = draw(st.from_regex(rb"\A[!-9;-~]{1,20}\Z"))
    value = draw(header_value)
    if draw(st.integers(0, 5)) == 0 and len(value) > 4:  # folded
        cut = draw(st.integers(1, len(value) - 1))
        value = value[:cut] + b"\r\n\t" + value[cut:]
    # Mostly "Name: value"; now and then no space, spaces before the colon, or no colon at all.
    separator = draw(st.sampled_from([b": "] * 12 + [b":", b" : ", b""]))
    return name + separator + value


@st.composite
def payload(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        text = draw(st.lists(st.one_of(st.sampled_from(SNIPPETS), st.text(max_size=80)), max_size=6))
        charset = draw(st.sampled_from(["utf-8", "latin-1", "utf-16", "cp1252", "shift_jis"]))
        return "\n".join(text).encode(charset, "replace")
    if kind == 1:
        return draw(st.sampled_from(MAGIC)) + draw(st.binary(max_size=600))
    if kind == 2:
        return draw(st.binary(max_size=800))
    return ("\n".join(draw(st.lists(st.sampled_from(SNIPPETS), max_size=40))) * draw(st.integers(1, 5))).encode()


def transfer_encode(cte: str, data: bytes, broken: int, draw: st.DrawFn) -> bytes:
    if cte.lower() == "base64":
        body = base64.encodebytes(data)
        if broken == 1:
            body = body[: draw(st.integers(0, len(body)))]
        elif broken == 2:
            at = draw(st.integers(0, len(body)))
            body = body[:at] + draw(st.sampled_from([b"!", b"====", b"\x00", b"\xff", b"-_", b"\n\n"])) + body[at:]
        return body
    if cte.lower() == "quoted-printable":
        body = quopri.encodestring(data)
        if broken:
            at = draw(st.integers(0, len(body)))
            body = body[:at] + draw(st.sampled_from([b"=", b"=Z", b"=\r\n", b"=4", b"=\x00", b"=FF"])) + body[at:]
        return body
    return data


@st.composite
def filename(draw: st.DrawFn) -> bytes:
    name = draw(st.one_of(st.text(max_size=40), st.sampled_from(
        ["../../etc/passwd", "a.zip", "report.docx", "x" * 300, "", ".", "con.txt", "a\tb.pdf", "naïve résumé.xlsx",
         "\u202egpj.exe", "file\x00name.txt"])))
    style = draw(st.integers(0, 3))
    if style == 0:
        return b'filename="' + name.encode("utf-8", "replace") + b'"'
    if style == 1:
        from urllib.parse import quote

        return b"filename*=UTF-8''" + quote(name).encode()
    if style == 2:
        return b"filename=" + draw(encoded_word())
    return b"filename*0=\"" + name[:5].encode("utf-8", "replace") + b"\"; filename*1=\"" + \
        name[5:].encode("utf-8", "replace") + b"\""


@st.composite
def leaf(draw: st.DrawFn) -> tuple[list[bytes], bytes]:
    ctype = draw(st.sampled_from(LEAF_TYPES))
    cte = draw(st.sampled_from(CTES))
    params = b""
    if draw(st.booleans()):
        params += b'; charset="' + draw(st.sampled_from(CHARSETS)).encode() + b'"'
    if draw(st.booleans()):
        params += b"; name=" + draw(filename()).split(b"=", 1)[1]
    headers = [b"Content-Type: " + ctype.encode() + params]
    if cte:
        headers.append(b"Content-Transfer-Encoding: " + cte.encode())
    if draw(st.booleans()):
        headers.append(b"Content-Disposition: " + draw(st.sampled_from([b"attachment", b"inline", b"bogus"])) +
                       b"; " + draw(filename()))
    headers += draw(st.lists(header(["Content-ID", "Content-Description", "Content-Type", "X-Anything"]),
                             max_size=2))
    body = transfer_encode(cte, draw(payload()), draw(st.integers(0, 2)), draw)
    return headers, body


boundary_text = st.from_regex(rb"\A[0-9A-Za-z'()+_,./:=? -]{0,70}\Z").filter(lambda b: not b.endswith(b" "))


@st.composite
def multipart(draw: st.DrawFn, children: st.SearchStrategy[tuple[list[bytes], bytes]]) -> tuple[list[bytes], bytes]:
    boundary = draw(boundary_text)
    quoted = draw(st.booleans())
    subtype = draw(st.sampled_from(MULTIPART))
    headers = [b"Content-Type: multipart/" + subtype.encode() + b"; boundary=" +
               (b'"' + boundary + b'"' if quoted else boundary)]
    if draw(st.integers(0, 4)) == 0:
        headers.append(b"Content-Transfer-Encoding: " + draw(st.sampled_from(CTES)).encode())
    parts = [draw(st.binary(max_size=40)) if draw(st.booleans()) else b""]  # preamble
    for child_headers, child_body in draw(st.lists(children, max_size=4)):
        mark = boundary if draw(st.integers(0, 9)) else draw(boundary_text)   # now and then a wrong boundary
        parts.append(b"\r\n--" + mark + b"\r\n" + b"\r\n".join(child_headers) + b"\r\n\r\n" + child_body)
    ending = draw(st.sampled_from([b"\r\n--" + boundary + b"--\r\n", b"\r\n--" + boundary + b"--", b"", b"\r\n--"]))
    return headers, b"".join(parts) + ending + (draw(st.binary(max_size=20)) if draw(st.booleans()) else b"")


@st.composite
def attached_message(draw: st.DrawFn, children: st.SearchStrategy[tuple[list[bytes], bytes]]) -> tuple[list[bytes], bytes]:
    inner_headers, inner_body = draw(children)
    top = draw(st.lists(header(), max_size=3))
    return [b"Content-Type: message/rfc822"], b"\r\n".join(top + inner_headers) + b"\r\n\r\n" + inner_body


mime_tree = st.recursive(leaf(), lambda children: st.one_of(multipart(children), attached_message(children)),
                         max_leaves=8)


@st.composite
def message(draw: st.DrawFn) -> bytes:
    top = [line for line, wanted in (
        (b"From: Jane Doe <jane.doe@council.example.gov.uk>", draw(st.integers(0, 4))),
        (b"To: " + b", ".join(a.encode() for a in draw(st.lists(st.sampled_from(ADDRESSES), max_size=3))),
         draw(st.integers(0, 4))),
        (b"Subject: " + draw(header_value), draw(st.integers(0, 4))),
        (b"Message-ID: <" + draw(raw_line) + b"@fuzz.test>", draw(st.integers(0, 2))),
    ) if wanted]
    top += draw(st.lists(header(), min_size=0, max_size=6))
    top = draw(st.permutations(top))
    part_headers, body = draw(mime_tree)
    if draw(st.booleans()):
        top.append(b"MIME-Version: 1.0")
    raw = b"\r\n".join(top + part_headers) + b"\r\n\r\n" + body
    ending = draw(st.sampled_from([b"\r\n", b"\r\n", b"\n", b"\r"]))
    if ending != b"\r\n":
        raw = raw.replace(b"\r\n", ending)
    return raw


@st.composite
def envelope(draw: st.DrawFn) -> Envelope:
    rcpts = draw(st.lists(st.sampled_from(ADDRESSES), min_size=1, max_size=4, unique=True))
    return Envelope(mail_from=draw(st.sampled_from(SENDERS)), rcpt_tos=tuple(rcpts),
                    mail_options=tuple(draw(st.lists(st.sampled_from(["BODY=8BITMIME", "SMTPUTF8"]), unique=True))))


# --- the in-process pipeline ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def config_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fuzz") / "gateway.yaml"
    path.write_text(yaml.safe_dump(SETTINGS))
    return path


@pytest.fixture(scope="module")
def pipeline(config_file: Path) -> Pipeline:
    config: Config = load_config(config_file)
    return Pipeline(config)


def assert_decided(pipeline: Pipeline, raw: bytes, env: Envelope) -> None:
    inspection = pipeline.inspect(raw, env)
    decision = inspection.decision
    assert [r.address for r in decision.recipients] == list(env.rcpt_tos)
    assert all(isinstance(r.action, Action) for r in decision.recipients)
    assert decision.verdict in Action
    # A detector that raised is caught by the pipeline (and holds the mail), but it is a bug.
    crashed = [f for f in inspection.findings if f.kind == "content a detector could not inspect"]
    assert crashed == [], crashed
    # Whatever could not be read counts against the message, never for it.
    if any(f.signal is Signal.INCOMPLETE for f in inspection.findings):
        for r in decision.recipients:
            if r.rclass.value != "internal":
                assert r.action.strictness >= Action.QUARANTINE.strictness, (r, inspection.findings)


@settings(FUZZ, max_examples=600)
@given(raw=message(), env=envelope())
def test_generated_mime_is_always_decided_for_every_recipient(pipeline: Pipeline, raw: bytes, env: Envelope) -> None:
    assert_decided(pipeline, raw, env)


@settings(FUZZ, max_examples=400)
@given(raw=st.one_of(st.binary(max_size=3000),
                     st.tuples(st.lists(header(), max_size=5), st.binary(max_size=2000)).map(
                         lambda t: b"\r\n".join(t[0]) + b"\r\n\r\n" + t[1])),
       env=envelope())
def test_random_bytes_are_always_decided_for_every_recipient(pipeline: Pipeline, raw: bytes, env: Envelope) -> None:
    assert_decided(pipeline, raw, env)


# --- dlp-gateway scan -----------------------------------------------------------------------------

@settings(FUZZ, max_examples=3)
@given(raws=st.lists(st.one_of(message(), st.binary(max_size=2000)), min_size=15, max_size=15))
def test_scan_prints_one_json_line_per_generated_file(config_file: Path, tmp_path_factory: pytest.TempPathFactory,
                                                      raws: list[bytes]) -> None:
    import json

    directory = tmp_path_factory.mktemp("scan")
    files = []
    for n, raw in enumerate(raws):
        path = directory / f"{n}.eml"
        path.write_bytes(raw)
        files.append(str(path))
    out = subprocess.run([str(BIN / "dlp-gateway"), "scan", "--config", str(config_file), *files],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["file"] for r in records] == files
    assert all(r["verdict"] in {a.value for a in Action} for r in records)
    assert "Traceback" not in out.stderr


# --- SMTP to a running gateway ---------------------------------------------------------------------

REPLY = re.compile(rb"\A([2-5]\d\d)([ -])")


def read_reply(f: Any) -> tuple[int, bytes]:
    lines = []
    while True:
        line = f.readline()
        assert line, "the gateway closed the connection instead of answering"
        match = REPLY.match(line)
        assert match, f"not an SMTP reply: {line!r}"
        lines.append(line)
        if match.group(2) == b" ":
            return int(match.group(1)), b"".join(lines)


def smtp_raw(port: int, sender: str, rcpts: tuple[str, ...], raw: bytes) -> list[tuple[int, bytes]]:
    """One transaction with the message bytes as they are (bare line endings included), dot-stuffed."""
    replies = []
    with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
        f = s.makefile("rb")

        def command(line: str) -> tuple[int, bytes]:
            s.sendall(line.encode("utf-8") + b"\r\n")
            replies.append(read_reply(f))
            return replies[-1]

        replies.append(read_reply(f))
        command("EHLO fuzz.test")
        utf8 = not all(a.isascii() for a in (sender, *rcpts))
        if command(f"MAIL FROM:<{sender}>" + (" SMTPUTF8" if utf8 else ""))[0] == 250:
            accepted = [r for r in rcpts if command(f"RCPT TO:<{r}>")[0] == 250]
            if accepted and command("DATA")[0] == 354:
                body = re.sub(rb"(?m)^\.", b"..", raw)  # only after LF; a bare CR never starts a line in DATA
                if not body.endswith(b"\r\n"):
                    body += b"\r\n"
                s.sendall(body + b".\r\n")
                replies.append(read_reply(f))
        command("QUIT")
    return replies


@settings(FUZZ, max_examples=150)
@given(raw=st.one_of(message(), st.binary(max_size=2000)), env=envelope())
def test_generated_mail_over_smtp_is_always_answered(relay: GatewayProcess, raw: bytes, env: Envelope) -> None:
    replies = smtp_raw(relay.smtp_port, env.mail_from, env.rcpt_tos, raw)
    assert replies[-1][0] == 221
    for code, text in replies:
        assert b"internal error" not in text.lower(), replies
    assert relay.proc is not None and relay.proc.poll() is None


def test_the_fuzzed_gateway_is_still_alive_and_logged_no_crash(relay: GatewayProcess) -> None:
    assert relay.proc is not None and relay.proc.poll() is None
    with socket.create_connection(("127.0.0.1", relay.smtp_port), timeout=30) as s:
        assert s.recv(1024).startswith(b"220")
    log = relay.log_file.read_text()
    assert "Traceback" not in log, log[-5000:]
    # Most generated transactions got as far as a decision (not all: some envelopes are refused).
    assert len(relay.audit()) >= 75, len(relay.audit())
