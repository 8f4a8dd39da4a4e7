"""Archives: ZIP, TAR, 7z and single compressed files (gzip, bzip2, xz, lzma), read in memory.

Each file inside comes back as a member, read again by core through the same extractors
(so a CSV in a ZIP in a .tar.gz is read like any CSV), and the names inside an archive
are text, since a person opening it sees them. Encrypted entries are recognised from
their headers and never decrypted; the others are still read. Every byte decompressed
goes through the message's Budget, checked against declared sizes before anything is
decompressed and against the ratio as it comes out, so a bomb stops after a few MB.
Never writes to disk: names inside an archive are only labels for locations.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import re
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from typing import Any, BinaryIO

from detectors.attachments.core import Budget, Extraction, LimitExceeded, Unreadable, extractor, extractor_for

# An archive may list at most this many entries (folders included) per allowed member:
# parsing the list costs memory before any member is counted.
_ENTRIES_PER_MEMBER = 4
_UNNAMED = "(decompressed)"      # the content of a .gz/.bz2/.xz whose original name is unknown
_NAME_LIMIT = 255
_BROKEN = (EOFError, OSError, ValueError, zlib.error, lzma.LZMAError, struct.error, NotImplementedError,
           UnicodeDecodeError, RuntimeError)


# ------------------------------------------------------------------ shared


def clean_name(raw: str, fallback: str) -> str:
    """A member's path as a readable label: no "..", no leading "/" or drive, no control characters."""
    parts = [p for p in re.split(r"[\\/]+", raw) if p not in ("", ".", "..")]
    if parts and re.fullmatch(r"[A-Za-z]:", parts[0]):
        parts = parts[1:]
    name = "".join(ch for ch in "/".join(parts) if ch.isprintable())[:_NAME_LIMIT].strip()
    return name or fallback


def _expect_members(budget: Budget, count: int, where: str) -> None:
    """Refuse before reading when the members returned would pass the limit core counts them against."""
    if budget.members + count > budget.limits.max_members:
        raise LimitExceeded(f"more than {budget.limits.max_members} files inside archives ({where})")


def _expect_entries(budget: Budget, count: int, where: str) -> None:
    allowed = _ENTRIES_PER_MEMBER * budget.limits.max_members
    if count > allowed:
        raise LimitExceeded(f"{where} lists more than {allowed} files and folders "
                            f"({_ENTRIES_PER_MEMBER} times max_members)")


def _expect_bytes(budget: Budget, declared: int, where: str) -> None:
    """Refuse before decompressing when the declared sizes alone would pass the expanded-bytes limit."""
    if budget.expanded + declared > budget.limits.max_expanded_bytes:
        raise LimitExceeded(f"archives expand to more than {budget.limits.max_expanded_bytes} bytes "
                            f"({where} declares {declared})")


class _RatioGuard:
    """A decompressing stream that fails as soon as its output outgrows the input consumed so far
    by the ratio limit, so a bomb stops after a few MB instead of at ratio × its whole size."""

    def __init__(self, stream: BinaryIO, consumed: Callable[[], int], budget: Budget, what: str):
        self._stream, self._consumed, self._budget, self._what = stream, consumed, budget, what
        self._out = 0

    def read(self, n: int = -1) -> bytes:
        block = self._stream.read(n)
        self._out += len(block)
        ratio = self._budget.limits.max_ratio
        if self._out > max(self._consumed() * ratio, 1 << 20):  # the floor core's Budget.read allows too
            raise LimitExceeded(f"{self._what} expands more than {ratio:g} times (a compression bomb?)")
        return block


def _read_member(budget: Budget, stream: BinaryIO, compressed_size: int, what: str,
                 consumed: Callable[[], int] | None = None) -> bytes:
    if consumed is not None:
        stream = _RatioGuard(stream, consumed, budget, what)  # type: ignore[assignment]
    return budget.read(stream, compressed_size, what)


def _listing(names: list[str], comment: str = "") -> str:
    return "\n".join([*names, comment] if comment.strip() else names)


