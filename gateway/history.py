"""Recipient history: whom each sender has had mail delivered to, how often and when.

It lets the detectors tell a usual correspondent from a first-time or mistyped
address (autocomplete mistakes). Only delivered mail is recorded, and only
addresses, the display name shown for them, a count and two times: never message
content. Each sender's history is bounded (`history.max_per_sender`, the least
recently used go first) and entries not used for `history.expiry_days` are dropped.

Operators may also register a sender's known personal accounts, which count as
personal-account forwarding. Same database as the quarantine, SQLite or PostgreSQL.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from gateway.message import NO_HISTORY, Correspondent, SenderHistory
from gateway.store import engine_for, metadata

log = logging.getLogger(__name__)

recipient_history = sa.Table(
    "recipient_history",
    metadata,
    sa.Column("sender", sa.String(320), primary_key=True),      # lower-case envelope sender
    sa.Column("address", sa.String(320), primary_key=True),     # lower-case recipient
    sa.Column("display_name", sa.Text, nullable=False),         # as last shown in To/Cc; "" if none
    sa.Column("count", sa.Integer, nullable=False),
    sa.Column("first_seen", sa.Float, nullable=False),
    sa.Column("last_seen", sa.Float, nullable=False, index=True),
)

personal_addresses = sa.Table(
    "personal_addresses",
    metadata,
    sa.Column("sender", sa.String(320), primary_key=True),
    sa.Column("address", sa.String(320), primary_key=True),
    sa.Column("added_at", sa.Float, nullable=False),
    sa.Column("added_by", sa.Text, nullable=False),
)

DAY = 86400.0
EXPIRY_INTERVAL = 3600.0    # seconds between sweeps of stale entries while recording


@dataclass(frozen=True)
class Delivered:
    """One recipient a message was delivered to, with the name the sender's client showed."""

    address: str
    display_name: str = ""


def _key(address: str) -> str:
    return address.strip().strip("<>").lower()


