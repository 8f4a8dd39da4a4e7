"""The one inspection path: bytes and envelope in, findings and a Decision out.

The relay (in worker processes) and `dlp-gateway scan` both call `Pipeline.inspect`,
so a dry run decides exactly what the relay would. No I/O here.
"""

from __future__ import annotations

import logging
import secrets
import time
from dataclasses import dataclass

from detectors import build_detectors
from detectors.base import Category, Finding, Signal
from gateway.config import Config
from gateway.decision import Decision
from gateway.message import NO_HISTORY, Envelope, Message, SenderHistory, parse
from gateway.policy import Policy

log = logging.getLogger(__name__)


def new_reference() -> str:
    """A short id people can quote to the service desk; sortable by time."""
    return f"{int(time.time()):x}{secrets.token_hex(5)}".upper()


@dataclass(frozen=True)
class Inspection:
    reference: str
    message_id: str
    size: int
    findings: tuple[Finding, ...]
    decision: Decision
    seconds: float
    shown_names: tuple[tuple[str, str], ...] = ()    # (address, display name) from To/Cc, for the history


def gave_up(policy: Policy, raw: bytes, envelope: Envelope, reference: str, why: str) -> Inspection:
    """The decision for a message whose inspection could not finish (it ran out of time or
    crashed the inspector): content that could not be inspected, so rule 10 holds it for
    anyone outside, instead of a temporary failure that would come back on every retry."""
    message = Message(envelope, raw, (), "", "", (), ())
    findings = [Finding(detector="inspection", category=Category.ATTACHMENT,
                        kind="message that could not be inspected", location="message",
                        signal=Signal.INCOMPLETE, detail=why)]
    return Inspection(reference, "", len(raw), tuple(findings), policy.decide(message, findings), 0.0)


class Pipeline:
    def __init__(self, config: Config):
        self.detectors = build_detectors(config)
        self.policy = Policy(config.organisation, config.policy)
        self.limits = config.attachments.limits

    def inspect(self, raw: bytes, envelope: Envelope, reference: str | None = None,
                history: SenderHistory = NO_HISTORY) -> Inspection:
        started = time.perf_counter()
        message = parse(raw, envelope, self.limits, history)
        findings: list[Finding] = []
        for detector in self.detectors:
            try:
                findings.extend(detector.detect(message))
            except Exception:
                # A detector that fails has not looked: err to the safe side.
                log.exception("detector %s failed", detector.name)
                findings.append(
                    Finding(
                        detector=detector.name,
                        category=Category.ATTACHMENT,
                        kind="content a detector could not inspect",
                        location="message",
                        signal=Signal.INCOMPLETE,
                    )
                )
        decision = self.policy.decide(message, findings)
        return Inspection(
            reference=reference or new_reference(),
            message_id=message.message_id,
            size=len(raw),
            findings=tuple(findings),
            decision=decision,
            seconds=time.perf_counter() - started,
            shown_names=tuple((addr.lower(), name) for name, addr in message.addresses("To", "Cc") if name),
        )
