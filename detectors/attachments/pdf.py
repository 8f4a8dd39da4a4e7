"""PDF attachments: the text of every page, plus the document's properties, form fields,
comments and attached files.

Properties come first, as `Title: ...` lines, so a marking in a title is on the first
lines a marking detector reads. Files attached to the PDF (its /EmbeddedFiles and file
attachment annotations) come back as members. Encryption is judged as a person meets it:
a PDF that asks for a password to open is encrypted; a PDF with only an owner password
("permissions") opens without one, so it is decrypted with the empty password and read.
A PDF encrypted to certificates (public-key security) is encrypted.

pypdf's own limits bound every decoded stream (75 MB by default); on top of them every
page's decoded content is charged to the message's byte budget and the time budget is
checked between pages, so a hostile PDF ends as "could not be inspected". Never writes.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from detectors.attachments.core import Budget, Extraction, LimitExceeded, Unreadable, extractor

# pypdf logs (even as errors) every flaw it works around in a damaged file, quoting the file's
# bytes; the outcome is reported in the attachment's status instead.
logging.getLogger("pypdf").setLevel(logging.CRITICAL)

if TYPE_CHECKING:
    from pypdf import PageObject, PdfReader

_INFO_FIELDS = (("/Title", "Title"), ("/Subject", "Subject"), ("/Author", "Author"), ("/Keywords", "Keywords"),
                ("/Creator", "Creator"))
# Acrobat accepts a file whose %%EOF marker is within its last 1024 bytes (PDF 1.7, annex H).
_EOF_WINDOW = 1024


@extractor("application/pdf", "application/x-pdf")
def read_pdf(data: bytes, budget: Budget) -> Extraction:
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        encrypted = _open(reader)
    except (LimitExceeded, Unreadable):
        raise
    except Exception as e:  # pypdf raises many kinds of error on a damaged file
        raise Unreadable(f"not a readable PDF ({_short(e)})") from None
    if encrypted:
        return Extraction(encrypted=encrypted)

    problems: list[str] = []
    lines = _properties(reader, problems)
    page_texts, unread_pages = _pages(reader, budget, problems)
    lines.extend(_form_fields(reader, problems))
    out_of_time = time.monotonic() > budget.deadline      # already reported by _pages
    members = [] if out_of_time else _attached_files(reader, budget, problems)
    if unread_pages:
        listed = ", ".join(map(str, unread_pages[:5])) + (" ..." if len(unread_pages) > 5 else "")
        problems.append(f"{_count(unread_pages, 'page')} could not be read (page {listed})")
    if b"%%EOF" not in data[-_EOF_WINDOW:]:
        problems.append("the PDF is cut short (no end-of-file marker): pages may be missing")
    text = "\n".join([*lines, *page_texts])
    return Extraction(text=text, members=members, incomplete="; ".join(problems))


def _open(reader: PdfReader) -> str:
    """Why the PDF cannot be opened without a password, or "" once it is open."""
    from pypdf import PasswordType

    if not reader.is_encrypted:
        return ""
    handler = reader.trailer["/Encrypt"].get_object().get("/Filter", "/Standard")
    if handler != "/Standard":
        return "PDF encrypted to its recipients' certificates"
    try:
        opened = reader.decrypt("")
    except NotImplementedError as e:
        raise Unreadable(f"PDF encrypted with a method the gateway cannot read ({_short(e)})") from None
    if opened == PasswordType.NOT_DECRYPTED:
        return "PDF needs a password to open"
    return ""  # only an owner password: it opens for anyone, so it is read


def _properties(reader: PdfReader, problems: list[str]) -> list[str]:
    """`Title: ...` lines from the document information and XMP metadata, without repeats."""
    lines: list[str] = []
    seen: set[str] = set()

    def add(label: str, value: object) -> None:
        text = " ".join(str(value).split())
        if text and (label, text) not in seen:
            seen.add((label, text))
            lines.append(f"{label}: {text}")

    try:
        info = reader.metadata
        for key, label in _INFO_FIELDS:
            if info and info.get(key) is not None:
                add(label, info[key])
    except Exception as e:
        problems.append(f"the document properties could not be read ({_short(e)})")
    try:
        xmp = reader.xmp_metadata
        if xmp is not None:
            for value in (xmp.dc_title or {}).values():
                add("Title", value)
            for value in (xmp.dc_description or {}).values():
                add("Subject", value)
            for value in xmp.dc_subject or []:
                add("Keywords", value)
            for value in xmp.dc_creator or []:
                add("Author", value)
    except Exception as e:
        problems.append(f"the XMP metadata could not be read ({_short(e)})")
    return lines


def _pages(reader: PdfReader, budget: Budget, problems: list[str]) -> tuple[list[str], list[int]]:
    """The text of each page; stops (reporting why) when the message's budget runs out."""
    texts: list[str] = []
    unread: list[int] = []
    try:
        pages = list(reader.pages)
    except Exception as e:
        raise Unreadable(f"the PDF's page tree is damaged ({_short(e)})") from None
    for number, page in enumerate(pages, start=1):
        try:
            budget.check_time()
            content = page.get_contents()
            data = content.get_data() if content is not None else b""
            budget.take_bytes(len(data))
            if _TEXT_OPERATOR.search(data):
                with _parsing_limits(budget):
                    text = page.extract_text(visitor_operand_before=_time_check(budget))
                budget.take_bytes(len(text))
                texts.append(text)
            texts.extend(_comments(page))
        except (LimitExceeded, _OutOfTime) as e:
            problems.append(f"{e.args[0]}: read {number - 1} of {len(pages)} pages")
            break
        except Exception:
            unread.append(number)
    return texts, unread


