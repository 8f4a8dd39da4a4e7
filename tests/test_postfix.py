"""The gateway behind a real Postfix, configured with the snippets in deploy/postfix/.

A private Postfix instance (tests/postfix_support.py: its own configuration, queue and
log under tmp_path, loopback ports only) takes mail on its front port, hands it to a
gateway process over LMTP (content_filter), takes back what the gateway delivers on
the two reinjection ports and sends it to real sinks on 127.0.0.1.
"""

from __future__ import annotations

import re
import smtplib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import SENDER, make_message
from tests.postfix_support import PostfixInstance, dlp_snippets, postfix_missing
from tests.support import GatewayProcess, Sink, TestCA as CA, free_port, wait_until

_missing = postfix_missing()
pytestmark = pytest.mark.skipif(_missing is not None, reason=f"Postfix is not installed: {_missing}")

NINO_BODY = "Hi,\n\nHer National Insurance number is AB 12 34 56 C, as discussed.\n\nJane"
DISCLAIMER = "is monitored and recorded"  # config/templates/disclaimer.txt
POSTMASTER = "postmaster@council.example.gov.uk"  # GatewayProcess's bounce.postmaster


class Chain:
    """Postfix in front of and behind a gateway."""

    def __init__(self, postfix: PostfixInstance, gateway: GatewayProcess):
        self.postfix = postfix
        self.gateway = gateway

    def send(self, rcpts: list[str], raw: bytes) -> None:
        """Inject a message at Postfix's front port, as a mail client would."""
        with smtplib.SMTP("127.0.0.1", self.postfix.front_port, timeout=30) as client:
            assert client.sendmail(SENDER, rcpts, raw) == {}

    def queue_empty(self, timeout: float = 30) -> bool:
        return wait_until(lambda: self.postfix.queue() == [], timeout, interval=0.2)

    def explain(self) -> str:
        """What to read when an assertion fails."""
        return (f"--- postfix queue: {self.postfix.queue()}\n--- maillog:\n{self.postfix.log()[-6000:]}"
                f"\n--- gateway log:\n{self.gateway.log_file.read_text()[-3000:]}")


@pytest.fixture
def chain_factory(tmp_path: Path, gateway_factory: Callable[..., GatewayProcess],
                  test_ca: CA) -> Iterator[Callable[..., Chain]]:
    started: list[PostfixInstance] = []

    def build(relay_sink: Sink, secure_nexthop: str | None = None) -> Chain:
        relay_port, secure_port = free_port(), free_port()
        # The gateway's routes as deploy/postfix/README.md gives them, with the ports substituted.
        gateway = gateway_factory({"routes": {"relay": f"smtp://127.0.0.1:{relay_port}?tls=none",
                                              "secure": f"smtp://127.0.0.1:{secure_port}?tls=none"}})
        # What a site sets for itself: the CA bundle dlp-verify trusts and, here, where deliver_tls mail goes.
        site = {"dlp_secure_CAfile": str(test_ca.ca_file)}
        if secure_nexthop:
            site["dlp_secure_nexthop"] = secure_nexthop
        main_cf, master_cf = dlp_snippets(gateway.lmtp_port, relay_port, secure_port, **site)
        postfix = PostfixInstance(tmp_path / f"postfix{len(started)}", relayhost=f"[127.0.0.1]:{relay_sink.port}",
                                  main_cf=main_cf, master_cf=master_cf)
        started.append(postfix)
        postfix.start()
        return Chain(postfix, gateway)

    yield build
    for postfix in started:
        postfix.stop()
    for postfix in started:
        assert postfix.processes() == [], "a Postfix process outlived its instance"


def postfix_received(data: bytes) -> list[str]:
    """Queue IDs of the Postfix Received headers, newest first."""
    return [m.decode() for m in re.findall(rb"\(Postfix\) with E?SMTP id (\w+)", data.split(b"\r\n\r\n", 1)[0])]


