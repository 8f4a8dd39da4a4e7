"""What the review UI reads from the quarantine index: filtered, paged lists, counts per rule, the action log.

Read-only: every change to held mail goes through gateway.actions.quarantine.Quarantine,
which records who did it and why.
"""

from __future__ import annotations

import calendar
import json
import re
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from gateway.actions.quarantine import STATUSES, Event
from gateway.store import quarantine_events, quarantine_items, quarantine_recipients

FILTER_KEYS = ("rule", "sender", "domain", "since", "until", "status")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class ListFilters:
    """The held-message list's filters; kept in the session, never in a URL (sender and domain are personal data)."""

    rule: str = ""
    sender: str = ""            # part of the sender's address, any case
    domain: str = ""            # a recipient's domain, exactly (any case)
    since: str = ""             # YYYY-MM-DD, UTC, inclusive
    until: str = ""             # YYYY-MM-DD, UTC, inclusive
    status: str = "held"        # held, released, deleted, expired, or "all"

    @classmethod
    def of(cls, values: dict[str, str]) -> "ListFilters":
        """From a form or a session; anything unusable is dropped rather than guessed at."""
        def text(key: str, limit: int = 254) -> str:
            return " ".join(str(values.get(key, "")).split())[:limit]

        status = text("status") or "held"
        domain = text("domain").lower().lstrip("@")
        return cls(
            rule=text("rule", 64) if re.fullmatch(r"[a-z0-9-]*", text("rule", 64)) else "",
            sender=text("sender").lower(),
            domain=domain,
            since=text("since") if _DATE.fullmatch(text("since")) else "",
            until=text("until") if _DATE.fullmatch(text("until")) else "",
            status=status if status in (*STATUSES, "all") else "held",
        )

    def to_dict(self) -> dict[str, str]:
        return {k: getattr(self, k) for k in FILTER_KEYS}

    @property
    def active(self) -> bool:
        return self != ListFilters()


@dataclass(frozen=True)
class Row:
    id: str
    created_at: float
    sender: str
    status: str
    rules: tuple[str, ...]
    recipients: tuple[tuple[str, str, str], ...]    # (address, class, status)


@dataclass(frozen=True)
class Page:
    rows: tuple[Row, ...]
    total: int
    number: int
    size: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.size))


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _day_start(day: str) -> float:
    return float(calendar.timegm(time.strptime(day, "%Y-%m-%d")))


def _conditions(filters: ListFilters, with_rule: bool = True) -> list[sa.ColumnElement[bool]]:
    c = quarantine_items.c
    out: list[sa.ColumnElement[bool]] = []
    if filters.status != "all":
        out.append(c.status == filters.status)
    if with_rule and filters.rule:
        out.append(c.rules.like(f'%"{_like(filters.rule)}"%', escape="\\"))
    if filters.sender:
        out.append(sa.func.lower(c.sender).like(f"%{_like(filters.sender)}%", escape="\\"))
    if filters.domain:
        r = quarantine_recipients.c
        out.append(sa.exists().where(r.item_id == c.id)
                   .where(sa.func.lower(r.address).like(f"%@{_like(filters.domain)}", escape="\\")))
    if filters.since:
        out.append(c.created_at >= _day_start(filters.since))
    if filters.until:
        out.append(c.created_at < _day_start(filters.until) + 86400)
    return out


def held_page(engine: Engine, filters: ListFilters, number: int, size: int = 25) -> Page:
    where = _conditions(filters)
    with engine.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(quarantine_items).where(*where)).scalar_one()
        number = max(1, min(number, max(1, -(-total // size))))
        items = conn.execute(
            sa.select(quarantine_items.c.id, quarantine_items.c.created_at, quarantine_items.c.sender,
                      quarantine_items.c.status, quarantine_items.c.rules)
            .where(*where).order_by(quarantine_items.c.created_at.desc(), quarantine_items.c.id)
            .limit(size).offset((number - 1) * size)
        ).all()
        ids = [i.id for i in items]
        rcpts: dict[str, list[tuple[str, str, str]]] = {i: [] for i in ids}
        if ids:
            for r in conn.execute(sa.select(quarantine_recipients).where(quarantine_recipients.c.item_id.in_(ids))
                                  .order_by(quarantine_recipients.c.address)):
                rcpts[r.item_id].append((r.address, r.rclass, r.status))
    rows = tuple(Row(i.id, i.created_at, i.sender, i.status, tuple(json.loads(i.rules)), tuple(rcpts[i.id]))
                 for i in items)
    return Page(rows, total, number, size)


def rule_counts(engine: Engine, filters: ListFilters) -> list[tuple[str, int]]:
    """Messages per rule among those the other filters select (the rule filter itself left out)."""
    counts: Counter[str] = Counter()
    with engine.connect() as conn:
        for (rules,) in conn.execute(sa.select(quarantine_items.c.rules).where(*_conditions(filters, False))):
            counts.update(set(json.loads(rules)))
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))


def known_rules(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return sorted({name for (rules,) in conn.execute(sa.select(quarantine_items.c.rules).distinct())
                       for name in json.loads(rules)})


def events_page(engine: Engine, number: int, size: int = 50) -> tuple[list[Event], int]:
    """The action log, newest first: one page of it, and how many events there are."""
    with engine.connect() as conn:
        total = conn.execute(sa.select(sa.func.count()).select_from(quarantine_events)).scalar_one()
        rows = conn.execute(sa.select(quarantine_events).order_by(quarantine_events.c.id.desc())
                            .limit(size).offset((max(1, number) - 1) * size)).all()
    return [Event(r.item_id, r.at, r.action, r.actor, r.reason, r.detail) for r in rows], total


def all_events(engine: Engine, chunk: int = 1000) -> Iterator[Event]:
    """Every event, oldest first, read a chunk at a time."""
    last = 0
    while True:
        with engine.connect() as conn:
            rows = conn.execute(sa.select(quarantine_events).where(quarantine_events.c.id > last)
                                .order_by(quarantine_events.c.id).limit(chunk)).all()
        if not rows:
            return
        for r in rows:
            yield Event(r.item_id, r.at, r.action, r.actor, r.reason, r.detail)
        last = rows[-1].id