def _some(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _of(n: int, m: int, what: str) -> str:
    return f"{n} of {m} {'file' if m == 1 else 'files'} in the {what} {'is' if n == 1 else 'are'} encrypted"


# ------------------------------------------------------------------ ZIP

_AES_EXTRA = 0x9901   # WinZip AE-1/AE-2
_AES_METHOD = 99


def _zip_entry_count(data: bytes) -> int | None:
    """Entries the ZIP's end record declares, read before zipfile builds an object per entry."""
    end = data.rfind(b"PK\x05\x06", max(0, len(data) - 65557))
    if end < 0 or end + 22 > len(data):
        return None
    (count,) = struct.unpack_from("<H", data, end + 10)
    if count != 0xFFFF:
        return count
    locator = end - 20  # ZIP64: the count is in the ZIP64 end record the locator points to
    if locator >= 0 and data[locator:locator + 4] == b"PK\x06\x07":
        (offset,) = struct.unpack_from("<Q", data, locator + 8)
        if data[offset:offset + 4] == b"PK\x06\x06" and offset + 40 <= len(data):
            return int(struct.unpack_from("<Q", data, offset + 32)[0])
    return None  # left to zipfile, and counted once it has read the list


def _has_extra(extra: bytes, header_id: int) -> bool:
    i = 0
    while i + 4 <= len(extra):
        hid, size = struct.unpack_from("<HH", extra, i)
        if hid == header_id:
            return True
        i += 4 + size
    return False


def is_encrypted_zip_entry(info: zipfile.ZipInfo) -> bool:
    """ZipCrypto (flag bit 0) or WinZip AES (method 99, extra field 0x9901); never decrypted."""
    return bool(info.flag_bits & 0x1) or info.compress_type == _AES_METHOD or _has_extra(info.extra, _AES_EXTRA)


def _office_type(data: bytes) -> str:
    """The specific type of a document libmagic calls a plain ZIP (an .xlsx or .docx), if the
    office extractor recognises it."""
    try:
        from detectors.attachments import ooxml
    except ImportError:
        return ""
    sniff = getattr(ooxml, "sniff_office", None)
    return (sniff(data) or "") if callable(sniff) else ""


@extractor("application/zip", "application/x-zip-compressed", "application/epub+zip")
def read_zip(data: bytes, budget: Budget) -> Extraction:
    declared_entries = _zip_entry_count(data)
    if declared_entries is not None:  # before anything parses the list of entries, the office sniffer included
        _expect_entries(budget, declared_entries, "the ZIP")
    office = _office_type(data)
    if office:
        fn = extractor_for(office)
        if fn is not None and fn is not read_zip:
            return fn(data, budget)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, *_BROKEN) as e:
        raise Unreadable(f"not a readable ZIP ({e})") from e
    with archive:
        infos = archive.infolist()
        _expect_entries(budget, len(infos), "the ZIP")
        files = [i for i in infos if not i.is_dir()]
        locked = [i for i in files if is_encrypted_zip_entry(i)]
        readable = [i for i in files if not is_encrypted_zip_entry(i)]
        _expect_members(budget, len(readable), "the ZIP")
        _expect_bytes(budget, sum(i.file_size for i in readable), "the ZIP")
        names = [clean_name(i.filename, f"file-{n}") for n, i in enumerate(files, 1)]
        name_of = {id(i): name for i, name in zip(files, names)}
        members: list[tuple[str, bytes]] = []
        damaged: list[str] = []
        for info in readable:
            budget.check_time()
            name = name_of[id(info)]
            try:
                with archive.open(info) as stream:
                    consumed = _zip_consumed(stream, info)
                    members.append((name, _read_member(budget, stream, info.compress_size, name, consumed)))
            except NotImplementedError:
                damaged.append(f"{name} (compression method {info.compress_type})")
            except (zipfile.BadZipFile, *_BROKEN):
                damaged.append(f"{name} (damaged)")
        comment = archive.comment.decode("utf-8", "replace") if archive.comment else ""
    return Extraction(
        text=_listing(names, comment),
        members=members,
        encrypted=_of(len(locked), len(files), "ZIP") if locked else "",
        incomplete=f"{len(damaged)} of {len(files)} files in the ZIP could not be read: {_some(damaged)}"
        if damaged else "",
    )


def _zip_consumed(stream: BinaryIO, info: zipfile.ZipInfo) -> Callable[[], int] | None:
    """Compressed bytes of the member decompressed so far: ZipExtFile reads ahead up to 1 MB and keeps
    what its decompressor has not used. Without these (private) fields core's whole-member ratio still holds."""
    if not hasattr(stream, "_compress_left"):
        return None

    def consumed() -> int:
        pending = getattr(getattr(stream, "_decompressor", None), "unconsumed_tail", b"")
        return info.compress_size - getattr(stream, "_compress_left") - len(pending)

    return consumed


