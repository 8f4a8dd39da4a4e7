"""Attached emails (message/rfc822, .eml): read through the same message model, their own
attachments coming back as members so the one budget and depth limit cover them too."""

from __future__ import annotations

from detectors.attachments.core import Budget, Extraction, extractor


@extractor("message/rfc822", "message/news")
def read_email(data: bytes, budget: Budget) -> Extraction:
    from gateway.message import model_parts

    parts = model_parts(data)
    text = "\n\n".join(t for _, t in parts.texts)
    encrypted = "; ".join(r for _, r in parts.encrypted)
    return Extraction(text=text, members=[(f.name, f.data) for f in parts.files], encrypted=encrypted,
                      incomplete="; ".join(d.reason for d in parts.defects))
