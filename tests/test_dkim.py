"""DKIM: keys made by keygen, signatures verified with dkimpy against the record keygen prints (a DNS stub)."""

from __future__ import annotations

import os
import random
import re
import stat
from collections.abc import Callable
from pathlib import Path

import dkim
import pytest

from gateway.config import ConfigError
from gateway.disclaimer import load_disclaimer
from gateway.dkim import (
    ED25519_SHA256, DkimError, DkimSigner, cmd_dkim_keygen, keygen, sign, txt_value,
)

DOMAIN = "council.example.gov.uk"
OTHER = "schools.example.gov.uk"


@pytest.fixture(scope="module")
def keydir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dkim") / "keys"


@pytest.fixture(scope="module")
def rsa_key(keydir: Path) -> tuple[Path, str]:
    return keygen(DOMAIN, "s2025", keydir)


@pytest.fixture(scope="module")
def other_key(keydir: Path) -> tuple[Path, str]:
    return keygen(OTHER, "s2025", keydir)


def dns(*records: str) -> Callable[..., bytes | None]:
    """A resolver that knows only the given zone lines, as dkimpy's dnsfunc."""
    table = {r.split()[0].encode(): txt_value(r) for r in records}
    return lambda name, timeout=5: table.get(name)


def tags(signed: bytes) -> dict[str, str]:
    header = re.match(rb"DKIM-Signature:(.*?)\r\n(?![ \t])", signed, re.S)
    assert header, signed[:200]
    value = re.sub(r"\s+", "", header.group(1).decode())
    return dict(t.split("=", 1) for t in value.split(";") if t)


# --- keygen ---------------------------------------------------------------------------------

def test_keygen_writes_a_key_only_its_owner_can_read_in_a_private_directory(rsa_key: tuple[Path, str],
                                                                            keydir: Path) -> None:
    path, _ = rsa_key
    assert path == keydir / f"{DOMAIN}.s2025.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(keydir.stat().st_mode) == 0o700
    assert path.read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    assert load_pem_private_key(path.read_bytes(), None).key_size == 2048  # type: ignore[union-attr]


def test_keygen_leaves_an_existing_directory_mode_alone(tmp_path: Path) -> None:
    tmp_path.chmod(0o750)
    path, _ = keygen(DOMAIN, "s1", tmp_path)
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o750 and stat.S_IMODE(path.stat().st_mode) == 0o600


def test_keygen_record_is_a_zone_line_in_strings_of_at_most_255(rsa_key: tuple[Path, str]) -> None:
    _, record = rsa_key
    assert record.startswith(f"s2025._domainkey.{DOMAIN}. IN TXT \"v=DKIM1; k=rsa; p=MII")
    strings = re.findall(r'"([^"]*)"', record)
    assert len(strings) == 2 and all(len(s) <= 255 for s in strings)
    assert record == f"s2025._domainkey.{DOMAIN}. IN TXT " + " ".join(f'"{s}"' for s in strings)


def test_keygen_never_overwrites_a_key(rsa_key: tuple[Path, str], keydir: Path) -> None:
    path, _ = rsa_key
    before = path.read_bytes()
    with pytest.raises(FileExistsError):
        keygen(DOMAIN, "s2025", keydir)
    assert path.read_bytes() == before


@pytest.mark.parametrize(("domain", "selector"), [("council", "s1"), ("-bad.example", "s1"),
                                                  ("council.example.gov.uk", "s 1"), ("a@b.example", "s1")])
