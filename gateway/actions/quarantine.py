"""The quarantine: held message bytes on disk, an index in the database, an action log.

`hold` returns only once the bytes are fsync'd and the index row is committed, so
the server may then acknowledge the recipient. Release delivers through the route
the original decision required; every release, delete and view is recorded with who
did it, when and why. The index holds kinds, counts and locations, never content.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

from gateway.actions.delivery import RecipientResult, Route, write_durably
from gateway.decision import RecipientDecision
from gateway.message import Envelope
from gateway.pipeline import Inspection
from gateway.store import engine_for, quarantine_events, quarantine_items, quarantine_recipients

HELD = "held"
RELEASED = "released"
DELETED = "deleted"


class QuarantineError(Exception):
    """An operation on a held message cannot be done; the message says why."""


@dataclass(frozen=True)
class HeldRecipient:
    address: str
    rclass: str
    rules: tuple[str, ...]
    release_route: str
    status: str


@dataclass(frozen=True)
class HeldMessage:
    id: str
    created_at: float
    sender: str
    message_id: str
    size: int
    mail_options: tuple[str, ...]
    rules: tuple[str, ...]
    findings: tuple[dict[str, object], ...]
    status: str
    storage_key: str
    recipients: tuple[HeldRecipient, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created_at)),
            "sender": self.sender,
            "message_id": self.message_id,
            "size": self.size,
            "status": self.status,
            "rules": list(self.rules),
            "recipients": [
                {"address": r.address, "class": r.rclass, "rules": list(r.rules),
                 "release_route": r.release_route, "status": r.status}
                for r in self.recipients
            ],
            "findings": list(self.findings),
        }


@dataclass(frozen=True)
class Event:
    item_id: str
    at: float
    action: str
    actor: str
    reason: str
    detail: str


class Quarantine:
    def __init__(self, database_url: str, directory: str):
        self.engine = engine_for(database_url)
        self.directory = Path(directory)

    def hold(
        self, inspection: Inspection, raw: bytes, envelope: Envelope, recipients: list[RecipientDecision]
    ) -> str:
        """Store durably; returns the reference. Raises OSError or a database error on failure."""
        self.directory.mkdir(parents=True, exist_ok=True)
        key = f"{inspection.reference}.eml"
        write_durably(self.directory, key, raw)
        now = time.time()
        rules = sorted({name for r in recipients for name in r.rules})
        with self.engine.begin() as conn:
            conn.execute(
                quarantine_items.insert().values(
                    id=inspection.reference,
                    created_at=now,
                    sender=envelope.mail_from,
                    message_id=inspection.message_id,
                    size=len(raw),
                    mail_options=json.dumps(list(envelope.mail_options)),
                    rules=json.dumps(rules),
                    findings=json.dumps([f.to_json() for f in inspection.findings]),
                    status=HELD,
                    storage_key=key,
                )
            )
            conn.execute(
                quarantine_recipients.insert(),
                [
                    {"item_id": inspection.reference, "address": r.address, "rclass": r.rclass.value,
                     "rules": json.dumps(list(r.rules)), "release_route": r.release_route, "status": HELD}
                    for r in recipients
                ],
            )
            conn.execute(
                quarantine_events.insert().values(
                    item_id=inspection.reference, at=now, action=HELD, actor="gateway",
                    reason="policy: " + ", ".join(rules), detail="",
                )
            )
        return inspection.reference

    def list(self, status: str | None = HELD, limit: int = 100) -> list[HeldMessage]:
        query = sa.select(quarantine_items.c.id).order_by(quarantine_items.c.created_at.desc()).limit(limit)
        if status:
            query = query.where(quarantine_items.c.status == status)
        with self.engine.connect() as conn:
            ids = [row.id for row in conn.execute(query)]
        return [m for m in (self.get(i) for i in ids) if m is not None]

    def get(self, item_id: str) -> HeldMessage | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(quarantine_items).where(quarantine_items.c.id == item_id)).first()
            if row is None:
                return None
            rcpts = conn.execute(
                sa.select(quarantine_recipients)
                .where(quarantine_recipients.c.item_id == item_id)
                .order_by(quarantine_recipients.c.address)
            ).all()
        return HeldMessage(
            id=row.id,
            created_at=row.created_at,
            sender=row.sender,
            message_id=row.message_id,
            size=row.size,
            mail_options=tuple(json.loads(row.mail_options)),
            rules=tuple(json.loads(row.rules)),
            findings=tuple(json.loads(row.findings)),
            status=row.status,
            storage_key=row.storage_key,
            recipients=tuple(
                HeldRecipient(r.address, r.rclass, tuple(json.loads(r.rules)), r.release_route, r.status)
                for r in rcpts
            ),
        )

    def events(self, item_id: str | None = None) -> list[Event]:
        query = sa.select(quarantine_events).order_by(quarantine_events.c.id)
        if item_id:
            query = query.where(quarantine_events.c.item_id == item_id)
        with self.engine.connect() as conn:
            return [Event(r.item_id, r.at, r.action, r.actor, r.reason, r.detail) for r in conn.execute(query)]

    def require(self, item_id: str) -> HeldMessage:
        held = self.get(item_id)
        if held is None:
            raise QuarantineError(f"no held message with reference {item_id}")
        return held

    def read(self, item_id: str, actor: str, reason: str) -> bytes:
        """The held bytes; reading them is recorded with the reason given."""
        held = self.require(item_id)
        if held.status == DELETED:
            raise QuarantineError(f"{item_id} was deleted; its content is gone")
        data = (self.directory / held.storage_key).read_bytes()
        self._record(item_id, "viewed", actor, reason)
        return data

    def _record(self, item_id: str, action: str, actor: str, reason: str, detail: str = "") -> None:
        with self.engine.begin() as conn:
            conn.execute(
                quarantine_events.insert().values(
                    item_id=item_id, at=time.time(), action=action, actor=actor, reason=reason, detail=detail
                )
            )

    async def release(
        self, item_id: str, routes: dict[str, Route], actor: str, reason: str, addresses: list[str] | None = None
    ) -> dict[str, RecipientResult]:
        """Deliver held recipients (all, or `addresses`) through the route their decision required."""
        held = self.require(item_id)
        if held.status == DELETED:
            raise QuarantineError(f"{item_id} was deleted and cannot be released")
        waiting = [r for r in held.recipients if r.status == HELD]
        if addresses is not None:
            wanted = {a.lower() for a in addresses}
            unknown = wanted - {r.address.lower() for r in held.recipients}
            if unknown:
                raise QuarantineError(f"{item_id} was not held for {', '.join(sorted(unknown))}")
            waiting = [r for r in waiting if r.address.lower() in wanted]
        if not waiting:
            raise QuarantineError(f"{item_id} has no recipients still held")
        data = (self.directory / held.storage_key).read_bytes()
        results: dict[str, RecipientResult] = {}
        for route_name in ("relay", "secure"):
            group = [r.address for r in waiting if r.release_route == route_name]
            if group:
                results.update(await routes[route_name].deliver(held.sender, group, data, held.mail_options))
        delivered = [a for a, r in results.items() if r.ok]
        with self.engine.begin() as conn:
            if delivered:
                conn.execute(
                    quarantine_recipients.update()
                    .where(quarantine_recipients.c.item_id == item_id)
                    .where(quarantine_recipients.c.address.in_(delivered))
                    .values(status=RELEASED)
                )
            still_held = conn.execute(
                sa.select(sa.func.count()).select_from(quarantine_recipients)
                .where(quarantine_recipients.c.item_id == item_id)
                .where(quarantine_recipients.c.status == HELD)
            ).scalar_one()
            if not still_held:
                conn.execute(quarantine_items.update().where(quarantine_items.c.id == item_id).values(status=RELEASED))
            conn.execute(
                quarantine_events.insert().values(
                    item_id=item_id, at=time.time(), action="released", actor=actor, reason=reason,
                    detail=json.dumps({a: r.reply for a, r in results.items()}),
                )
            )
        return results

    def delete(self, item_id: str, actor: str, reason: str) -> None:
        """Delete the content; the index keeps the decision and the log keeps who and why."""
        held = self.require(item_id)
        if held.status == DELETED:
            raise QuarantineError(f"{item_id} was already deleted")
        (self.directory / held.storage_key).unlink(missing_ok=True)
        with self.engine.begin() as conn:
            conn.execute(quarantine_items.update().where(quarantine_items.c.id == item_id).values(status=DELETED))
            conn.execute(
                quarantine_recipients.update()
                .where(quarantine_recipients.c.item_id == item_id)
                .where(quarantine_recipients.c.status == HELD)
                .values(status=DELETED)
            )
            conn.execute(
                quarantine_events.insert().values(
                    item_id=item_id, at=time.time(), action="deleted", actor=actor, reason=reason, detail=""
                )
            )
