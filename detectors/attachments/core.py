"""Reading attachments: every file a person could open becomes located text, and every
file ends as inspected, encrypted, or could not be inspected (with why).

The type comes from the bytes (libmagic), never from the name. Formats are read by
small extractor modules that register themselves here; archives and embedded files
come back as members and are read again, through the same extractors, located
`attachment:outer.zip/inner.xlsx`. One Budget per message bounds depth, members,
expanded bytes, compression ratio and time, so hostile input costs bounded work and
ends as "could not be inspected", never a crash. Pure: no I/O beyond the bytes given.
"""

from __future__ import annotations

import enum
import mimetypes
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import BinaryIO


class Status(str, enum.Enum):
    INSPECTED = "inspected"
    ENCRYPTED = "encrypted"
    INCOMPLETE = "could not be inspected"


@dataclass(frozen=True)
class Limits:
    """Bounds for one message's attachments (configuration: attachments.*)."""

    max_depth: int = 5                       # archives inside archives
    max_members: int = 1000                  # files inside all archives of the message
    max_expanded_bytes: int = 200 * 1024 * 1024  # bytes all members may expand to
    max_ratio: float = 150.0                 # expanded / compressed size of any one member
    max_seconds: float = 30.0                # time for all attachments of the message


class LimitExceeded(Exception):
    """A limit was hit: what is left cannot be inspected."""


class Unreadable(Exception):
    """The file is damaged or not what its type says."""


@dataclass
class Budget:
    """What the rest of this message's attachments may still cost."""

    limits: Limits
    expanded: int = 0
    members: int = 0
    deadline: float = 0.0
    name: str = ""                # the name of the file being read now (for an extractor that needs it)

    def __post_init__(self) -> None:
        if not self.deadline:
            self.deadline = time.monotonic() + self.limits.max_seconds

    def check_time(self) -> None:
        if time.monotonic() > self.deadline:
            raise LimitExceeded(f"reading the attachments took longer than {self.limits.max_seconds:g} s")

    def take_member(self) -> None:
        self.members += 1
        if self.members > self.limits.max_members:
            raise LimitExceeded(f"more than {self.limits.max_members} files inside archives")

    def take_bytes(self, n: int) -> None:
        self.expanded += n
        if self.expanded > self.limits.max_expanded_bytes:
            raise LimitExceeded(f"archives expand to more than {self.limits.max_expanded_bytes} bytes")

    def read(self, stream: BinaryIO, compressed_size: int, what: str, chunk: int = 1 << 20) -> bytes:
        """Read a decompressing stream to its end, within the byte, ratio and time limits."""
        allowed_by_ratio = max(int(compressed_size * self.limits.max_ratio), 1 << 20)
        parts: list[bytes] = []
        total = 0
        while True:
            self.check_time()
            block = stream.read(chunk)
            if not block:
                return b"".join(parts)
            total += len(block)
            if total > allowed_by_ratio:
                raise LimitExceeded(f"{what} expands more than {self.limits.max_ratio:g} times (a compression bomb?)")
            self.take_bytes(len(block))
            parts.append(block)


@dataclass
class Extraction:
    """What one extractor read from one file."""

    text: str = ""                                   # what a person sees, properties included
    members: list[tuple[str, bytes]] = field(default_factory=list)  # files inside, read again
    encrypted: str = ""                              # why (part of) it is encrypted; "" = it is not
    incomplete: str = ""                             # why part of it could not be read


Extractor = Callable[[bytes, Budget], Extraction]
_REGISTRY: list[tuple[frozenset[str], Extractor]] = []


def extractor(*mime_types: str) -> Callable[[Extractor], Extractor]:
    """Register an extractor for content types as libmagic names them."""

    def register(fn: Extractor) -> Extractor:
        _REGISTRY.append((frozenset(mime_types), fn))
        return fn

    return register


_BY_PREFIX: list[tuple[str, Extractor]] = []


def extractor_for_prefix(prefix: str) -> Callable[[Extractor], Extractor]:
    """Register a fallback for every content type starting with `prefix` (e.g. "text/")."""

    def register(fn: Extractor) -> Extractor:
        _BY_PREFIX.append((prefix, fn))
        return fn

    return register


def extractor_for(mime_type: str) -> Extractor | None:
    for types, fn in _REGISTRY:
        if mime_type in types:
            return fn
    for prefix, fn in _BY_PREFIX:
        if mime_type.startswith(prefix):
            return fn
    return None


@dataclass(frozen=True)
class AttachmentReport:
    """The outcome for one attachment (or a file inside one)."""

    location: str                 # attachment:NAME or attachment:outer.zip/inner.xlsx
    detected_type: str
    declared_type: str            # Content-Type as sent ("" for a file inside an archive)
    status: Status
    reason: str = ""              # why encrypted or not inspected, in words
    disguised: bool = False       # the name or declared type hides what the file really is
    depth: int = 0                # 0 for an attachment of the message, 1 for a file inside it ...


@dataclass(frozen=True)
class ReadFile:
    """A file to read: a top-level attachment or a member of one."""

    name: str
    data: bytes
    declared_type: str = ""


