"""Archives: ZIP, TAR (plain, gz, bz2, xz), single compressed files and 7z, read recursively
through the same extraction; encrypted entries recognised, hostile archives bounded.

Bombs are built in a fraction of a second: a deflate block of 1 MB of zeros, flushed so
that it does not depend on what came before, repeated (what a compressor would write).
"""

from __future__ import annotations

import bz2
import gzip
import io
import json
import lzma
import random
import struct
import subprocess
import tarfile
import time
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import py7zr
import pytest
import pyzipper

from detectors.attachments import Limits, ReadFile, Status, read_attachments
from detectors.attachments import archives
from detectors.attachments.core import AttachmentReport, extractor_for
from gateway.message import detect_type
from tests.conftest import make_message
from tests.support import BIN
from tests.test_attachments import STAFF_CSV

MB = 1 << 20
PARTNER = "partner@supplier.example.com"
PERSONAL = "someone@gmail.com"
CSV = STAFF_CSV.encode()
NOISE = random.Random(7).randbytes(20_000)  # does not compress away


# ------------------------------------------------------------------ building archives


def zip_of(*files: tuple[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", method) as z:
        for name, data in files:
            z.writestr(name, data)
    return buf.getvalue()


def tar_of(*files: tuple[str, bytes], mode: str = "w", name: str | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(name, mode, fileobj=buf) as t:
        for member, data in files:
            info = tarfile.TarInfo(member)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def seven_zip(*files: tuple[str, bytes], password: str | None = None, header_encryption: bool = False) -> bytes:
    buf = io.BytesIO()
    with py7zr.SevenZipFile(buf, "w", password=password, header_encryption=header_encryption) as z:
        for name, data in files:
            z.writestr(data, name)
    return buf.getvalue()


def aes_zip(*files: tuple[str, bytes], plain: tuple[tuple[str, bytes], ...] = ()) -> bytes:
    buf = io.BytesIO()
    with pyzipper.AESZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for name, data in plain:
            z.writestr(name, data)
        z.setpassword(b"correct horse")
        z.setencryption(pyzipper.WZ_AES)
        for name, data in files:
            z.writestr(name, data)
    return buf.getvalue()


def with_zipcrypto_flag(data: bytes, member: str) -> bytes:
    """Mark one entry as ZipCrypto-encrypted (flag bit 0) in both its headers; the gateway
    recognises encryption from the headers and never decrypts, so the flag is what matters."""
    out = bytearray(data)
    name = member.encode()
    for signature, flag_at, name_len_at, name_at in ((b"PK\x03\x04", 6, 26, 30), (b"PK\x01\x02", 8, 28, 46)):
        i = out.find(signature)
        while i >= 0:
            (length,) = struct.unpack_from("<H", out, i + name_len_at)
            if out[i + name_at:i + name_at + length] == name:
                out[i + flag_at] |= 0x01
            i = out.find(signature, i + 4)
    return bytes(out)


def deflate_zeros(megabytes: int) -> tuple[bytes, int]:
    """Raw deflate of `megabytes` MB of zeros, and its CRC-32."""
    block = b"\0" * MB
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    flushed = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)   # the same bytes for every such block
    last = c.compress(block) + c.flush(zlib.Z_FINISH)
    crc = 0
    for _ in range(megabytes):
        crc = zlib.crc32(block, crc)
    return flushed * (megabytes - 1) + last, crc


def gzip_of_zeros(megabytes: int) -> bytes:
    raw, crc = deflate_zeros(megabytes)
    return b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff" + raw + struct.pack("<II", crc, (megabytes * MB) & 0xFFFFFFFF)


def zip_bomb(members: int, megabytes_each: int) -> bytes:
    """A classic zip bomb: `members` entries of `megabytes_each` MB of zeros, deflated."""
    raw, crc = deflate_zeros(megabytes_each)
    size = megabytes_each * MB
    local, central = bytearray(), bytearray()
    for n in range(members):
        name = f"zeros-{n}.bin".encode()
        offset = len(local)
        local += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0, crc, len(raw), size, len(name), 0) + name + raw
        central += struct.pack("<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, 8, 0, 0, crc, len(raw), size, len(name),
                               0, 0, 0, 0, 0, offset) + name
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, members, members, len(central), len(local), 0)
    return bytes(local + central + end)