class _OutOfTime(BaseException):
    """Raised inside pypdf, which turns any Exception in a form into a warning and goes on."""


# Operators that show text (Tj TJ ' ") or draw a form that may (Do). A page without any is a
# picture or a drawing: pypdf would parse all of it to find nothing.
_TEXT_OPERATOR = re.compile(rb"(?:Tj|TJ|Do|['\"])")
# pypdf spends 5-25 microseconds on each token of a content stream; parsing one stream cannot
# be interrupted, so no stream may have more tokens than the time left allows.
_TOKENS_PER_SECOND = 40_000
_MIN_TOKENS, _MAX_TOKENS = 100_000, 2_000_000


def _parsing_limits(budget: Budget) -> contextlib.AbstractContextManager[Any]:
    try:
        from pypdf import apply_configuration, get_configuration
    except ImportError:  # pypdf before 6.18 has fixed limits
        return contextlib.nullcontext()
    left = max(budget.deadline - time.monotonic(), 0.0)
    wanted = {
        "stream_parsing_work_maximum_count": int(min(max(left * _TOKENS_PER_SECOND, _MIN_TOKENS), _MAX_TOKENS)),
        # A form drawn again and again is read every time: the time checks bound that, not a
        # count (past pypdf's count, the rest of the page would be skipped without a word).
        "xform_maximum_invocations_per_extraction": 1 << 30,
    }
    known = get_configuration()
    return apply_configuration(**{k: v for k, v in wanted.items() if hasattr(known, k)})


def _time_check(budget: Budget) -> Callable[..., None]:
    """A pypdf visitor, called before every operator of the page and its forms, that checks the time."""
    count = 0

    def visit(*_: object) -> None:
        nonlocal count
        count += 1
        if not count & 0xFF:
            try:
                budget.check_time()
            except LimitExceeded as e:
                raise _OutOfTime(str(e)) from None

    return visit


def _comments(page: PageObject) -> list[str]:
    """The text of comments (sticky notes, free text) on a page: a person reads them too."""
    out: list[str] = []
    for annot in page.get("/Annots") or []:
        annot = annot.get_object()
        contents = annot.get("/Contents")
        if contents and annot.get("/Subtype") != "/Widget":
            out.append(str(contents))
    return out


def _form_fields(reader: PdfReader, problems: list[str]) -> list[str]:
    """Filled-in form fields as `name: value` lines: their values are not in the page text."""
    try:
        fields = reader.get_form_text_fields()
    except Exception as e:
        problems.append(f"the form fields could not be read ({_short(e)})")
        return []
    return [f"{name}: {value}" for name, value in fields.items() if value]


def _attached_files(reader: PdfReader, budget: Budget, problems: list[str]) -> list[tuple[str, bytes]]:
    """Files attached to the document (/EmbeddedFiles) or to a page (file attachment annotations)."""
    members: list[tuple[str, bytes]] = []

    def add(name: str, content: bytes) -> None:
        budget.check_time()
        budget.take_bytes(len(content))
        members.append((_safe_name(name, len(members)), content))

    try:
        for name, contents in reader.attachments.items():
            for content in contents:
                add(name, content)
        for page in reader.pages:
            for annot in page.get("/Annots") or []:
                annot = annot.get_object()
                if annot.get("/Subtype") == "/FileAttachment":
                    spec = annot["/FS"].get_object()
                    stream = (spec["/EF"].get("/UF") or spec["/EF"]["/F"]).get_object()
                    add(str(spec.get("/UF") or spec.get("/F") or ""), stream.get_data())
    except LimitExceeded as e:
        problems.append(str(e))
    except Exception as e:
        problems.append(f"files attached to the PDF could not be read ({_short(e)})")
    return members


def _safe_name(name: str, index: int) -> str:
    name = name.replace("\\", "/").rsplit("/", 1)[-1].strip()
    return name or f"embedded-{index + 1}"


def _count(items: list[int], noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _short(e: Exception) -> str:
    return type(e).__name__  # pypdf's messages can quote the file's bytes; a reason never carries content