class RecipientHistory:
    def __init__(self, database_url: str, max_per_sender: int = 500, expiry_days: float = 365):
        self.engine = engine_for(database_url)
        # The engine may have been made (and its schema created) before this module was imported.
        metadata.create_all(self.engine, tables=[recipient_history, personal_addresses])
        self.max_per_sender = max_per_sender
        self.expiry_seconds = expiry_days * DAY
        self._last_expiry = 0.0
        self._expiry_lock = threading.Lock()

    # --- reading ------------------------------------------------------------------

    def lookup(self, sender: str, now: float | None = None) -> SenderHistory:
        """The sender's correspondents, most written-to first, and their registered personal accounts."""
        sender = _key(sender)
        if not sender:
            return NO_HISTORY
        since = (now if now is not None else time.time()) - self.expiry_seconds
        h = recipient_history
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(h.c.address, h.c.display_name, h.c.count, h.c.first_seen, h.c.last_seen)
                .where(h.c.sender == sender, h.c.last_seen >= since)
                .order_by(h.c.count.desc(), h.c.last_seen.desc())
                .limit(self.max_per_sender)
            ).all()
            personal = conn.execute(
                sa.select(personal_addresses.c.address).where(personal_addresses.c.sender == sender)
                .order_by(personal_addresses.c.address)
            ).scalars().all()
        if not rows and not personal:
            return NO_HISTORY
        return SenderHistory(
            correspondents=tuple(Correspondent(r.address, r.display_name, r.count, r.first_seen, r.last_seen)
                                 for r in rows),
            personal_addresses=tuple(personal),
        )

    # --- recording ----------------------------------------------------------------

    def record(self, sender: str, delivered: Iterable[Delivered], now: float | None = None) -> None:
        """Count one delivered message from `sender` to each of `delivered`."""
        sender = _key(sender)
        now = now if now is not None else time.time()
        entries = {_key(d.address): d.display_name.strip()[:200] for d in delivered if _key(d.address)}
        if not sender or not entries:
            return
        h = recipient_history
        dialect = self.engine.dialect.name
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        # Sorted, so two gateways recording for one sender lock rows in the same order.
        values = [
            {"sender": sender, "address": address, "display_name": name, "count": 1,
             "first_seen": now, "last_seen": now}
            for address, name in sorted(entries.items())
        ]
        statement = insert(h).values(values)
        statement = statement.on_conflict_do_update(
            index_elements=[h.c.sender, h.c.address],
            set_={
                "count": h.c.count + 1,
                "last_seen": statement.excluded.last_seen,
                # Keep the name we knew when this message showed none.
                "display_name": sa.case((statement.excluded.display_name == "", h.c.display_name),
                                        else_=statement.excluded.display_name),
            },
        )
        with self.engine.begin() as conn:
            conn.execute(statement)
            self._trim(conn, sender)
        self._expire_now_and_then(now)

    def _trim(self, conn: sa.Connection, sender: str) -> None:
        """Keep the sender's `max_per_sender` most recently used entries."""
        h = recipient_history
        total = conn.execute(sa.select(sa.func.count()).select_from(h).where(h.c.sender == sender)).scalar_one()
        if total <= self.max_per_sender:
            return
        keep = (
            sa.select(h.c.address).where(h.c.sender == sender)
            .order_by(h.c.last_seen.desc(), h.c.count.desc(), h.c.address)
            .limit(self.max_per_sender)
        )
        # A derived table: MySQL-style "same table in subquery" limits do not apply to SQLite or PostgreSQL,
        # but wrapping keeps the statement portable.
        kept = sa.select(keep.subquery().c.address)
        conn.execute(sa.delete(h).where(h.c.sender == sender, h.c.address.not_in(kept)))

    def _expire_now_and_then(self, now: float) -> None:
        with self._expiry_lock:
            if now - self._last_expiry < EXPIRY_INTERVAL:
                return
            self._last_expiry = now
        try:
            removed = self.expire(now)
            if removed:
                log.info("recipient history: %d entries unused for %g days removed", removed,
                         self.expiry_seconds / DAY)
        except Exception as e:   # a sweep that fails is retried at the next interval
            log.warning("recipient history expiry failed: %s", e)

    def expire(self, now: float | None = None) -> int:
        """Remove entries not used within the expiry period; returns how many."""
        cutoff = (now if now is not None else time.time()) - self.expiry_seconds
        with self.engine.begin() as conn:
            return conn.execute(sa.delete(recipient_history).where(recipient_history.c.last_seen < cutoff)).rowcount

    def forget(self, sender: str, address: str | None = None) -> int:
        """Remove a sender's history (all of it, or one correspondent): erasure on request."""
        h = recipient_history
        condition = h.c.sender == _key(sender)
        if address is not None:
            condition = condition & (h.c.address == _key(address))
        with self.engine.begin() as conn:
            return conn.execute(sa.delete(h).where(condition)).rowcount

    # --- registered personal accounts ---------------------------------------------

    def add_personal(self, sender: str, address: str, actor: str, now: float | None = None) -> bool:
        """Register `address` as one of `sender`'s personal accounts; False if it already was."""
        p = personal_addresses
        sender, address = _key(sender), _key(address)
        with self.engine.begin() as conn:
            exists = conn.execute(sa.select(p.c.address).where(p.c.sender == sender, p.c.address == address)).first()
            if exists:
                return False
            conn.execute(sa.insert(p).values(sender=sender, address=address,
                                             added_at=now if now is not None else time.time(), added_by=actor))
        return True

    def remove_personal(self, sender: str, address: str) -> bool:
        p = personal_addresses
        with self.engine.begin() as conn:
            return conn.execute(
                sa.delete(p).where(p.c.sender == _key(sender), p.c.address == _key(address))
            ).rowcount > 0

    def list_personal(self, sender: str | None = None) -> list[tuple[str, str, float, str]]:
        """(sender, address, added_at, added_by) rows, for one sender or all."""
        p = personal_addresses
        query = sa.select(p.c.sender, p.c.address, p.c.added_at, p.c.added_by).order_by(p.c.sender, p.c.address)
        if sender is not None:
            query = query.where(p.c.sender == _key(sender))
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(query).all()]  # type: ignore[misc]
