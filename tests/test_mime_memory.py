"""Taking a large message apart costs about what its decoded attachments weigh, not a copy of every line.

tracemalloc counts Python allocations only; the process's peak RSS for the same kind of
message is measured by tests/bench/attachments_bench.py.
"""

from __future__ import annotations

import base64
import random
import tracemalloc

from gateway.message import BODY, SUBJECT, model_parts

MB = 1 << 20
MESSAGE_SIZE = 20 * MB


def _part(headers: str, body: bytes) -> bytes:
    return headers.replace("\n", "\r\n").encode("ascii") + b"\r\n" + body


def _attachment(name: str, ctype: str, data: bytes) -> bytes:
    encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")
    return _part(f'Content-Type: {ctype}; name="{name}"\nContent-Disposition: attachment; filename="{name}"\n'
                 "Content-Transfer-Encoding: base64\n", encoded)


def _multipart(subtype: str, boundary: str, parts: list[bytes], headers: str = "") -> bytes:
    out = [_part(f'{headers}MIME-Version: 1.0\nContent-Type: multipart/{subtype}; boundary="{boundary}"\n',
                 b"This is a multi-part message in MIME format.\r\n")]
    out += [b"--" + boundary.encode() + b"\r\n" + p + b"\r\n" for p in parts]
    out.append(b"--" + boundary.encode() + b"--\r\n")
    return b"".join(out)


def _csv(rows: int, rng: random.Random) -> bytes:
    return "".join(f"{rng.randrange(10**6)},Jo Bloggs,{rng.choice(['Housing', 'Planning'])},"
                   f"07{rng.randrange(10**9):09d}\r\n" for _ in range(rows)).encode()


def mixed_message(size: int) -> tuple[bytes, dict[str, bytes]]:
    """About `size` bytes: an HTML and plain body, an attached email with an attachment of its own,
    and base64 attachments (a photo, a PDF, a CSV, a ZIP) making up the rest."""
    rng = random.Random(20)
    files = {"report.pdf": b"%PDF-1.4\n" + rng.randbytes(3 * MB), "staff.csv": _csv(40_000, rng),
             "export.zip": b"PK\x03\x04" + rng.randbytes(MB)}
    inner = _multipart("mixed", "inner-boundary", [
        _part("Content-Type: text/plain; charset=utf-8\n", b"Referral attached.\r\n"),
        _attachment("referral.csv", "text/csv", _csv(2_000, rng))], headers="Subject: Fwd: referral\n")
    body = _multipart("alternative", "alt-boundary", [
        _part("Content-Type: text/plain; charset=utf-8\n", b"Please find the files attached.\r\n"),
        _part("Content-Type: text/html; charset=utf-8\n", b"<p>Please find the files <b>attached</b>.</p>\r\n")])
    encoded = sum(len(base64.encodebytes(d)) * 1.03 for d in files.values()) + len(inner) + len(body)
    files["site-visit.jpg"] = b"\xff\xd8\xff\xe0" + rng.randbytes(int((size - encoded) * 3 / 4 / 1.03) - 8192)
    types = {"report.pdf": "application/pdf", "staff.csv": "text/csv", "export.zip": "application/zip",
             "site-visit.jpg": "image/jpeg"}
    parts = [body, _part('Content-Type: message/rfc822; name="referral.eml"\n', inner)]
    parts += [_attachment(name, types[name], data) for name, data in files.items()]
    raw = _multipart("mixed", "outer-boundary", parts, headers="From: jane@council.example.gov.uk\nSubject: Mixed\n")
    return raw, files | {"referral.eml": inner}


def test_taking_apart_a_20_mb_message_allocates_under_twice_its_size() -> None:
    raw, files = mixed_message(MESSAGE_SIZE)
    assert abs(len(raw) - MESSAGE_SIZE) < MB
    tracemalloc.start()
    try:
        parts = model_parts(raw)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2 * len(raw), f"peak {peak / MB:.1f} MiB for a {len(raw) / MB:.1f} MiB message"
    assert {f.name: f.data for f in parts.files} == files
    assert [loc for loc, _ in parts.texts] == [SUBJECT, BODY, BODY]
    assert parts.defects == []
