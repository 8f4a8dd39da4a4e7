"""What a delivered copy looks like: the monitoring disclaimer where the decision calls
for it, then the DKIM signature over the result.

CPU work (MIME surgery, RSA), so it runs in the inspection workers beside the
pipeline, once per message. It never refuses a message: what cannot be changed or
signed goes on as it came, and the reason is logged.
"""

from __future__ import annotations

import logging

from gateway.actions import without_dlp_headers
from gateway.config import Config
from gateway.disclaimer import NotAdded, load_disclaimer
from gateway.dkim import DkimSigner
from gateway.pipeline import Inspection

log = logging.getLogger(__name__)


class OutgoingPreparer:
    def __init__(self, config: Config):
        settings = config.disclaimer
        self.disclaimer = (
            load_disclaimer(settings.text_template, settings.html_template, config.organisation.name)
            if settings.enabled else None
        )
        self.signer = DkimSigner.from_table(
            {domain: (d.selector, d.key_file) for domain, d in config.dkim.domains.items()}
        )

    def prepare(self, raw: bytes, inspection: Inspection) -> bytes:
        """The bytes every delivered recipient of this message gets (before trace headers)."""
        out = without_dlp_headers(raw)  # a client's X-DLP-* headers go before signing, so DKIM holds
        if inspection.decision.disclaimer and self.disclaimer is not None:
            result = self.disclaimer.apply(out)
            if result.added:
                out = result.raw
            elif result.reason is not NotAdded.ALREADY_PRESENT:
                log.info("%s: disclaimer not added: %s", inspection.reference, result.reason)
        if self.signer:
            signed = self.signer.sign(out)
            if signed.domain is None and signed.reason and not signed.reason.startswith("no DKIM key"):
                log.warning("%s: not DKIM-signed: %s", inspection.reference, signed.reason)
            out = signed.raw
        return out