def nested_zips(levels: int) -> bytes:
    data = zip_of(("staff.csv", CSV))
    for level in range(levels):
        data = zip_of((f"level{level}.zip", data))
    return data


def gzip_named(original_name: str, data: bytes) -> bytes:
    """What `gzip report.csv` writes: the original name in the header."""
    buf = io.BytesIO()
    with gzip.GzipFile(filename=original_name, mode="wb", fileobj=buf, mtime=0) as g:
        g.write(data)
    return buf.getvalue()


def read(name: str, data: bytes, limits: Limits | None = None) -> dict[str, AttachmentReport]:
    texts, found = read_attachments([ReadFile(name, data)], limits or Limits(), detect_type)
    return {r.location: r for r in found}


def texts_of(name: str, data: bytes) -> dict[str, str]:
    texts, _ = read_attachments([ReadFile(name, data)], Limits(), detect_type)
    return dict(texts)


def scan_all(tmp_path: Path, messages: dict[str, bytes]) -> dict[str, dict]:
    """One `dlp-gateway scan` over many messages (the envelope comes from each one's headers)."""
    paths = []
    for label, raw in messages.items():
        path = tmp_path / f"{label}.eml"
        path.write_bytes(raw)
        paths.append(str(path))
    out = subprocess.run([str(BIN / "dlp-gateway"), "scan", *paths], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines()]
    return {Path(r["file"]).stem: r for r in records}


# ------------------------------------------------------------------ what each archive is called


def test_every_archive_is_registered_under_the_name_libmagic_gives_it() -> None:
    samples = {
        "application/zip": zip_of(("staff.csv", CSV)),
        "application/x-tar": tar_of(("staff.csv", CSV)),
        "application/gzip": gzip.compress(CSV),
        "application/x-bzip2": bz2.compress(CSV),
        "application/x-xz": lzma.compress(CSV),
        "application/x-lzma": lzma.compress(CSV, format=lzma.FORMAT_ALONE),
        "application/x-7z-compressed": seven_zip(("staff.csv", CSV)),
    }
    for mime, data in samples.items():
        assert detect_type(data) == mime
        assert extractor_for(mime) is not None and extractor_for(mime).__module__ == archives.__name__
    assert detect_type(tar_of(("staff.csv", CSV), mode="w:gz")) == "application/gzip"  # a .tar.gz is a gzip first


# ------------------------------------------------------------------ reading inside


def test_a_csv_in_a_zip_in_a_tar_gz_is_read_and_located_through_every_layer() -> None:
    data = tar_of(("inner.zip", zip_of(("staff.csv", CSV))), mode="w:gz", name="outer.tar.gz")
    found = read("outer.tar.gz", data)
    assert list(found) == ["attachment:outer.tar.gz", "attachment:outer.tar.gz/outer.tar",
                           "attachment:outer.tar.gz/outer.tar/inner.zip",
                           "attachment:outer.tar.gz/outer.tar/inner.zip/staff.csv"]
    assert all(r.status is Status.INSPECTED for r in found.values())
    assert "AB123456C" in texts_of("outer.tar.gz", data)["attachment:outer.tar.gz/outer.tar/inner.zip/staff.csv"]


def test_tar_in_bzip2_and_xz_and_a_plain_tar_are_read() -> None:
    for name, data in (("staff.tar", tar_of(("staff.csv", CSV))),
                       ("staff.tar.bz2", tar_of(("staff.csv", CSV), mode="w:bz2")),
                       ("staff.tar.xz", tar_of(("staff.csv", CSV), mode="w:xz"))):
        found = texts_of(name, data)
        assert any(loc.endswith("/staff.csv") and "AB123456C" in text for loc, text in found.items()), name


def test_a_single_compressed_file_is_named_after_its_original_name_when_the_header_keeps_it() -> None:
    assert "attachment:report.csv.gz/report.csv" in texts_of("report.csv.gz", gzip_named("report.csv", CSV))
    # bzip2 and xz keep no name: the attachment's name without its suffix stands in
    assert "attachment:report.csv.bz2/report.csv" in texts_of("report.csv.bz2", bz2.compress(CSV))
    assert "attachment:report.csv.xz/report.csv" in texts_of("report.csv.xz", lzma.compress(CSV))
    assert "attachment:backup.tgz/backup.tar" in texts_of("backup.tgz", gzip.compress(CSV, mtime=0))


