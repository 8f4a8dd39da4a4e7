"""Metrics, health and readiness on the admin listener, scraped over HTTP from a running gateway."""

from __future__ import annotations

import smtplib
import urllib.request
from typing import Callable

from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import SENDER, make_message
from tests.support import GatewayProcess, Sink, smtp_route, wait_until

NINO_BODY = "Hi,\n\nHer National Insurance number is AB 12 34 56 C, as discussed.\n\nJane"


def _get(gw: GatewayProcess, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{gw.admin_port}{path}", timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def _samples(gw: GatewayProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    _, text = _get(gw, "/metrics")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text) for s in family.samples
    }


def _value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def _send(gw: GatewayProcess, rcpt: str, **kwargs: object) -> None:
    with smtplib.SMTP("127.0.0.1", gw.smtp_port, timeout=60) as client:
        client.sendmail(SENDER, [rcpt], make_message(to=[rcpt], **kwargs))  # type: ignore[arg-type]


def test_metrics_count_verdicts_recipients_findings_rules_and_deliveries(
    gateway_factory: Callable[..., GatewayProcess], sink: Sink
) -> None:
    gw = gateway_factory({"routes": {"relay": smtp_route(sink), "secure": smtp_route(sink)}})
    _send(gw, "partner@supplier.example.com")
    _send(gw, "someone@gmail.com", body=NINO_BODY)
    _send(gw, "partner@supplier.example.com", subject="SECRET: plans")
    _send(gw, "colleague@nhs.net", body=NINO_BODY)

    m = _samples(gw)
    assert _value(m, "dlp_gateway_messages_total", verdict="deliver") == 1
    assert _value(m, "dlp_gateway_messages_total", verdict="reject") == 1
    assert _value(m, "dlp_gateway_messages_total", verdict="quarantine") == 1
    assert _value(m, "dlp_gateway_messages_total", verdict="deliver_tls") == 1
    assert _value(m, "dlp_gateway_recipients_total", **{"class": "personal", "action": "reject"}) == 1
    assert _value(m, "dlp_gateway_recipients_total", **{"class": "trusted", "action": "deliver_tls"}) == 1
    assert _value(m, "dlp_gateway_findings_total", detector="uk_nino", category="personal_data") == 2
    assert _value(m, "dlp_gateway_rule_hits_total", rule="personal-data") == 2
    assert _value(m, "dlp_gateway_rule_hits_total", rule="secret-marking") == 1
    assert _value(m, "dlp_gateway_deliveries_total", route="relay", result="delivered") == 1
    assert _value(m, "dlp_gateway_deliveries_total", route="secure", result="delivered") == 1
    assert _value(m, "dlp_gateway_inspection_seconds_count") == 4
    assert _value(m, "dlp_gateway_message_size_bytes_count") == 4
    assert _value(m, "dlp_gateway_quarantine_messages") == 1
    assert _value(m, "dlp_gateway_quarantine_oldest_age_seconds") >= 0
    assert _value(m, "dlp_gateway_replies_total", code="2xx") == 4
    assert _value(m, "dlp_gateway_bounces_total", kind="bounce", result="sent") == 1
    assert _value(m, "dlp_gateway_bounces_total", kind="held_notice", result="sent") == 1


def test_metrics_never_carry_addresses_or_references(gateway_factory: Callable[..., GatewayProcess],
                                                     sink: Sink) -> None:
    gw = gateway_factory({"routes": {"relay": smtp_route(sink), "secure": smtp_route(sink)}})
    _send(gw, "someone@gmail.com", body=NINO_BODY)
    _, text = _get(gw, "/metrics")
    assert "@" not in text and "AB 12" not in text and "gmail" not in text


def test_deferred_deliveries_are_counted(gateway_factory: Callable[..., GatewayProcess]) -> None:
    gw = gateway_factory({"routes": {"relay": "smtp://127.0.0.1:9?tls=none", "secure": "smtp://127.0.0.1:9?tls=none"}})
    try:
        _send(gw, "partner@supplier.example.com")
    except smtplib.SMTPResponseException as e:
        assert e.smtp_code == 451
    m = _samples(gw)
    assert _value(m, "dlp_gateway_deliveries_total", route="relay", result="deferred") == 1
    assert _value(m, "dlp_gateway_replies_total", code="4xx") == 1


def test_deliveries_deferred_for_want_of_verified_tls_are_counted_apart(
    gateway_factory: Callable[..., GatewayProcess], sink: Sink
) -> None:
    gw = gateway_factory({"routes": {"relay": smtp_route(sink), "secure": smtp_route(sink, tls="verify")}})
    try:
        _send(gw, "colleague@nhs.net", body=NINO_BODY)
    except smtplib.SMTPResponseException as e:
        assert 400 <= e.smtp_code < 500
    m = _samples(gw)
    assert _value(m, "dlp_gateway_deliveries_total", route="secure", result="tls_failed") == 1
    assert sink.messages == []


def test_open_sessions_are_a_gauge(gateway: GatewayProcess) -> None:
    with smtplib.SMTP("127.0.0.1", gateway.smtp_port, timeout=60) as client:
        client.ehlo()
        assert wait_until(lambda: _value(_samples(gateway), "dlp_gateway_smtp_sessions", listener="smtp") == 1)
    assert wait_until(lambda: _value(_samples(gateway), "dlp_gateway_smtp_sessions", listener="smtp") == 0)


def test_health_and_readiness(gateway: GatewayProcess) -> None:
    assert _get(gateway, "/healthz") == (200, "ok\n")
    assert _get(gateway, "/readyz") == (200, "ready\n")
    assert _get(gateway, "/nothing-here")[0] == 404
