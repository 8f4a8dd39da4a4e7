"""Attachment reading: extractors by content type, registered on import (see core.py)."""

from detectors.attachments import (  # noqa: F401  (each module registers its extractors)
    archives,
    crypto,
    email_message,
    odf,
    ole,
    outlook_msg,
    ooxml,
    pdf,
    rtf,
    text,
)
from detectors.attachments.core import AttachmentReport, Limits, ReadFile, Status, read_attachments

__all__ = ["AttachmentReport", "Limits", "ReadFile", "Status", "read_attachments"]