def test_the_names_inside_an_archive_are_text_a_detector_reads() -> None:
    data = zip_of(("AB123456C Jo Bloggs payslip.txt", b"see attached"))
    assert "AB123456C Jo Bloggs payslip.txt" in texts_of("pay.zip", data)["attachment:pay.zip"]


def test_path_tricks_in_member_names_become_plain_labels() -> None:
    data = zip_of(("../../etc/passwd", b"x"), ("/abs/staff.csv", CSV), ("C:\\Users\\jo\\notes.txt", b"y"),
                  ("odd\nname.txt", b"z"), ("dir/", b""))
    assert set(read("tricks.zip", data)) == {
        "attachment:tricks.zip", "attachment:tricks.zip/etc/passwd", "attachment:tricks.zip/abs/staff.csv",
        "attachment:tricks.zip/Users/jo/notes.txt", "attachment:tricks.zip/oddname.txt"}
    assert archives.clean_name("../..", "file-1") == "file-1"


def test_a_plain_7z_is_read() -> None:
    found = texts_of("staff.7z", seven_zip(("hr/staff.csv", CSV)))
    assert "AB123456C" in found["attachment:staff.7z/hr/staff.csv"]


def test_an_office_document_libmagic_calls_a_plain_zip_is_read_as_the_document() -> None:
    from detectors.attachments import ooxml

    openpyxl = pytest.importorskip("openpyxl")
    if not hasattr(ooxml, "sniff_office"):
        pytest.skip("the office extractor has no sniff_office yet")
    book = openpyxl.Workbook()
    book.active.append(["Name", "NI number"])
    book.active.append(["Jo Bloggs", "AB123456C"])
    buf = io.BytesIO()
    book.save(buf)
    saved = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    # A large first entry pushes the parts libmagic looks for out of the bytes it reads.
    data = zip_of(("docProps/thumbnail.jpeg", random.Random(1).randbytes(70_000)),
                  *[(i.filename, saved.read(i)) for i in saved.infolist()])
    assert detect_type(data) == "application/zip"
    texts = texts_of("book.xlsx", data)
    assert list(texts) == ["attachment:book.xlsx"] and "AB123456C" in texts["attachment:book.xlsx"]


# ------------------------------------------------------------------ encrypted


def test_aes_and_zipcrypto_entries_are_encrypted_and_the_other_entries_are_still_read() -> None:
    aes = aes_zip(("staff.csv", CSV), plain=(("readme.txt", b"Password by phone"),))
    found = read("aes.zip", aes)
    assert found["attachment:aes.zip"].status is Status.ENCRYPTED
    assert found["attachment:aes.zip"].reason == "1 of 2 files in the ZIP is encrypted"
    assert found["attachment:aes.zip/readme.txt"].status is Status.INSPECTED
    assert "attachment:aes.zip/staff.csv" not in found

    crypto = with_zipcrypto_flag(zip_of(("readme.txt", b"hello"), ("staff.csv", CSV)), "staff.csv")
    found = read("crypto.zip", crypto)
    assert found["attachment:crypto.zip"].status is Status.ENCRYPTED
    assert "attachment:crypto.zip/staff.csv" not in found and "attachment:crypto.zip/readme.txt" in found


def test_the_winzip_aes_extra_field_alone_marks_an_entry_encrypted() -> None:
    info = zipfile.ZipInfo("staff.csv")
    info.compress_type = zipfile.ZIP_DEFLATED
    info.extra = struct.pack("<HH", 0x000A, 4) + b"\0" * 4 + struct.pack("<HHH2sBH", 0x9901, 7, 2, b"AE", 3, 8)
    assert archives.is_encrypted_zip_entry(info)
    assert not archives.is_encrypted_zip_entry(zipfile.ZipInfo("plain.csv"))


def test_a_zip_with_no_encrypted_entry_is_not_encrypted() -> None:
    assert all(r.status is Status.INSPECTED for r in read("plain.zip", zip_of(("staff.csv", CSV))).values())