# Types whose declared name must agree with the bytes: documents, archives, executables.
# Plain text, images and unknown bytes are too loosely labelled in real mail to judge.
_JUDGED = ("application/",)
_EQUIVALENT = {
    "application/gzip": {"application/x-gzip", "application/x-gtar", "application/x-tar"},
    "application/zip": {"application/x-zip-compressed", "application/vnd.openxmlformats-officedocument",
                        "application/vnd.oasis.opendocument", "application/java-archive", "application/epub+zip"},
    "application/x-ole-storage": {"application/msword", "application/vnd.ms-excel", "application/vnd.ms-powerpoint",
                                  "application/vnd.ms-outlook", "application/x-msi", "application/CDFV2"},
    "application/CDFV2": {"application/msword", "application/vnd.ms-excel", "application/vnd.ms-powerpoint",
                          "application/vnd.ms-outlook", "application/x-ole-storage", "application/x-msi"},
}


def _family(mime: str) -> str:
    for prefix in ("application/vnd.openxmlformats-officedocument", "application/vnd.oasis.opendocument"):
        if mime.startswith(prefix):
            return prefix
    return mime


_COMPRESSORS = {"gzip": "application/gzip", "bzip2": "application/x-bzip2", "xz": "application/x-xz",
                "compress": "application/x-compress", "br": "application/x-brotli"}


def is_disguised(name: str, declared_type: str, detected_type: str) -> bool:
    """True when a document or archive is named or declared as something else (an .xlsx sent as .txt)."""
    if not detected_type.startswith(_JUDGED) or detected_type in ("application/octet-stream", "application/x-empty"):
        return False
    guessed, encoding = mimetypes.guess_type(name)
    if encoding:  # report.csv.gz, backup.tar.xz: the name claims the compressor's format
        guessed = _COMPRESSORS.get(encoding, guessed)
    claimed = {t for t in (guessed, declared_type) if t and t != "application/octet-stream"}
    if not claimed:
        return False
    detected = _family(detected_type)
    for c in claimed:
        c = _family(c)
        if c == detected or c in _EQUIVALENT.get(detected, ()) or detected in _EQUIVALENT.get(c, ()):
            continue
        return True
    return False


def read_attachments(
    files: Iterable[ReadFile], limits: Limits, detect_type: Callable[[bytes], str],
) -> tuple[list[tuple[str, str]], list[AttachmentReport]]:
    """(location, text) for everything readable, and one report per file, for a message's attachments."""
    budget = Budget(limits)
    texts: list[tuple[str, str]] = []
    reports: list[AttachmentReport] = []
    for f in files:
        _read(f, f"attachment:{f.name}", 0, budget, detect_type, texts, reports)
    return texts, reports


def _read(
    f: ReadFile, location: str, depth: int, budget: Budget, detect_type: Callable[[bytes], str],
    texts: list[tuple[str, str]], reports: list[AttachmentReport],
) -> None:
    detected = detect_type(f.data)
    if detected in ("application/zip", "application/octet-stream") and f.data.startswith(b"PK\x03\x04"):
        # libmagic judges Office and OpenDocument zips by the order of their first entries;
        # the package's own content-type list says what it is.
        from detectors.attachments.ooxml import sniff_office

        detected = sniff_office(f.data) or detected
    if detected.startswith("text/") and (f.declared_type == "message/rfc822" or f.name.lower().endswith(".eml")):
        detected = "message/rfc822"  # libmagic calls a mail without From:/Received: lines plain text; it is a mail
    disguised = is_disguised(f.name, f.declared_type, detected)

    def report(status: Status, reason: str = "") -> None:
        reports.append(AttachmentReport(location, detected, f.declared_type, status, reason, disguised, depth))

    if depth > budget.limits.max_depth:
        report(Status.INCOMPLETE, f"nested more than {budget.limits.max_depth} archives deep")
        return
    fn = extractor_for(detected)
    if fn is None:
        if detected.startswith(("image/", "audio/", "video/", "font/")) or detected in _OPAQUE_BUT_HARMLESS:
            report(Status.INSPECTED)   # nothing a detector can read; not a container that could hide text
        else:
            report(Status.INCOMPLETE, f"the gateway cannot read files of type {detected}")
        return
    try:
        budget.check_time()
        budget.name = f.name
        result = fn(f.data, budget)
    except LimitExceeded as e:
        report(Status.INCOMPLETE, str(e))
        return
    except Unreadable as e:
        report(Status.INCOMPLETE, f"damaged or unreadable: {e}")
        return
    except Exception as e:  # a parser's own failure on hostile input
        report(Status.INCOMPLETE, f"damaged or unreadable ({type(e).__name__})")
        return
    if result.text.strip():
        texts.append((location, result.text))
    # Both can hold (an encrypted entry beside a damaged one): both are reported, so the
    # damaged part still holds the message while the encrypted one is judged on its own.
    if result.encrypted:
        report(Status.ENCRYPTED, result.encrypted)
    if result.incomplete:
        report(Status.INCOMPLETE, result.incomplete)
    if not result.encrypted and not result.incomplete:
        report(Status.INSPECTED)
    for name, data in result.members:
        try:
            budget.take_member()
            budget.check_time()
        except LimitExceeded as e:
            reports.append(AttachmentReport(f"{location}/{name}", "", "", Status.INCOMPLETE, str(e), depth=depth + 1))
            return
        _read(ReadFile(name, data), f"{location}/{name}", depth + 1, budget, detect_type, texts, reports)


# Types with no readable text that cannot carry other files.
_OPAQUE_BUT_HARMLESS = {"application/x-empty", "application/pgp-keys", "application/pgp-signature",
                        "application/pkcs7-signature", "application/x-pkcs7-signature", "text/calendar"}
