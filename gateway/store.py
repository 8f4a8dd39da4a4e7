"""The database: quarantine index and its action log, on SQLite or PostgreSQL from one URL.

SQLAlchemy Core only. The schema is created on first use; every table is shared
safely by several gateways pointed at the same PostgreSQL database.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

metadata = sa.MetaData()

quarantine_items = sa.Table(
    "quarantine_items",
    metadata,
    sa.Column("id", sa.String(40), primary_key=True),          # the reference people quote
    sa.Column("created_at", sa.Float, nullable=False, index=True),
    sa.Column("sender", sa.Text, nullable=False),
    sa.Column("message_id", sa.Text, nullable=False),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("mail_options", sa.Text, nullable=False),        # JSON list: BODY=8BITMIME, SMTPUTF8
    sa.Column("rules", sa.Text, nullable=False),               # JSON list of rule names
    sa.Column("findings", sa.Text, nullable=False),            # JSON: kinds, counts, locations; never values
    sa.Column("status", sa.String(20), nullable=False, index=True),  # held, released, deleted, expired
    sa.Column("storage_key", sa.Text, nullable=False),         # the bytes' file (maybe encrypted); "" once removed
)

quarantine_recipients = sa.Table(
    "quarantine_recipients",
    metadata,
    sa.Column("item_id", sa.String(40), sa.ForeignKey("quarantine_items.id"), primary_key=True),
    sa.Column("address", sa.Text, primary_key=True),
    sa.Column("rclass", sa.String(20), nullable=False),
    sa.Column("rules", sa.Text, nullable=False),
    sa.Column("release_route", sa.String(20), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),        # held, released, deleted, expired
)

quarantine_events = sa.Table(
    "quarantine_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("item_id", sa.String(40), sa.ForeignKey("quarantine_items.id"), nullable=False, index=True),
    sa.Column("at", sa.Float, nullable=False),
    sa.Column("action", sa.String(20), nullable=False),        # held, viewed, released, deleted, expired, rekeyed, notified
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("detail", sa.Text, nullable=False),
)


admin_sessions = sa.Table(                                     # review UI sign-ins, shared by gateways behind one address
    "admin_sessions",
    metadata,
    sa.Column("token_hash", sa.String(64), primary_key=True),   # SHA-256 of the cookie's token; the token is never stored
    sa.Column("user", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("expires_at", sa.Float, nullable=False, index=True),
    sa.Column("csrf", sa.String(64), nullable=False),           # the token every form of this session must carry
    sa.Column("filters", sa.Text, nullable=False),              # JSON: the held-message list's filters (kept out of URLs)
)


def normalise_url(url: str) -> str:
    """postgresql:// means the psycopg 3 driver we install; sqlite paths get their directory made."""
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://"):]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return url


_engines: dict[str, Engine] = {}


def database_answers(url: str) -> None:
    """Raise unless the database takes a trivial query now."""
    with engine_for(url).connect() as conn:
        conn.execute(sa.text("SELECT 1"))


def engine_for(url: str) -> Engine:
    url = normalise_url(url)
    if url not in _engines:
        if url.startswith("sqlite"):
            engine = sa.create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

            @sa.event.listens_for(engine, "connect")
            def _sqlite_pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
                cursor = dbapi_connection.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=FULL")
                cursor.execute("PRAGMA foreign_keys=ON")
                cursor.close()
        else:
            # A server that does not answer must fail the connection, not hang the mail path.
            engine = sa.create_engine(url, pool_pre_ping=True, connect_args={"connect_timeout": 10})
        metadata.create_all(engine)
        _engines[url] = engine
    return _engines[url]