def test_an_encrypted_7z_is_encrypted_with_or_without_its_file_list_hidden() -> None:
    streams = read("locked.7z", seven_zip(("staff.csv", CSV), password="pw"))
    assert streams["attachment:locked.7z"].status is Status.ENCRYPTED
    assert streams["attachment:locked.7z"].reason == "1 of 1 file in the 7z archive is encrypted"
    headers = read("locked.7z", seven_zip(("staff.csv", CSV), password="pw", header_encryption=True))
    assert headers["attachment:locked.7z"].status is Status.ENCRYPTED
    assert list(headers) == ["attachment:locked.7z"]


# ------------------------------------------------------------------ hostile input


def _incomplete(found: dict[str, AttachmentReport], location: str, words: str) -> None:
    assert found[location].status is Status.INCOMPLETE, found
    assert words in found[location].reason, found[location].reason


def test_a_zip_bomb_is_refused_on_its_declared_sizes_before_anything_is_decompressed() -> None:
    bomb = zip_bomb(members=10, megabytes_each=100)   # 1 GB of zeros in 1 MB
    started = time.monotonic()
    found = read("bomb.zip", bomb)
    assert time.monotonic() - started < 1
    _incomplete(found, "attachment:bomb.zip", f"archives expand to more than {200 * MB} bytes")