def test_benign_mail_passes_and_blocked_mail_bounces_through_postfix(
    chain_factory: Callable[..., Chain], sink: Sink
) -> None:
    chain = chain_factory(sink)
    chain.send(["partner@supplier.example.com"], make_message(to=["partner@supplier.example.com"]))
    chain.send(["someone@gmail.com"], make_message(body=NINO_BODY, to=["someone@gmail.com"]))
    assert chain.queue_empty(), chain.explain()  # both handed on, nothing deferred or left behind
    assert len(sink.messages) == 2, chain.explain()

    (delivered,) = sink.to("partner@supplier.example.com")
    assert delivered.mail_from == SENDER and delivered.rcpt_tos == ["partner@supplier.example.com"]
    message = delivered.message
    assert DISCLAIMER in message.get_body(("plain",)).get_content()
    assert "Tuesday's meeting" in message.get_body(("plain",)).get_content()
    assert message["X-DLP-Verdict"] == "deliver"
    # Through Postfix twice (front port, then reinjection), with the gateway in between.
    received = message.get_all("Received")
    assert len(postfix_received(delivered.data)) == 2
    assert any("(dlp-gateway) with LMTP" in r for r in received)

    assert sink.to("someone@gmail.com") == []
    (bounce,) = sink.bounces_to(SENDER)  # the gateway's bounce only: Postfix bounced nothing itself
    assert bounce.rcpt_tos == [SENDER]
    assert POSTMASTER in bounce.message["From"]
    assert bounce.message.get_content_type() == "multipart/report"
    human = bounce.message.get_body(("plain",)).get_content()
    assert "National Insurance number" in human and "someone@gmail.com" in human
    assert "AB 12 34 56 C" not in bounce.data.decode("utf-8", "replace")

    decisions = {r["recipients"][0]["address"]: r for r in chain.gateway.audit()}
    assert decisions["partner@supplier.example.com"]["verdict"] == "deliver"
    assert decisions["someone@gmail.com"]["recipients"][0]["action"] == "reject"
    assert {r["protocol"] for r in decisions.values()} == {"LMTP"}
    log = chain.postfix.log()
    assert f"relay=127.0.0.1[127.0.0.1]:{chain.gateway.lmtp_port}" in log  # dlp-filter spoke to the gateway


def _deferred_for(chain: Chain, address: str, reason: str) -> Callable[[], bool]:
    def check() -> bool:
        for message in chain.postfix.queue():
            for rcpt in message.recipients:
                if rcpt["address"] == address and reason in rcpt.get("delay_reason", ""):
                    return message.queue_name == "deferred"
        return False

    return check


def test_deliver_tls_mail_leaves_postfix_only_over_verified_tls(
    chain_factory: Callable[..., Chain], sink: Sink, tls_sink: Sink, test_ca: CA
) -> None:
    # The partner's server at first offers no TLS, then a certificate that does not
    # verify, then one that does, all on the same port: the tls_sink's.
    port = tls_sink.port
    tls_sink.stop()
    partner: Sink = Sink(port=port).start()
    chain = chain_factory(sink, secure_nexthop=f"[127.0.0.1]:{port}")
    rcpts = ["colleague@council.example.gov.uk", "gp.practice@nhs.net"]
    try:
        chain.send(rcpts, make_message(body=NINO_BODY, to=rcpts))
        # The internal recipient is delivered at once through the ordinary reinjection port ...
        (internal,) = sink.wait_for(1)
        assert internal.rcpt_tos == ["colleague@council.example.gov.uk"]
        # ... the trusted one waits in Postfix's queue: no STARTTLS, no delivery in plaintext.
        assert wait_until(_deferred_for(chain, "gp.practice@nhs.net", "TLS is required"), 30), chain.explain()
        assert partner.messages == []

        partner.stop()
        partner = Sink(port=port, cert=test_ca.untrusted_cert_file, key=test_ca.untrusted_key_file).start()
        chain.postfix.flush()
        assert wait_until(_deferred_for(chain, "gp.practice@nhs.net", "certificate not verified"), 30), \
            chain.explain()
        assert partner.messages == []
    finally:
        partner.stop()

    tls_sink.start()  # the certificate now verifies against dlp_secure_CAfile
    chain.postfix.flush()
    (secure,) = tls_sink.wait_for(1)
    assert secure.tls and secure.rcpt_tos == ["gp.practice@nhs.net"] and secure.mail_from == SENDER
    assert secure.message["X-DLP-Verdict"] == "deliver_tls"
    assert chain.queue_empty(), chain.explain()
    assert sink.to("gp.practice@nhs.net") == [] and len(sink.messages) == 1
    # It left through the dlp-verify transport, to the secure next hop.
    assert re.search(rf"postfix/dlp-verify/smtp\[\d+\]: \w+: to=<gp.practice@nhs.net>, "
                     rf"relay=127.0.0.1\[127.0.0.1\]:{port},.* status=sent", chain.postfix.log()), chain.explain()
    (decision,) = chain.gateway.audit()
    assert {r["address"]: r["action"] for r in decision["recipients"]} == {
        "colleague@council.example.gov.uk": "deliver", "gp.practice@nhs.net": "deliver_tls"}


def test_mail_waits_in_postfix_while_the_gateway_is_down(chain_factory: Callable[..., Chain], sink: Sink) -> None:
    chain = chain_factory(sink)
    chain.gateway.stop()
    chain.send(["partner@supplier.example.com"], make_message(to=["partner@supplier.example.com"]))
    refused = f"connect to 127.0.0.1[127.0.0.1]:{chain.gateway.lmtp_port}: Connection refused"
    assert wait_until(_deferred_for(chain, "partner@supplier.example.com", refused), 30), chain.explain()
    assert sink.messages == []  # not delivered unfiltered
    chain.gateway.start()
    chain.postfix.flush()
    (delivered,) = sink.wait_for(1)
    assert delivered.message["X-DLP-Verdict"] == "deliver"
    assert chain.queue_empty(), chain.explain()
