"""The audit trail: one JSON line per decision. Never message content, never matched values."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from gateway.actions.delivery import RecipientResult
from gateway.message import Envelope
from gateway.pipeline import Inspection


def decision_record(
    inspection: Inspection, envelope: Envelope, results: dict[str, RecipientResult]
) -> dict[str, object]:
    decision = inspection.decision
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "reference": inspection.reference,
        "message_id": inspection.message_id,
        "sender": envelope.mail_from,
        "client": envelope.client_address,
        "protocol": envelope.protocol,
        "size": inspection.size,
        "verdict": decision.verdict.value,
        "recipients": [
            {**r.to_json(), "result": results[r.address].reply if r.address in results else None}
            for r in decision.recipients
        ],
        "rules": list(decision.rules),
        "findings": [
            {"detector": f.detector, "category": f.category.value, "kind": f.kind, "location": f.location,
             "count": f.count}
            for f in inspection.findings
        ],
        "disclaimer": decision.disclaimer,
        "scan_seconds": round(inspection.seconds, 4),
    }


class AuditLog:
    def __init__(self, path: str):
        self._lock = threading.Lock()
        self._stream: TextIO
        if path == "-":
            self._stream = sys.stdout
        else:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._stream = open(path, "a", encoding="utf-8", buffering=1)

    def write(self, record: dict[str, object]) -> None:
        line = json.dumps(record, ensure_ascii=False, separators=(",", ":"))
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def close(self) -> None:
        if self._stream is not sys.stdout:
            self._stream.close()
