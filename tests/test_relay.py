"""The relay end to end: real SMTP and LMTP clients, a gateway process, a real sink."""

from __future__ import annotations

import re
import smtplib
import subprocess
import time
import socket
from typing import Callable

import pytest

from tests.conftest import SENDER, make_message
from tests.support import BIN, GatewayProcess, Sink, smtp_route, wait_until

NINO_BODY = "Hi,\n\nHer National Insurance number is AB 12 34 56 C, as discussed.\n\nJane"


def test_benign_mail_is_delivered_to_the_next_hop(gateway: GatewayProcess, sink: Sink) -> None:
    raw = make_message(to=["partner@supplier.example.com"])
    with gateway.smtp() as client:
        refused = client.sendmail(SENDER, ["partner@supplier.example.com"], raw)
    assert refused == {}
    (received,) = sink.wait_for(1)
    assert received.rcpt_tos == ["partner@supplier.example.com"]
    assert received.mail_from == SENDER
    # The original headers travel on unchanged behind the gateway's trace headers (the body gains the disclaimer).
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert head in received.data
    assert "Tuesday's meeting" in received.message.get_body(("plain",)).get_content()
    assert received.message["X-DLP-Verdict"] == "deliver"
    (record,) = gateway.audit()
    assert record["verdict"] == "deliver"
    assert record["recipients"][0]["result"].startswith("250")


def test_nino_to_a_personal_address_is_rejected_with_a_bounce_to_the_sender(
    gateway: GatewayProcess, sink: Sink
) -> None:
    raw = make_message(body=NINO_BODY, to=["someone@gmail.com"])
    with gateway.smtp() as client:
        client.sendmail(SENDER, ["someone@gmail.com"], raw)
    (bounce,) = sink.wait_for(1)
    assert sink.to("someone@gmail.com") == []
    assert bounce.mail_from in ("", "<>") and bounce.rcpt_tos == [SENDER]  # the null sender
    report = bounce.message
    assert report.get_content_type() == "multipart/report"
    parts = [p.get_content_type() for p in report.iter_parts()]
    assert parts == ["multipart/alternative", "message/delivery-status", "text/rfc822-headers"]
    human = report.get_body(("plain",)).get_content()
    assert "National Insurance number" in human
    assert "someone@gmail.com" in human and "personal email account" in human
    assert "AB 12 34 56 C" not in bounce.data.decode("utf-8", "replace")
    assert "AB123456C" not in bounce.data.decode("utf-8", "replace")
    (record,) = gateway.audit()
    assert record["recipients"][0]["action"] == "reject"
    assert "AB 12 34 56 C" not in (gateway.workdir / "var" / "audit.log").read_text()


def test_mixed_recipients_each_get_their_own_outcome_over_lmtp(
    gateway_factory, sink: Sink, tls_sink: Sink, test_ca
) -> None:
    gw = gateway_factory({"routes": {"relay": smtp_route(sink),
                                     "secure": smtp_route(tls_sink, "verify", test_ca.ca_file)}})
    rcpts = ["colleague@council.example.gov.uk", "gp.practice@nhs.net", "someone@gmail.com",
             "partner@supplier.example.com"]
    raw = make_message(body=NINO_BODY, to=rcpts)
    client = gw.lmtp()
    replies = client.send(SENDER, rcpts, raw)
    client.close()
    assert [code for code, _ in replies] == [250, 250, 250, 250]
    assert "delivered" in replies[0][1]
    assert "delivered" in replies[1][1]
    assert "refused by policy" in replies[2][1]
    assert "refused by policy" in replies[3][1]
    internal = sink.wait_for(2)
    assert [m.rcpt_tos for m in internal if m.mail_from == SENDER] == [["colleague@council.example.gov.uk"]]
    (secure,) = tls_sink.wait_for(1)
    assert secure.rcpt_tos == ["gp.practice@nhs.net"] and secure.tls
    (bounce,) = sink.bounces_to(SENDER)
    assert b"someone@gmail.com" in bounce.data and b"partner@supplier.example.com" in bounce.data
    actions = {r["address"]: (r["class"], r["action"]) for r in gw.audit()[0]["recipients"]}
    assert actions == {
        "colleague@council.example.gov.uk": ("internal", "deliver"),
        "gp.practice@nhs.net": ("trusted", "deliver_tls"),
        "someone@gmail.com": ("personal", "reject"),
        "partner@supplier.example.com": ("external", "reject"),
    }


