"""Fixtures: real sinks, a test CA and gateway processes, all on loopback."""

from __future__ import annotations

import email.policy
import secrets
from collections.abc import Iterator
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path
from typing import Any, Callable

import pytest
import sqlalchemy as sa

from tests.support import GatewayProcess, Sink, TestCA, make_test_ca, smtp_route

SENDER = "jane.doe@council.example.gov.uk"
POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"


def make_message(
    body: str = "Hello,\n\nThe minutes of Tuesday's meeting are below.\n\nRegards,\nJane",
    subject: str = "Minutes of the meeting",
    sender: str = SENDER,
    to: list[str] | None = None,
    cc: list[str] | None = None,
    attachments: list[tuple[str, bytes, str]] = (),  # type: ignore[assignment]
    headers: dict[str, str] | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Jane Doe <{sender}>"
    msg["To"] = ", ".join(to or ["partner@supplier.example.com"])
    if cc:
        msg["Cc"] = ", ".join(cc)
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="council.example.gov.uk")
    for k, v in (headers or {}).items():
        msg[k] = v
    msg.set_content(body)
    for name, data, ctype in attachments:
        maintype, subtype = ctype.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes(policy=email.policy.SMTP)  # CRLF line endings, as an MTA sends


@pytest.fixture
def message() -> Callable[..., bytes]:
    return make_message


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory: pytest.TempPathFactory) -> TestCA:
    return make_test_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink().start()
    yield s
    s.stop()


@pytest.fixture
def tls_sink(test_ca: TestCA) -> Iterator[Sink]:
    s = Sink(cert=test_ca.cert_file, key=test_ca.key_file).start()
    yield s
    s.stop()


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    started: list[GatewayProcess] = []

    def start(settings: dict[str, Any] | None = None, start: bool = True) -> GatewayProcess:
        workdir = tmp_path / f"gw{len(started)}"
        workdir.mkdir()
        gw = GatewayProcess(workdir, settings or {})
        started.append(gw)
        return gw.start() if start else gw

    yield start
    for gw in started:
        gw.stop()


@pytest.fixture
def gateway(gateway_factory: Callable[..., GatewayProcess], sink: Sink) -> GatewayProcess:
    """A gateway relaying both routes to one plain sink."""
    return gateway_factory({"routes": {"relay": smtp_route(sink), "secure": smtp_route(sink)}})


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A schema of our own in the machine's PostgreSQL, dropped afterwards."""
    schema = f"dlp_test_{secrets.token_hex(4)}"
    engine = sa.create_engine(POSTGRES.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    except sa.exc.OperationalError as e:
        pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is not answering (make test starts it): {e}")
    yield f"{POSTGRES}?options=-csearch_path%3D{schema}"
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The same tests on real SQLite and on the machine's real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/gateway.db"
    return request.getfixturevalue("postgres_url")


@pytest.fixture(scope="module")
def relay_sink() -> Iterator[Sink]:
    s = Sink().start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def relay(tmp_path_factory: pytest.TempPathFactory, relay_sink: Sink) -> Iterator[GatewayProcess]:
    """One gateway relaying to one sink for the tests that only send to it."""
    gw = GatewayProcess(tmp_path_factory.mktemp("relay"), {"routes": {"relay": smtp_route(relay_sink),
                                                                       "secure": smtp_route(relay_sink)}})
    gw.start()
    yield gw
    gw.stop()