# ------------------------------------------------------------------ TAR


@extractor("application/x-tar", "application/x-gtar", "application/x-ustar")
def read_tar(data: bytes, budget: Budget) -> Extraction:
    # Streaming ("r|"): one pass, nothing cached but the headers. Not "r|*": a compressed tar
    # reaches here through the gzip/bzip2/xz extractors, whose decompression the budget bounds.
    members: list[tuple[str, bytes]] = []
    names: list[str] = []
    entries = 0
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r|") as archive:
            for entry in archive:
                budget.check_time()
                entries += 1
                _expect_entries(budget, entries, "the TAR")
                if not entry.isreg():
                    continue
                name = clean_name(entry.name, f"file-{entries}")
                names.append(name)
                _expect_members(budget, len(members) + 1, "the TAR")
                _expect_bytes(budget, entry.size, name)
                stream = archive.extractfile(entry)
                if stream is not None:
                    members.append((name, budget.read(stream, entry.size, name)))
    except tarfile.TarError as e:
        raise Unreadable(f"not a readable TAR ({e})") from e
    except _BROKEN as e:
        raise Unreadable(f"not a readable TAR ({type(e).__name__}: {e})") from e
    return Extraction(text=_listing(names), members=members)


# ------------------------------------------------------------------ one compressed file


def _gzip_name(data: bytes) -> str:
    """The original file name a gzip header may carry (FNAME), as `gzip report.csv` writes it."""
    if len(data) < 10 or data[:2] != b"\x1f\x8b" or not data[3] & 0x08:
        return ""
    i = 10
    if data[3] & 0x04:  # FEXTRA
        if i + 2 > len(data):
            return ""
        i += 2 + struct.unpack_from("<H", data, i)[0]
    end = data.find(b"\x00", i, i + 1024)
    if end < 0:
        return ""
    return clean_name(data[i:end].decode("latin-1").rsplit("/", 1)[-1].rsplit("\\", 1)[-1], "")


def _decompress_one(data: bytes, budget: Budget, opener: Callable[[BinaryIO], BinaryIO], kind: str,
                    name: str) -> Extraction:
    _expect_members(budget, 1, f"the {kind} file")
    source = io.BytesIO(data)
    label = name if name != _UNNAMED else f"the {kind} file"
    try:
        with opener(source) as stream:
            content = _read_member(budget, stream, len(data), label, source.tell)
    except EOFError as e:
        raise Unreadable(f"the {kind} data ends early (truncated?)") from e
    except (gzip.BadGzipFile, *_BROKEN) as e:
        raise Unreadable(f"not readable {kind} data ({e})") from e
    return Extraction(members=[(name, content)])


@extractor("application/gzip", "application/x-gzip")
def read_gzip(data: bytes, budget: Budget) -> Extraction:
    return _decompress_one(data, budget, lambda f: gzip.GzipFile(fileobj=f, mode="rb"), "gzip",
                           _gzip_name(data) or _without_suffix(budget.name, (".gz", ".tgz")))


@extractor("application/x-bzip2")
def read_bzip2(data: bytes, budget: Budget) -> Extraction:
    return _decompress_one(data, budget, lambda f: bz2.BZ2File(f, mode="rb"), "bzip2",
                           _without_suffix(budget.name, (".bz2", ".tbz2", ".tbz")))


@extractor("application/x-xz", "application/x-lzma")
def read_xz(data: bytes, budget: Budget) -> Extraction:
    return _decompress_one(data, budget, lambda f: lzma.LZMAFile(f, mode="rb"), "xz",
                           _without_suffix(budget.name, (".xz", ".txz", ".lzma")))


_SUFFIXES = {".gz": "", ".tgz": ".tar", ".bz2": "", ".tbz2": ".tar", ".tbz": ".tar", ".xz": "", ".txz": ".tar",
             ".lzma": ""}


def _without_suffix(name: str, suffixes: tuple[str, ...]) -> str:
    """report.csv.gz -> report.csv, backup.tgz -> backup.tar; a name without the suffix: unnamed."""
    base = name.rsplit("/", 1)[-1]
    for suffix in suffixes:
        if base.lower().endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)] + _SUFFIXES[suffix]
    return _UNNAMED


# ------------------------------------------------------------------ 7z


