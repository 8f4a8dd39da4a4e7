"""Attachment reading: extractors by content type, registered on import (see core.py)."""

from detectors.attachments import email_message, text  # noqa: F401  (registration)
from detectors.attachments.core import AttachmentReport, Limits, ReadFile, Status, read_attachments

__all__ = ["AttachmentReport", "Limits", "ReadFile", "Status", "read_attachments"]