def test_keygen_refuses_names_that_are_not_dns_names(tmp_path: Path, domain: str, selector: str) -> None:
    with pytest.raises(ValueError):
        keygen(domain, selector, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_keygen_command_says_where_the_key_is_what_to_publish_and_what_next(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cmd_dkim_keygen(DOMAIN, "s2026", tmp_path / "dkim") == 0
    out = capsys.readouterr().out
    key = (tmp_path / "dkim" / f"{DOMAIN}.s2026.key").resolve()
    assert str(key) in out and f's2026._domainkey.{DOMAIN}. IN TXT "v=DKIM1; k=rsa; p=' in out
    assert f"dig +short TXT s2026._domainkey.{DOMAIN}" in out
    assert f'{DOMAIN}: {{selector: "s2026", key_file: "{key}"}}' in out

    assert cmd_dkim_keygen(DOMAIN, "s2026", tmp_path / "dkim") == 1
    err = capsys.readouterr().err
    assert "already exists" in err and "new selector" in err
    assert cmd_dkim_keygen("not a domain", "s1", tmp_path) == 1
    assert "is not a domain name" in capsys.readouterr().err


# --- sign -----------------------------------------------------------------------------------

def test_a_signed_message_verifies_against_the_published_record(message: Callable[..., bytes],
                                                                rsa_key: tuple[Path, str]) -> None:
    path, record = rsa_key
    signed = sign(message(), DOMAIN, "s2025", path.read_bytes())
    assert signed.startswith(b"DKIM-Signature: ")
    assert dkim.verify(signed, dnsfunc=dns(record))
    assert not dkim.verify(signed, dnsfunc=dns(keygen(DOMAIN, "elsewhere", path.parent)[1].replace(
        "elsewhere", "s2025", 1)))  # someone else's key under our selector


def test_the_signature_is_relaxed_and_protects_what_a_reader_sees(message: Callable[..., bytes],
                                                                   rsa_key: tuple[Path, str]) -> None:
    path, _ = rsa_key
    raw = b"X-DLP-Verdict: deliver\r\nX-DLP-Reference: abc\r\n" + message(cc=["c@supplier.example.com"])
    t = tags(sign(raw, DOMAIN, "s2025", path.read_bytes()))
    assert (t["a"], t["c"], t["d"], t["s"]) == ("rsa-sha256", "relaxed/relaxed", DOMAIN, "s2025")
    signed = t["h"].split(":")
    assert signed.count("from") == 2 and signed.count("subject") == 2 and signed.count("reply-to") == 1
    assert signed.count("to") == 2 and signed.count("cc") == 2 and signed.count("message-id") == 2
    assert {"mime-version", "content-type", "content-transfer-encoding"} <= set(signed)
    assert not any(h.startswith("x-dlp") for h in signed) and "date" not in signed  # no Date: in this message


def test_a_message_signed_after_the_disclaimer_verifies(message: Callable[..., bytes],
                                                        rsa_key: tuple[Path, str]) -> None:
    path, record = rsa_key
    raw = message(attachments=[("minutes.pdf", b"%PDF-1.4\n" + bytes(range(256)) * 40, "application/pdf")])
    with_disclaimer = load_disclaimer(organisation="Anytown Borough Council").apply(raw)
    assert with_disclaimer.added
    signed = sign(with_disclaimer.raw, DOMAIN, "s2025", path.read_bytes())
    assert dkim.verify(signed, dnsfunc=dns(record))
    # What Dispatcher.outgoing prepends afterwards (trace and verdict) is not signed and breaks nothing.
    relayed = (b"Received: from gateway.test by mx.test; Tue, 4 Mar 2025 10:15:00 +0000\r\n"
               b"X-DLP-Verdict: deliver\r\nX-DLP-Reference: abc\r\n" + signed)
    assert dkim.verify(relayed, dnsfunc=dns(record))


def test_changing_the_body_afterwards_breaks_the_signature(message: Callable[..., bytes],
                                                           rsa_key: tuple[Path, str]) -> None:
    path, record = rsa_key
    signed = sign(message(body="Pay invoice 1234 to sort code 12-34-56."), DOMAIN, "s2025", path.read_bytes())
    assert dkim.verify(signed, dnsfunc=dns(record))
    assert not dkim.verify(signed.replace(b"12-34-56", b"65-43-21"), dnsfunc=dns(record))
    assert not dkim.verify(signed + b"P.S. one more line\r\n", dnsfunc=dns(record))


def test_added_or_changed_headers_a_reader_sees_break_it_but_refolding_does_not(
        message: Callable[..., bytes], rsa_key: tuple[Path, str]) -> None:
    path, record = rsa_key
    signed = sign(message(subject="Minutes of the meeting"), DOMAIN, "s2025", path.read_bytes())
    head, _, body = signed.partition(b"\r\n\r\n")
    for extra in (b"From: Boss <ceo@council.example.gov.uk>", b"Subject: Urgent: change of bank details",
                  b"Reply-To: attacker@example.net"):
        assert not dkim.verify(head + b"\r\n" + extra + b"\r\n\r\n" + body, dnsfunc=dns(record)), extra
    refolded = signed.replace(b"Subject: Minutes of the meeting", b"Subject:  Minutes of\r\n\tthe   meeting")
    assert dkim.verify(refolded, dnsfunc=dns(record))


def test_lf_line_endings_sign_and_verify(message: Callable[..., bytes], rsa_key: tuple[Path, str]) -> None:
    path, record = rsa_key
    signed = sign(message().replace(b"\r\n", b"\n"), DOMAIN, "s2025", path.read_bytes())
    assert b"\r" not in signed and dkim.verify(signed, dnsfunc=dns(record))


def test_ed25519_signatures_verify(message: Callable[..., bytes], tmp_path: Path) -> None:
    pytest.importorskip("nacl", reason="dkimpy needs PyNaCl for Ed25519")
    path, record = keygen(DOMAIN, "e2025", tmp_path, algorithm=ED25519_SHA256)
    assert "k=ed25519; p=" in record and stat.S_IMODE(path.stat().st_mode) == 0o600
    signed = sign(message(), DOMAIN, "e2025", path.read_bytes(), algorithm=ED25519_SHA256)
    assert tags(signed)["a"] == "ed25519-sha256" and dkim.verify(signed, dnsfunc=dns(record))
    assert DkimSigner.from_table({DOMAIN: ("e2025", path)}).sign(message()).domain == DOMAIN


def test_sign_refuses_a_key_of_another_algorithm_or_no_key(message: Callable[..., bytes],
                                                           rsa_key: tuple[Path, str]) -> None:
    path, _ = rsa_key
    with pytest.raises(DkimError, match="rsa-sha256, not ed25519-sha256"):
        sign(message(), DOMAIN, "s2025", path.read_bytes(), algorithm=ED25519_SHA256)
    with pytest.raises(DkimError, match="not a PEM private key"):
        sign(message(), DOMAIN, "s2025", b"hello")


# --- the signer built from configuration ----------------------------------------------------------

def test_the_signer_chooses_the_key_by_the_from_domain(message: Callable[..., bytes], rsa_key: tuple[Path, str],
                                                       other_key: tuple[Path, str]) -> None:
    signer = DkimSigner.from_table({DOMAIN: ("s2025", rsa_key[0]), OTHER: ("s2025", other_key[0])})
    result = signer.sign(message(sender=f"head@{OTHER}"))
    assert result.domain == OTHER and tags(result.raw)["d"] == OTHER
    assert dkim.verify(result.raw, dnsfunc=dns(other_key[1]))


def test_a_subdomain_is_signed_with_its_parents_key(message: Callable[..., bytes], rsa_key: tuple[Path, str]) -> None:
    signer = DkimSigner.from_table({DOMAIN: ("s2025", rsa_key[0])})
    result = signer.sign(message(sender=f"alerts@housing.{DOMAIN}"))
    assert result.domain == DOMAIN and dkim.verify(result.raw, dnsfunc=dns(rsa_key[1]))


def test_a_domain_without_a_key_goes_unsigned(message: Callable[..., bytes], rsa_key: tuple[Path, str]) -> None:
    signer = DkimSigner.from_table({DOMAIN: ("s2025", rsa_key[0])})
    raw = message(sender="someone@example.gov.uk")
    result = signer.sign(raw)
    assert (result.raw, result.domain, result.reason) == (raw, None, "no DKIM key for example.gov.uk")
    assert not DkimSigner.from_table({})


def test_keys_are_read_once(message: Callable[..., bytes], tmp_path: Path) -> None:
    path, record = keygen(DOMAIN, "once", tmp_path)
    signer = DkimSigner.from_table({DOMAIN: ("once", path)})
    path.unlink()
    assert dkim.verify(signer.sign(message()).raw, dnsfunc=dns(record))


def test_bad_key_files_are_configuration_errors_naming_the_file(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    garbage = tmp_path / "garbage.key"
    garbage.write_text("-----BEGIN RSA PRIVATE KEY-----\nnot a key\n-----END RSA PRIVATE KEY-----\n")
    locked = tmp_path / "locked.key"
    locked.write_bytes(rsa.generate_private_key(65537, 2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret")))
    curve = tmp_path / "ec.key"
    curve.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    missing = tmp_path / "missing.key"
    table = {"a.example": ("s1", missing), "b.example": ("s1", garbage), "c.example": ("s1", locked),
             "d.example": ("s1", curve)}
    with pytest.raises(ConfigError) as caught:
        DkimSigner.from_table(table)
    problems = caught.value.problems
    assert len(problems) == 4
    assert problems[0].startswith(f"dkim.domains.a.example.key_file: cannot read the DKIM key file {missing}")
    assert f"{garbage} is not a usable PEM private key" in problems[1]
    assert f"{locked} is protected by a passphrase" in problems[2]
    assert f"{curve} is a" in problems[3] and "DKIM needs an RSA or Ed25519 key" in problems[3]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_key_file_says_so(tmp_path: Path) -> None:
    path, _ = keygen(DOMAIN, "s1", tmp_path)
    path.chmod(0)
    with pytest.raises(ConfigError, match="Permission denied.*readable by the user the gateway runs as"):
        DkimSigner.from_table({DOMAIN: ("s1", path)})


def test_the_signer_never_raises_on_what_it_is_given(message: Callable[..., bytes],
                                                     rsa_key: tuple[Path, str]) -> None:
    signer = DkimSigner.from_table({DOMAIN: ("s2025", rsa_key[0])})
    rng = random.Random(4)
    samples = [b"", b"\r\n", b"From: \r\n\r\n", f"From: a@{DOMAIN}, b@{OTHER}\r\n\r\nx\r\n".encode(),
               f"From: a@{DOMAIN}\r\nbroken header line\r\n\r\nbody\r\n".encode()]
    samples += [f"From: a@{DOMAIN}\r\n".encode() + rng.randbytes(rng.randrange(1, 2000)) for _ in range(100)]
    for sample in samples:
        result = signer.sign(sample)
        assert result.domain or (result.raw == sample and result.reason)
    assert signer.sign(samples[3]).reason == "no single From: domain"