def _check_7z_header(data: bytes, budget: Budget) -> None:
    """Refuse a 7z whose compressed file list would decode to more than the ratio or the byte
    budget allows, before py7zr decodes it (py7zr's own cap is 256 MB)."""
    try:
        from py7zr.archiveinfo import HeaderStreamsInfo

        next_offset, next_size = struct.unpack_from("<QQ", data, 12)
        start = 32 + next_offset
        if start >= len(data) or data[start] != 0x17:  # not an encoded (compressed) header
            return
        streams = HeaderStreamsInfo.retrieve(io.BytesIO(data[start + 1:start + next_size]))
        decoded = sum(folder.get_unpack_size() for folder in streams.unpackinfo.folders)
    except Exception:
        return  # not parseable here: py7zr refuses it when opening
    ratio = budget.limits.max_ratio
    if decoded > max(len(data) * ratio, 1 << 20):
        raise LimitExceeded(f"the 7z file list expands more than {ratio:g} times (a compression bomb?)")
    _expect_bytes(budget, decoded, "the 7z file list")


def _7z_locked(entry: Any) -> bool:
    """True for a 7z entry whose folder is encrypted (a 7zAES coder)."""
    from py7zr.compressor import SupportedMethods

    return entry.folder is not None and bool(SupportedMethods.needs_password(entry.folder.coders))


def _7z_writer(budget: Budget) -> Any:
    """A py7zr writer factory that keeps members in memory, every byte counted by the budget."""
    from py7zr.io import Py7zIO, WriterFactory

    class Writer(Py7zIO):
        def __init__(self, filename: str) -> None:
            self.filename = filename
            self.parts: list[bytes] = []
            self._size = 0

        def write(self, s: bytes | bytearray) -> int:
            budget.check_time()
            budget.take_bytes(len(s))
            self.parts.append(bytes(s))
            self._size += len(s)
            return len(s)

        def read(self, size: int | None = None) -> bytes:
            return b""

        def seek(self, offset: int, whence: int = 0) -> int:
            return 0

        def flush(self) -> None:
            pass

        def size(self) -> int:
            return self._size

    class Factory(WriterFactory):
        def __init__(self) -> None:
            self.products: list[Writer] = []

        def create(self, filename: str) -> Py7zIO:
            product = Writer(filename)
            self.products.append(product)
            return product

    return Factory()


@extractor("application/x-7z-compressed")
def read_7z(data: bytes, budget: Budget) -> Extraction:
    import py7zr
    from py7zr.exceptions import ArchiveError, PasswordRequired

    _check_7z_header(data, budget)
    try:
        archive = py7zr.SevenZipFile(io.BytesIO(data), mode="r")
    except PasswordRequired:
        return Extraction(encrypted="the 7z archive is encrypted, its list of files included")
    except (ArchiveError, TypeError, KeyError, IndexError, AttributeError, *_BROKEN) as e:
        raise Unreadable(f"not a readable 7z archive ({e or type(e).__name__})") from e
    with archive:
        entries = list(archive.files)
        _expect_entries(budget, len(entries), "the 7z archive")
        files = [f for f in entries if f.is_file]
        names = [clean_name(f.filename, f"file-{n}") for n, f in enumerate(files, 1)]
        readable = [f for f in files if not _7z_locked(f)]
        encrypted = _of(len(files) - len(readable), len(files), "7z archive") if len(readable) < len(files) else ""
        _expect_members(budget, len(readable), "the 7z archive")
        # Everything in a folder that is read is decompressed (solid blocks), so count all of it.
        declared = sum(f.uncompressed or 0 for f in entries if not f.emptystream and not _7z_locked(f))
        ratio = budget.limits.max_ratio
        if declared > max(len(data) * ratio, 1 << 20):
            raise LimitExceeded(f"the 7z archive expands more than {ratio:g} times (a compression bomb?)")
        _expect_bytes(budget, declared, "the 7z archive")
        if not readable:
            return Extraction(text=_listing(names), encrypted=encrypted)
        factory = _7z_writer(budget)
        try:
            archive.extract(targets=[f.filename for f in readable], factory=factory)
        except (ArchiveError, PasswordRequired, TypeError, KeyError, IndexError, AttributeError, *_BROKEN) as e:
            raise Unreadable(f"a file in the 7z archive is damaged ({e or type(e).__name__})") from e
    members = [(clean_name(p.filename, f"file-{n}"), b"".join(p.parts)) for n, p in enumerate(factory.products, 1)]
    return Extraction(text=_listing(names), members=members, encrypted=encrypted)
