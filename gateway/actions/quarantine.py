"""The quarantine: held message bytes on disk, an index in the database, an action log.

`hold` returns only once the bytes are fsync'd (encrypted first when a key is
configured) and the index row is committed, so the server may then acknowledge the
recipient. Release delivers through the route the original decision required; every
release, delete, view, expiry and re-encryption is recorded with who did it, when and
why. The index holds kinds, counts and locations, never content. Content does not
outlive its purpose: it is removed on delete, on release to the last held recipient,
and at the end of the retention period; the index row and the log stay.

It never deletes a file it cannot account for, and never undoes a completed release
or delete because telling the sender about it failed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from gateway.actions.delivery import RecipientResult, Route, write_durably
from gateway.decision import RecipientDecision
from gateway.message import Envelope
from gateway.pipeline import Inspection
from gateway.quarantine_keys import KeyRing, SealError, sealed_key_id
from gateway.store import engine_for, quarantine_events, quarantine_items, quarantine_recipients

if TYPE_CHECKING:
    from gateway.config import Config

log = logging.getLogger(__name__)

HELD = "held"
RELEASED = "released"
DELETED = "deleted"
EXPIRED = "expired"
STATUSES = (HELD, RELEASED, DELETED, EXPIRED)
RETENTION_ACTOR = "retention"
DAY = 86400.0


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
    storage_key: str                       # the file under the quarantine directory; "" once the content is removed
    recipients: tuple[HeldRecipient, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.created_at)),
            "sender": self.sender,
            "message_id": self.message_id,
            "size": self.size,
            "status": self.status,
            "content_kept": bool(self.storage_key),
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


@dataclass(frozen=True)
class ExpiryReport:
    cutoff: float                          # items held before this time expire
    expired: tuple[str, ...]               # held items expired now (on a dry run: that would be)
    purged: tuple[str, ...]                # released, deleted or expired items whose left-over file was removed


@dataclass(frozen=True)
class RekeyReport:
    key_id: str                            # the current key, that everything is now under
    rekeyed: tuple[str, ...]
    unchanged: tuple[str, ...]             # already under the current key
    failed: dict[str, str] = field(default_factory=dict)  # reference -> what is wrong; nothing was changed


# Sends the sender a notice of an outcome ("released" or "deleted") for `recipients`, given the
# held bytes (b"" when unreadable); returns the relay's reply, None when no notice is due; raises on failure.
Notify = Callable[[HeldMessage, str, list[str], str, bytes], Awaitable[str | None]]


def sender_notifier(config: "Config", relay: Route) -> Notify:
    """Notices built by gateway.actions.notices, handed to the relay route from the null sender as bounces
    are, and like bounces never sent to the null sender or about automatic mail."""

    async def notify(held: HeldMessage, outcome: str, recipients: list[str], reason: str, raw: bytes) -> str | None:
        from gateway.actions.bounce import should_bounce
        from gateway.actions.notices import build_outcome_notice, mail_options_for  # here: a fault only loses notices

        if not should_bounce(held.sender, raw):
            return None
        notice = build_outcome_notice(config, held, outcome, recipients, reason)
        results = await relay.deliver("", [held.sender], notice, mail_options_for(held.sender))
        failed = [r.reply for r in results.values() if not r.ok]
        if failed:
            raise RuntimeError(f"the relay did not take it: {'; '.join(failed)}")
        return "; ".join(r.reply for r in results.values())

    return notify


class Quarantine:
    def __init__(
        self,
        database_url: str,
        directory: str,
        keys: KeyRing | None = None,
        retention_days: int = 30,
        notify: Notify | None = None,
    ):
        self.engine = engine_for(database_url)
        self.directory = Path(directory)
        self.keys = keys or KeyRing()
        self.retention_days = retention_days
        self.notify = notify
        self._notices: set[asyncio.Task[None]] = set()

    @classmethod
    def from_config(cls, config: "Config", routes: dict[str, Route] | None = None) -> "Quarantine":
        """The quarantine `config` describes; sender notices (when enabled) go through `routes["relay"]`."""
        settings = config.quarantine
        notify = sender_notifier(config, routes["relay"]) if settings.notify_sender and routes else None
        return cls(config.storage.database_url, config.storage.quarantine_dir, KeyRing.from_files(settings.keys),
                   settings.retention_days, notify)

    # --- holding -------------------------------------------------------------------------

    def hold(
        self, inspection: Inspection, raw: bytes, envelope: Envelope, recipients: list[RecipientDecision]
    ) -> str:
        """Store durably; returns the reference. Raises OSError or a database error on failure."""
        self.directory.mkdir(parents=True, exist_ok=True)
        key = f"{inspection.reference}.eml"
        path = write_durably(self.directory, key, self.keys.seal(raw, inspection.reference))
        try:
            self._index(inspection, raw, envelope, recipients, key)
        except BaseException:
            path.unlink(missing_ok=True)  # not held (the client gets 4xx and retries): keep no content
            raise
        return inspection.reference

    def _index(self, inspection: Inspection, raw: bytes, envelope: Envelope,
               recipients: list[RecipientDecision], key: str) -> None:
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

    # --- looking -------------------------------------------------------------------------

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
        data = self._content(self.require(item_id))
        self._record(item_id, "viewed", actor, reason)
        return data

    def _content(self, held: HeldMessage) -> bytes:
        """The message itself, decrypted; QuarantineError (and nothing changed) when it cannot be had."""
        if held.status != HELD:
            raise QuarantineError(self._gone(held))
        path = self.directory / held.storage_key
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            raise QuarantineError(f"{held.id} is held but its content file {path} is missing (check "
                                  "storage.quarantine_dir; restore the file from a backup if you have one)") from None
        except OSError as e:
            raise QuarantineError(f"{held.id}: cannot read its content file {path}: {e.strerror}") from None
        try:
            return self.keys.open(blob, held.id)
        except SealError as e:
            raise QuarantineError(f"{held.id} cannot be read: its content file {path}: {e}. "
                                  "Nothing was changed or deleted.") from None

    def _gone(self, held: HeldMessage) -> str:
        if held.status == DELETED:
            return f"{held.id} was deleted; its content is gone"
        if held.status == EXPIRED:
            return f"{held.id} expired (held longer than quarantine.retention_days); its content is gone"
        return f"{held.id} was released to every recipient; its content was removed then"

    def _record(self, item_id: str, action: str, actor: str, reason: str, detail: str = "") -> None:
        with self.engine.begin() as conn:
            conn.execute(
                quarantine_events.insert().values(
                    item_id=item_id, at=time.time(), action=action, actor=actor, reason=reason, detail=detail
                )
            )

    # --- releasing and deleting ----------------------------------------------------------

    async def release(
        self, item_id: str, routes: dict[str, Route], actor: str, reason: str, addresses: list[str] | None = None
    ) -> dict[str, RecipientResult]:
        """Deliver held recipients (all, or `addresses`) through the route their decision required."""
        held = self.require(item_id)
        if held.status in (DELETED, EXPIRED):
            raise QuarantineError(f"{self._gone(held)}; it cannot be released")
        waiting = [r for r in held.recipients if r.status == HELD]
        if addresses is not None:
            wanted = {a.lower() for a in addresses}
            unknown = wanted - {r.address.lower() for r in held.recipients}
            if unknown:
                raise QuarantineError(f"{item_id} was not held for {', '.join(sorted(unknown))}")
            waiting = [r for r in waiting if r.address.lower() in wanted]
        if not waiting:
            raise QuarantineError(f"{item_id} has no recipients still held")
        data = self._content(held)
        results: dict[str, RecipientResult] = {}
        for route_name in ("relay", "secure"):
            group = [r.address for r in waiting if r.release_route == route_name]
            if group:
                results.update(await routes[route_name].deliver(held.sender, group, data, held.mail_options))
        delivered = [a for a, r in results.items() if r.ok]
        finished = False
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
                finished = conn.execute(
                    quarantine_items.update()
                    .where(quarantine_items.c.id == item_id)
                    .where(quarantine_items.c.status == HELD)  # deleted or expired meanwhile: that stands
                    .values(status=RELEASED)
                ).rowcount == 1
            conn.execute(
                quarantine_events.insert().values(
                    item_id=item_id, at=time.time(), action="released", actor=actor, reason=reason,
                    detail=json.dumps({a: r.reply for a, r in results.items()}),
                )
            )
        if finished:
            self._remove_content(item_id, held.storage_key)
        if delivered:
            await self._notify_sender(item_id, "released", delivered, reason, data)
        return results

    def delete(self, item_id: str, actor: str, reason: str) -> None:
        """Delete the content; the index keeps the decision and the log keeps who and why.

        With sender notices on, the notice is sent before this returns when no event loop
        runs in this thread, else by a task on the running loop."""
        held = self.require(item_id)
        if held.status in (DELETED, EXPIRED):
            raise QuarantineError(f"{self._gone(held)} already")
        if held.status == RELEASED:
            raise QuarantineError(f"{item_id} was released to every recipient; nothing is held to delete")
        withheld = [r.address for r in held.recipients if r.status == HELD]
        raw = b""
        if self.notify is not None and held.sender and withheld:
            try:
                raw = self._content(held)  # whether the notice is due depends on its headers
            except QuarantineError:
                pass  # content that cannot be read is still deleted; the notice is judged on the sender alone
        with self.engine.begin() as conn:
            claimed = conn.execute(
                quarantine_items.update()
                .where(quarantine_items.c.id == item_id)
                .where(quarantine_items.c.status == HELD)
                .values(status=DELETED)
            ).rowcount
            if not claimed:
                raise QuarantineError(f"{item_id} was released, deleted or expired by someone else just now; "
                                      "see 'dlp-gateway quarantine show'")
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
        self._remove_content(item_id, held.storage_key)
        if self.notify is not None and held.sender and withheld:
            self._run_soon(self._notify_sender(item_id, "deleted", withheld, reason, raw))

    def _remove_content(self, item_id: str, storage_key: str) -> bool:
        """Remove the file of an item that is no longer held, then forget where it was. A file that
        cannot be removed is logged and stays listed, so the next retention run tries again."""
        if storage_key:
            try:
                (self.directory / storage_key).unlink(missing_ok=True)
            except OSError as e:
                log.warning("quarantine: cannot remove the content of %s (%s): %s; retention will try again",
                            item_id, self.directory / storage_key, e.strerror)
                return False
        with self.engine.begin() as conn:
            conn.execute(
                quarantine_items.update()
                .where(quarantine_items.c.id == item_id)
                .where(quarantine_items.c.status != HELD)
                .values(storage_key="")
            )
        return True

    async def _notify_sender(self, item_id: str, outcome: str, recipients: list[str], reason: str,
                             raw: bytes) -> None:
        """Tell the sender; any failure is logged and changes nothing that was done."""
        if self.notify is None:
            return
        try:
            held = self.require(item_id)
            if not held.sender:
                return  # a null sender: nobody to tell
            reply = await self.notify(held, outcome, recipients, reason, raw)
            if reply is None:
                return
            self._record(item_id, "notified", "gateway", f"{outcome} notice to the sender", reply)
        except Exception as e:
            log.warning("quarantine: the %s notice for %s to its sender was not sent: %s: %s",
                        outcome, item_id, type(e).__name__, e)

    def _run_soon(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            asyncio.run(coro)
            return
        task = loop.create_task(coro)
        self._notices.add(task)
        task.add_done_callback(self._notices.discard)

    # --- retention -----------------------------------------------------------------------

    def expire(self, now: float | None = None, dry_run: bool = False, detail: str = "") -> ExpiryReport:
        """Expire what has been held longer than the retention period: remove its content, keep its
        index row (status expired) and record who did it. Several gateways may run this at once."""
        now = time.time() if now is None else now
        cutoff = now - self.retention_days * DAY
        with self.engine.connect() as conn:
            due = conn.execute(
                sa.select(quarantine_items.c.id, quarantine_items.c.storage_key)
                .where(quarantine_items.c.status == HELD)
                .where(quarantine_items.c.created_at < cutoff)
                .order_by(quarantine_items.c.created_at)
            ).all()
        expired: list[str] = []
        for row in due:
            if dry_run:
                expired.append(row.id)
                continue
            with self.engine.begin() as conn:
                claimed = conn.execute(
                    quarantine_items.update()
                    .where(quarantine_items.c.id == row.id)
                    .where(quarantine_items.c.status == HELD)  # another gateway or a person got there first: theirs
                    .values(status=EXPIRED)
                ).rowcount
                if claimed:
                    conn.execute(
                        quarantine_recipients.update()
                        .where(quarantine_recipients.c.item_id == row.id)
                        .where(quarantine_recipients.c.status == HELD)
                        .values(status=EXPIRED)
                    )
                    conn.execute(
                        quarantine_events.insert().values(
                            item_id=row.id, at=time.time(), action=EXPIRED, actor=RETENTION_ACTOR,
                            reason=f"held longer than {self.retention_days} days", detail=detail,
                        )
                    )
            if claimed:
                expired.append(row.id)
                self._remove_content(row.id, row.storage_key)
        # Content left behind by an interruption between a status change and the file's removal.
        with self.engine.connect() as conn:
            leftovers = conn.execute(
                sa.select(quarantine_items.c.id, quarantine_items.c.storage_key)
                .where(quarantine_items.c.status != HELD)
                .where(quarantine_items.c.storage_key != "")
            ).all()
        purged = [row.id for row in leftovers if dry_run or self._remove_content(row.id, row.storage_key)]
        return ExpiryReport(cutoff, tuple(expired), tuple(purged))

    async def run_retention(self, interval: float) -> None:
        """Expire now and every `interval` seconds until cancelled; a failed run is logged and retried."""
        while True:
            try:
                report = await asyncio.to_thread(self.expire)
                if report.expired or report.purged:
                    log.info("quarantine retention: %d held message(s) older than %d days expired, "
                             "%d left-over file(s) removed", len(report.expired), self.retention_days,
                             len(report.purged))
            except Exception as e:  # the database may be away for a while: the next run catches up
                log.warning("quarantine retention run failed (%s: %s); trying again in %gs",
                            type(e).__name__, e, interval)
            await asyncio.sleep(interval)

    # --- key rotation --------------------------------------------------------------------

    def rekey(self, actor: str) -> RekeyReport:
        """Re-encrypt every held item under the current key (the first of quarantine.keys), one file
        at a time, atomically (temporary file, fsync, rename); each is recorded in the action log."""
        key = self.keys.current
        if key is None:
            raise QuarantineError("no quarantine key is configured (quarantine.keys is empty); add one made with "
                                  "'dlp-gateway quarantine-keygen FILE' first")
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(quarantine_items.c.id, quarantine_items.c.storage_key)
                .where(quarantine_items.c.status == HELD)
                .where(quarantine_items.c.storage_key != "")
                .order_by(quarantine_items.c.created_at)
            ).all()
        rekeyed: list[str] = []
        unchanged: list[str] = []
        failed: dict[str, str] = {}
        for row in rows:
            path = self.directory / row.storage_key
            try:
                blob = path.read_bytes()
            except OSError as e:
                failed[row.id] = f"cannot read {path}: {e.strerror}"
                continue
            old = sealed_key_id(blob)
            if old == key.id:
                unchanged.append(row.id)
                continue
            try:
                plain = self.keys.open(blob, row.id)
            except SealError as e:
                failed[row.id] = f"{path}: {e}"
                continue
            try:
                write_durably(self.directory, row.storage_key, self.keys.seal(plain, row.id))
            except OSError as e:
                failed[row.id] = f"cannot write {path}: {e.strerror}"
                continue
            now = self.get(row.id)
            if now is None or now.status != HELD:
                # Deleted or expired while we rewrote it: its removal may have run before our rename.
                self._remove_content(row.id, row.storage_key)
                continue
            self._record(row.id, "rekeyed", actor, "key rotation",
                         json.dumps({"from": old.hex() if old else "unencrypted", "to": key.hex_id}))
            rekeyed.append(row.id)
        return RekeyReport(key.hex_id, tuple(rekeyed), tuple(unchanged), failed)