def test_a_zip_bomb_within_the_byte_limit_stops_at_the_ratio_limit_within_a_few_megabytes() -> None:
    bomb = zip_bomb(members=1, megabytes_each=190)
    tracemalloc.start()
    started = time.monotonic()
    try:
        found = read("bomb.zip", bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert time.monotonic() - started < 2
    assert peak < 20 * MB, f"peak {peak / MB:.0f} MB"
    _incomplete(found, "attachment:bomb.zip", "zeros-0.bin expands more than 150 times")


def test_a_gzip_expanding_to_a_gigabyte_stops_quickly_in_bounded_memory() -> None:
    bomb = gzip_of_zeros(1024)
    for limits, words in ((Limits(), "expands more than 150 times"),
                          (Limits(max_ratio=1e9, max_expanded_bytes=50 * MB), "archives expand to more than")):
        tracemalloc.start()
        started = time.monotonic()
        try:
            found = read("zeros.gz", bomb, limits)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert time.monotonic() - started < 5
        assert peak < 100 * MB, f"peak {peak / MB:.0f} MB"
        _incomplete(found, "attachment:zeros.gz", words)


def test_a_7z_declaring_more_than_the_ratio_allows_is_not_extracted() -> None:
    found = read("zeros.7z", seven_zip(("zeros.bin", b"\0" * (20 * MB))))
    _incomplete(found, "attachment:zeros.7z", "expands more than 150 times")


def test_archives_nested_deeper_than_the_limit_cannot_be_inspected() -> None:
    found = read("nested.zip", nested_zips(7))
    deepest = list(found.values())[-1]
    assert deepest.status is Status.INCOMPLETE and "nested more than 5 archives deep" in deepest.reason
    assert not any(loc.endswith("staff.csv") for loc in found)


def test_more_files_than_the_member_limit_cannot_be_inspected() -> None:
    files = [(f"f{n}.txt", b"x") for n in range(1001)]
    _incomplete(read("many.zip", zip_of(*files)), "attachment:many.zip", "more than 1000 files inside archives")
    _incomplete(read("many.tar", tar_of(*files)), "attachment:many.tar", "more than 1000 files inside archives")
    folders = zip_of(*[(f"d{n}/", b"") for n in range(4001)])  # nothing to read, but a list to parse
    _incomplete(read("folders.zip", folders), "attachment:folders.zip", "lists more than 4000 files and folders")
    # The limit is for the whole message: two archives of 600 files pass it together.
    half = zip_of(*files[:600])
    texts, found = read_attachments([ReadFile("a.zip", half), ReadFile("b.zip", half)], Limits(), detect_type)
    assert any(r.status is Status.INCOMPLETE and "more than 1000 files" in r.reason for r in found)


def test_damaged_archives_cannot_be_inspected() -> None:
    good_zip = zip_of(("staff.csv", CSV * 200))
    no_directory = good_zip[:len(good_zip) - 60]
    assert detect_type(no_directory) == "application/zip"
    _incomplete(read("cut.zip", no_directory), "attachment:cut.zip", "damaged or unreadable")
    flipped = bytearray(good_zip)
    flipped[60] ^= 0xFF                          # inside the deflated data: bad data or a CRC mismatch
    _incomplete(read("flipped.zip", bytes(flipped)), "attachment:flipped.zip", "could not be read: staff.csv")
    truncated_gz = gzip.compress(NOISE)[:3000]
    _incomplete(read("cut.gz", truncated_gz), "attachment:cut.gz", "ends early")
    truncated_tar = tar_of(("staff.csv", CSV * 100))[:1500]
    _incomplete(read("cut.tar", truncated_tar), "attachment:cut.tar", "damaged or unreadable")
    truncated_7z = seven_zip(("staff.csv", CSV))[:-20]
    _incomplete(read("cut.7z", truncated_7z), "attachment:cut.7z", "damaged or unreadable")


# ------------------------------------------------------------------ end to end


def test_scan_decides_on_archives_end_to_end(tmp_path: Path) -> None:
    def mail(to: str, name: str, data: bytes, ctype: str = "application/octet-stream") -> bytes:
        return make_message(to=[to], subject=f"Files: {name}", attachments=[(name, data, ctype)])

    nested = tar_of(("inner.zip", zip_of(("staff.csv", CSV))), mode="w:gz", name="outer.tar.gz")
    aes = aes_zip(("staff.csv", CSV))
    crypto = with_zipcrypto_flag(zip_of(("staff.csv", CSV)), "staff.csv")
    locked_7z = seven_zip(("staff.csv", CSV), password="pw", header_encryption=True)
    hostile = {
        "zip-bomb": ("bomb.zip", zip_bomb(members=10, megabytes_each=100), "archives expand to more than"),
        "gzip-bomb": ("zeros.gz", gzip_of_zeros(1024), "expands more than 150 times"),
        "nested": ("nested.zip", nested_zips(7), "nested more than 5 archives deep"),
        "many": ("many.zip", zip_of(*[(f"f{n}.txt", b"x") for n in range(1001)]), "more than 1000 files"),
        "corrupt": ("cut.zip", zip_of(("staff.csv", CSV * 200))[:-60], "damaged or unreadable"),
        "truncated": ("cut.gz", gzip.compress(NOISE)[:3000], "ends early"),
    }
    messages = {
        "nested-personal": mail(PERSONAL, "outer.tar.gz", nested, "application/gzip"),
        "plain-7z-personal": mail(PERSONAL, "staff.7z", seven_zip(("staff.csv", CSV))),
        **{f"{label}-{who}": mail(to, f"{label}.zip", data, "application/zip")
           for label, data in (("aes", aes), ("zipcrypto", crypto)) for who, to in (("partner", PARTNER),
                                                                                     ("personal", PERSONAL))},
        "locked-7z-partner": mail(PARTNER, "locked.7z", locked_7z),
        "locked-7z-personal": mail(PERSONAL, "locked.7z", locked_7z),
        **{label: mail(PARTNER, name, data) for label, (name, data, _) in hostile.items()},
    }
    started = time.monotonic()
    records = scan_all(tmp_path, messages)
    assert time.monotonic() - started < 60

    nested_record = records["nested-personal"]
    assert nested_record["verdict"] == "reject"
    assert any(f["detector"] == "uk_nino" and f["location"] == "attachment:outer.tar.gz/outer.tar/inner.zip/staff.csv"
               for f in nested_record["findings"])
    assert any(f["detector"] == "uk_nino" and f["location"] == "attachment:staff.7z/staff.csv"
               for f in records["plain-7z-personal"]["findings"])
    for label in ("aes", "zipcrypto", "locked-7z"):
        assert records[f"{label}-partner"]["verdict"] == "deliver", records[f"{label}-partner"]
        personal = records[f"{label}-personal"]
        assert personal["verdict"] == "reject"
        assert "encrypted-to-personal" in personal["recipients"][0]["rules"]
    for label, (name, _, words) in hostile.items():
        record = records[label]
        assert record["verdict"] == "quarantine", record
        assert record["recipients"][0]["class"] == "external"
        assert "incomplete-inspection" in record["recipients"][0]["rules"]
        assert any(f["location"].startswith(f"attachment:{name}") and words in f.get("detail", "")
                   for f in record["findings"]), (label, record["findings"])