def test_secret_marking_is_held_in_quarantine_and_released_through_the_cli(
    gateway: GatewayProcess, sink: Sink
) -> None:
    raw = make_message(subject="SECRET: operation details", to=["partner@supplier.example.com"])
    with gateway.smtp() as client:
        client.sendmail(SENDER, ["partner@supplier.example.com", "colleague@council.example.gov.uk"], raw)
    sink.wait_for(1)
    assert [m.rcpt_tos for m in sink.messages if m.mail_from == SENDER] == [["colleague@council.example.gov.uk"]]
    listing = gateway.cli("quarantine", "list", "--json")
    assert listing.returncode == 0, listing.stderr
    import json

    (held,) = [json.loads(line) for line in listing.stdout.splitlines()]
    assert held["rules"] == ["secret-marking"]
    assert held["recipients"][0]["address"] == "partner@supplier.example.com"
    assert list((gateway.workdir / "var" / "quarantine").glob("*.eml"))
    missing_reason = gateway.cli("quarantine", "release", held["id"])
    assert missing_reason.returncode != 0 and "--reason" in missing_reason.stderr
    released = gateway.cli("quarantine", "release", held["id"], "--reason", "checked with the sender",
                           "--actor", "sec-team")
    assert released.returncode == 0, released.stderr
    sink.wait_for(2)
    assert sink.to("partner@supplier.example.com")
    shown = json.loads(gateway.cli("quarantine", "show", held["id"]).stdout)
    assert shown["status"] == "released"
    assert [(e["action"], e["actor"]) for e in shown["events"]] == [("held", "gateway"), ("released", "sec-team")]
    assert shown["events"][1]["reason"] == "checked with the sender"


def test_deliver_tls_without_starttls_at_the_next_hop_defers_then_delivers_once_tls_is_there(
    gateway_factory, sink: Sink, test_ca
) -> None:
    plain_secure = Sink().start()
    port = plain_secure.port
    gw = gateway_factory({"routes": {"relay": smtp_route(sink),
                                     "secure": f"smtp://127.0.0.1:{port}?tls=verify&ca={test_ca.ca_file}"}})
    raw = make_message(body=NINO_BODY, to=["gp.practice@nhs.net"])
    with gw.smtp() as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail(SENDER, ["gp.practice@nhs.net"], raw)
    assert 400 <= refused.value.smtp_code < 500
    assert b"TLS" in refused.value.smtp_error
    assert plain_secure.messages == []  # never sent in plaintext
    plain_secure.stop()
    tls_sink = Sink(port=port, cert=test_ca.cert_file, key=test_ca.key_file).start()
    try:
        with gw.smtp() as client:  # the upstream MTA's retry
            assert client.sendmail(SENDER, ["gp.practice@nhs.net"], raw) == {}
        (received,) = tls_sink.wait_for(1)
        assert received.tls and received.rcpt_tos == ["gp.practice@nhs.net"]
    finally:
        tls_sink.stop()


def test_a_next_hop_certificate_that_does_not_verify_defers(gateway_factory, sink: Sink, test_ca) -> None:
    rogue = Sink(cert=test_ca.untrusted_cert_file, key=test_ca.untrusted_key_file).start()
    try:
        gw = gateway_factory({"routes": {"relay": smtp_route(sink),
                                         "secure": smtp_route(rogue, "verify", test_ca.ca_file)}})
        with gw.smtp() as client:
            with pytest.raises(smtplib.SMTPDataError) as refused:
                client.sendmail(SENDER, ["gp.practice@nhs.net"], make_message(body=NINO_BODY))
        assert 400 <= refused.value.smtp_code < 500
        assert rogue.messages == []
    finally:
        rogue.stop()


def test_next_hop_down_gives_4xx_and_the_retry_arrives_once_it_is_back(gateway_factory) -> None:
    down = Sink()  # port chosen, server not started
    gw = gateway_factory({"routes": {"relay": smtp_route(down), "secure": smtp_route(down)}})
    raw = make_message()
    with gw.smtp() as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail(SENDER, ["partner@supplier.example.com"], raw)
    assert 400 <= refused.value.smtp_code < 500
    lmtp = gw.lmtp()
    assert [code for code, _ in lmtp.send(SENDER, ["partner@supplier.example.com"], raw)] == [451]
    lmtp.close()
    down.start()
    try:
        with gw.smtp() as client:
            assert client.sendmail(SENDER, ["partner@supplier.example.com"], raw) == {}
        assert len(down.wait_for(1)) == 1
    finally:
        down.stop()


def test_gateway_killed_in_the_middle_of_data_loses_nothing(gateway: GatewayProcess, sink: Sink) -> None:
    raw = make_message(body="Quarterly figures attached.\n" * 200)
    client = gateway.smtp()
    client.ehlo()
    client.mail(SENDER)
    client.rcpt("partner@supplier.example.com")
    client.putcmd("data")
    assert client.getreply()[0] == 354
    client.send(raw[: len(raw) // 2])
    gateway.kill()
    with pytest.raises((smtplib.SMTPServerDisconnected, ConnectionError, OSError)):
        client.send(raw[len(raw) // 2:] + b"\r\n.\r\n")
        code, _ = client.getreply()
        raise smtplib.SMTPServerDisconnected(f"reply {code}")
    client.close()
    assert sink.messages == []
    gateway.start()
    with gateway.smtp() as retry:
        assert retry.sendmail(SENDER, ["partner@supplier.example.com"], raw) == {}
    assert len(sink.wait_for(1)) == 1


def test_client_outside_allowed_networks_is_refused(gateway_factory, sink: Sink) -> None:
    gw = gateway_factory({"server": {"allowed_networks": ["127.0.0.1/32"]},
                          "routes": {"relay": smtp_route(sink), "secure": smtp_route(sink)}})
    with socket.create_connection(("127.0.0.1", gw.smtp_port), source_address=("127.0.0.2", 0), timeout=10) as s:
        greeting = s.recv(1024)
    assert greeting.startswith(b"554 5.7.1")
    assert b"allowed_networks" in greeting
    with gw.smtp() as client:  # 127.0.0.1 itself is still welcome
        assert client.sendmail(SENDER, ["partner@supplier.example.com"], make_message()) == {}


def test_oversized_message_gets_552(gateway_factory, sink: Sink) -> None:
    gw = gateway_factory({"server": {"max_message_size": 20000},
                          "routes": {"relay": smtp_route(sink), "secure": smtp_route(sink)}})
    big = make_message(body=("y" * 70 + "\n") * 400)
    with gw.smtp() as client:
        client.ehlo()
        assert client.esmtp_features["size"] == "20000"
        assert client.sendmail(SENDER, ["partner@supplier.example.com"], make_message()) == {}
        # A client that declares the size is refused at MAIL FROM ...
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.sendmail(SENDER, ["partner@supplier.example.com"], big)
        assert refused.value.smtp_code == 552
        # ... and one that does not is refused after DATA.
        client.mail(SENDER)
        client.rcpt("partner@supplier.example.com")
        code, _ = client.data(big)
        assert code == 552
    assert len(sink.wait_for(1)) == 1


def test_smuggled_end_of_data_does_not_split_the_message(gateway: GatewayProcess, sink: Sink) -> None:
    smuggled = (
        b"From: " + SENDER.encode() + b"\r\nTo: partner@supplier.example.com\r\nSubject: one\r\n\r\n"
        b"first part\n.\r\nMAIL FROM:<evil@attacker.example>\r\nRCPT TO:<victim@gmail.com>\r\nDATA\r\n"
        b"Subject: smuggled\r\n\r\nsecond\r\n.\r\n"
    )
    with socket.create_connection(("127.0.0.1", gateway.smtp_port), timeout=30) as s:
        f = s.makefile("rb")
        f.readline()
        for line in (b"EHLO client.test\r\n",):
            s.sendall(line)
        while not f.readline().startswith(b"250 "):
            pass
        s.sendall(b"MAIL FROM:<" + SENDER.encode() + b">\r\n")
        assert f.readline().startswith(b"250")
        s.sendall(b"RCPT TO:<partner@supplier.example.com>\r\n")
        assert f.readline().startswith(b"250")
        s.sendall(b"DATA\r\n")
        assert f.readline().startswith(b"354")
        s.sendall(smuggled)
        assert f.readline().startswith(b"250")
        s.sendall(b"QUIT\r\n")
        # Had the data been split, the smuggled transaction would be answered (and relayed) before QUIT.
        assert f.readline().startswith(b"221")
    assert len(sink.messages) == 1
    (received,) = sink.messages
    assert received.rcpt_tos == ["partner@supplier.example.com"]
    assert b"evil@attacker.example" in received.data  # carried as text of the one message
    assert sink.to("victim@gmail.com") == []


def test_bare_lf_in_a_command_is_refused(gateway: GatewayProcess) -> None:
    with socket.create_connection(("127.0.0.1", gateway.smtp_port), timeout=30) as s:
        f = s.makefile("rb")
        f.readline()
        s.sendall(b"EHLO client.test\n")
        assert f.readline().startswith(b"500 5.5.2")
        s.sendall(b"EHLO client.test\r\nMAIL FROM:<a@b.example>\rRCPT TO:<c@d.example>\r\n")
        while not (line := f.readline()).startswith(b"250 "):
            pass
        assert f.readline().startswith(b"500 5.5.2")


def test_too_many_recipients_get_452(gateway_factory, sink: Sink) -> None:
    gw = gateway_factory({"server": {"max_recipients": 2},
                          "routes": {"relay": smtp_route(sink), "secure": smtp_route(sink)}})
    with gw.smtp() as client:
        client.ehlo()
        client.mail(SENDER)
        assert client.rcpt("a@supplier.example.com")[0] == 250
        assert client.rcpt("b@supplier.example.com")[0] == 250
        code, msg = client.rcpt("c@supplier.example.com")
    assert code == 452 and b"4.5.3" in msg


def test_idle_client_is_disconnected(gateway_factory, sink: Sink) -> None:
    gw = gateway_factory({"server": {"idle_timeout": 0.5},
                          "routes": {"relay": smtp_route(sink), "secure": smtp_route(sink)}})
    with socket.create_connection(("127.0.0.1", gw.smtp_port), timeout=30) as s:
        assert s.recv(1024).startswith(b"220")
        # The server closes the connection: recv returns b"" (it never answers silence).
        assert s.recv(1024) == b""


def test_null_sender_refusal_gets_no_bounce_and_a_550(gateway: GatewayProcess, sink: Sink) -> None:
    raw = make_message(body=NINO_BODY, to=["someone@gmail.com"])
    with gateway.smtp() as client:
        with pytest.raises(smtplib.SMTPDataError) as refused:
            client.sendmail("<>", ["someone@gmail.com"], raw)
    assert refused.value.smtp_code == 550
    assert sink.messages == []


def test_smtputf8_and_8bitmime_pass_through_unchanged(gateway: GatewayProcess, sink: Sink) -> None:
    body = "Grüße aus Köln — the café list is attached. 日本語".encode()
    raw = (b"From: Zo\xc3\xab <zo\xc3\xab@council.example.gov.uk>\r\nTo: j\xc3\xb8rgen@council.example.gov.uk\r\n"
           b"Subject: caf\xc3\xa9\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
           b"Content-Transfer-Encoding: 8bit\r\n\r\n" + body + b"\r\n")
    with gateway.smtp() as client:
        client.ehlo()
        assert client.has_extn("smtputf8") and client.has_extn("8bitmime")
        assert client.sendmail("zoë@council.example.gov.uk", ["jørgen@council.example.gov.uk"], raw,
                               mail_options=["SMTPUTF8", "BODY=8BITMIME"]) == {}
    (received,) = sink.wait_for(1)
    assert received.rcpt_tos == ["jørgen@council.example.gov.uk"]
    assert "SMTPUTF8" in received.mail_options and "BODY=8BITMIME" in received.mail_options
    assert received.data.endswith(raw)


def test_inbound_starttls_with_a_configured_certificate(gateway_factory, sink: Sink, test_ca) -> None:
    gw = gateway_factory({"server": {"tls_cert": str(test_ca.cert_file), "tls_key": str(test_ca.key_file),
                                     "require_tls": True},
                          "routes": {"relay": smtp_route(sink), "secure": smtp_route(sink)}})
    with gw.smtp() as client:
        client.ehlo()
        assert client.has_extn("starttls")
        code, _ = client.mail(SENDER)
        assert code == 530  # require_tls: no mail before STARTTLS
        import ssl

        client.starttls(context=ssl.create_default_context(cafile=str(test_ca.ca_file)))
        client.ehlo()
        assert client.sendmail(SENDER, ["partner@supplier.example.com"], make_message()) == {}
    assert len(sink.wait_for(1)) == 1


def test_next_hop_refusing_one_recipient_over_lmtp_passes_its_reply_back(gateway: GatewayProcess, sink: Sink) -> None:
    sink.handler.refuse["nobody@supplier.example.com"] = "550 5.1.1 no such user"
    lmtp = gateway.lmtp()
    replies = lmtp.send(SENDER, ["partner@supplier.example.com", "nobody@supplier.example.com"], make_message())
    lmtp.close()
    assert replies[0][0] == 250
    assert replies[1][0] == 550 and "no such user" in replies[1][1]


def test_next_hop_refusing_one_recipient_over_smtp_bounces_it(gateway: GatewayProcess, sink: Sink) -> None:
    sink.handler.refuse["nobody@supplier.example.com"] = "550 5.1.1 no such user"
    with gateway.smtp() as client:
        assert client.sendmail(SENDER, ["partner@supplier.example.com", "nobody@supplier.example.com"],
                               make_message()) == {}
    wait_until(lambda: len(sink.messages) >= 2)
    (bounce,) = sink.bounces_to(SENDER)
    assert b"nobody@supplier.example.com" in bounce.data and b"no such user" in bounce.data


def test_deliver_tls_uses_requiretls_where_the_next_hop_offers_it(gateway_factory, sink: Sink, test_ca) -> None:
    tls_sink = Sink(cert=test_ca.cert_file, key=test_ca.key_file)
    tls_sink.handler.requiretls = True
    tls_sink.start()
    try:
        gw = gateway_factory({"routes": {"relay": smtp_route(sink),
                                         "secure": smtp_route(tls_sink, "verify", test_ca.ca_file)}})
        with gw.smtp() as client:
            assert client.sendmail(SENDER, ["gp@nhs.net"], make_message(body=NINO_BODY),
                                   mail_options=["BODY=8BITMIME"]) == {}
        (received,) = tls_sink.wait_for(1)
        assert received.tls
        assert "REQUIRETLS" in received.mail_options and "BODY=8BITMIME" in received.mail_options
        with gw.smtp() as client:  # ordinary mail to the plain relay carries no REQUIRETLS
            client.sendmail(SENDER, ["partner@supplier.example.com"], make_message())
        assert "REQUIRETLS" not in sink.wait_for(1)[0].mail_options
    finally:
        tls_sink.stop()


def test_a_transaction_that_runs_too_long_is_closed_with_421(gateway_factory, sink: Sink) -> None:
    gw = gateway_factory({"server": {"transaction_timeout": 1},
                          "routes": {"relay": smtp_route(sink), "secure": smtp_route(sink)}})
    client = gw.smtp()
    client.ehlo()
    client.mail(SENDER)
    replies = []
    # The client stays busy (so the idle timeout never fires) but never finishes the transaction.
    for _ in range(300):
        try:
            replies.append(client.noop())
        except smtplib.SMTPServerDisconnected:
            break
        if replies[-1][0] == 421:
            break
        time.sleep(0.1)
    client.close()
    assert replies and replies[-1][0] == 421 and b"4.4.2" in replies[-1][1]


def test_next_hop_sessions_are_reused_and_a_stale_one_is_replaced(gateway: GatewayProcess, sink: Sink) -> None:
    with gateway.smtp() as client:
        for n in range(3):
            assert client.sendmail(SENDER, ["partner@supplier.example.com"], make_message(subject=f"n{n}")) == {}
    assert len(sink.wait_for(3)) == 3
    assert sink.handler.greetings == 1  # one next-hop session carried all three
    # The next hop restarts: the cached session is dead, and the next message must still arrive.
    sink.stop()
    restarted = Sink(port=sink.port).start()
    try:
        with gateway.smtp() as client:
            assert client.sendmail(SENDER, ["partner@supplier.example.com"], make_message(subject="after")) == {}
        (received,) = restarted.wait_for(1)
        assert received.message["Subject"] == "after"
    finally:
        restarted.stop()


def test_external_mail_gets_the_disclaimer_once_and_internal_mail_none(gateway: GatewayProcess, sink: Sink) -> None:
    internal_raw = make_message(to=["colleague@council.example.gov.uk"])
    with gateway.smtp() as client:
        client.sendmail(SENDER, ["partner@supplier.example.com"], make_message(to=["partner@supplier.example.com"]))
        client.sendmail(SENDER, ["colleague@council.example.gov.uk"], internal_raw)
    external, internal = sink.wait_for(2)
    text = external.message.get_body(("plain",)).get_content()
    assert text.count("is monitored and recorded") == 1
    assert "Tuesday's meeting" in text
    # Internal-only mail is passed on byte for byte behind the trace headers.
    assert internal.data.endswith(internal_raw)


def test_delivered_mail_is_dkim_signed_after_the_disclaimer(gateway_factory, sink: Sink, tmp_path) -> None:
    import dkim

    keygen = subprocess.run([str(BIN / "dlp-gateway"), "dkim-keygen", "council.example.gov.uk", "s2026",
                             "--directory", str(tmp_path / "keys")], capture_output=True, text=True, timeout=60)
    assert keygen.returncode == 0, keygen.stderr
    (key_file,) = (tmp_path / "keys").glob("*.key")
    (record,) = [line for line in keygen.stdout.splitlines() if " IN TXT " in line]
    txt = "".join(re.findall(r'"([^"]*)"', record)).encode()
    gw = gateway_factory({"routes": {"relay": smtp_route(sink), "secure": smtp_route(sink)},
                          "dkim": {"domains": {"council.example.gov.uk": {"selector": "s2026",
                                                                          "key_file": str(key_file)}}}})
    with gw.smtp() as client:
        client.sendmail(SENDER, ["partner@supplier.example.com"], make_message())
    (received,) = sink.wait_for(1)
    assert "is monitored and recorded" in received.message.get_body(("plain",)).get_content()

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return txt if name == b"s2026._domainkey.council.example.gov.uk." else b""

    assert dkim.verify(received.data, dnsfunc=dns)


def test_a_message_whose_inspection_overruns_the_time_limit_is_held_not_retried_forever(
    gateway_factory, sink: Sink
) -> None:
    # A contact list whose inspection costs seconds, against a limit of a twentieth of a second.
    contacts = "".join(f"Contact {n},020 7946 {n:04d},{n}@example.org\n" for n in range(40000)).encode()
    gw = gateway_factory({"server": {"inspection_timeout": 0.05},
                          "routes": {"relay": smtp_route(sink), "secure": smtp_route(sink)}})
    rcpts = ["partner@supplier.example.com", "colleague@council.example.gov.uk"]
    lmtp = gw.lmtp()
    replies = lmtp.send(SENDER, rcpts, make_message(attachments=[("contacts.csv", contacts, "text/csv")]))
    lmtp.close()
    assert [code for code, _ in replies] == [250, 250]
    assert "held for review" in replies[0][1]
    sink.wait_for(1)
    (internal,) = [m for m in sink.messages if m.mail_from == SENDER]
    assert internal.rcpt_tos == ["colleague@council.example.gov.uk"]
    (record,) = gw.audit()
    assert record["recipients"][0]["rules"] == ["incomplete-inspection"]


def test_connections_beyond_max_connections_are_told_to_come_back_later(
    gateway_factory: Callable[..., GatewayProcess], sink: Sink
) -> None:
    gw = gateway_factory({"server": {"max_connections": 2},
                          "routes": {"relay": smtp_route(sink), "secure": smtp_route(sink)}})
    first = smtplib.SMTP("127.0.0.1", gw.smtp_port, timeout=30)
    second = smtplib.SMTP("127.0.0.1", gw.lmtp_port, timeout=30)   # both listeners count
    try:
        with socket.create_connection(("127.0.0.1", gw.smtp_port), timeout=30) as s:
            greeting = s.makefile("rb").readline()
        assert greeting.startswith(b"421 4.7.0") and b"too many connections" in greeting
        assert first.noop()[0] == 250
    finally:
        first.close()
        second.close()
    # Once one closes, new clients are served again.
    assert wait_until(lambda: _greeting(gw.smtp_port).startswith(b"220"))


def _greeting(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        return s.makefile("rb").readline()
