"""Configuration: the contract keys of POLICY.md, merging, and errors a person can act on."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from gateway.config import DEFAULTS_FILE, ConfigError, load_config
from tests.support import BIN

CONTRACT = {
    ("server", "smtp_listen"): "127.0.0.1:10025",
    ("server", "lmtp_listen"): "127.0.0.1:10024",
    ("server", "allowed_networks"): ["127.0.0.0/8", "::1/128"],
    ("server", "max_message_size"): 52428800,
    ("admin", "listen"): "127.0.0.1:9101",
    ("routes", "relay"): "maildir:var/outbox",
    ("routes", "secure"): "maildir:var/outbox",
    ("storage", "database_url"): "sqlite:///var/dlp-gateway.db",
    ("storage", "quarantine_dir"): "var/quarantine",
    ("organisation", "internal_domains"): [],
    ("organisation", "trusted_domains"): [],
    ("policy", "bulk_threshold"): 25,
    ("policy", "bcc_threshold"): 10,
}
POLICY_MD_PERSONAL_DOMAINS = (
    "gmail.com googlemail.com hotmail.com hotmail.co.uk outlook.com live.com live.co.uk yahoo.com yahoo.co.uk "
    "icloud.com me.com aol.com protonmail.com proton.me gmx.com btinternet.com sky.com virginmedia.com "
    "talktalk.net mail.com zoho.com yandex.com"
).split()


@pytest.mark.parametrize("key,value", CONTRACT.items(), ids=[".".join(k) for k in CONTRACT])
def test_contract_keys_have_the_defaults_of_policy_md(key: tuple[str, str], value: object) -> None:
    raw = yaml.safe_load(DEFAULTS_FILE.read_text())
    assert raw[key[0]][key[1]] == value


def test_shipped_personal_domains_include_every_one_policy_md_names() -> None:
    domains = load_config().organisation.personal_domains
    assert set(POLICY_MD_PERSONAL_DOMAINS) <= set(domains)
    assert len(domains) > len(POLICY_MD_PERSONAL_DOMAINS)


def test_every_setting_in_default_yaml_has_a_comment() -> None:
    for number, line in enumerate(DEFAULTS_FILE.read_text().splitlines(), 1):
        # A setting with its value on the line, in a section or a sub-section (rules are data, not settings).
        if re.match(r"^ {2,4}[a-z_]+:\s*[^#\s]", line):
            assert "#" in line, f"default.yaml line {number} has no comment: {line!r}"


def test_every_rule_has_a_title_and_guidance() -> None:
    for rule in load_config().policy.rules:
        assert rule.title.strip() and len(rule.guidance) > 40, rule.name


def test_a_file_with_only_internal_domains_is_valid_and_merged_over_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("organisation: {internal_domains: [council.example.gov.uk]}\n")
    config = load_config(path)
    assert config.organisation.internal_domains == ["council.example.gov.uk"]
    assert "gmail.com" in config.organisation.personal_domains
    assert config.server.smtp_listen == "127.0.0.1:10025"


@pytest.mark.parametrize(
    "text,expected",
    [
        ("server: {max_message_size: -5}", "server.max_message_size: Input should be greater than 0"),
        ("server: {smtp_listen: 'nonsense'}", "server.smtp_listen: must be 'host:port'"),
        ("server: {allowed_networks: ['10.0.0.0/33']}", "server.allowed_networks"),
        ("server: {max_messgae_size: 5}", "server.max_messgae_size: unknown key"),
        ("routes: {relay: 'ftp://x'}", "routes.relay: unknown route scheme"),
        ("routes: {secure: 'mx:?tls=none'}", "routes.secure: an mx route"),
        ("storage: {database_url: 'mysql://x'}", "storage.database_url"),
        ("policy: {rules: [{name: r, title: t, when: {bogus_fact: true}, actions: {}, guidance: g}]}",
         "policy.rules.0.when.bogus_fact: unknown key"),
        ("policy: {rules: [{name: r, title: t, when: {personal_data: true}, actions: {internal: burn}, guidance: g}]}",
         "policy.rules.0.actions.internal"),
        ("server: [1, 2", "not valid YAML at line"),
    ],
)
def test_errors_name_the_file_and_the_key(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text + "\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert any(p.startswith(str(path)) and expected in p for p in error.value.problems), error.value.problems


def test_check_config_prints_the_effective_configuration_or_the_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("policy: {bulk_threshold: 50}\n")
    out = subprocess.run([str(BIN / "dlp-gateway"), "check-config", "--config", str(good)],
                         capture_output=True, text=True)
    assert out.returncode == 0
    assert yaml.safe_load(out.stdout)["policy"]["bulk_threshold"] == 50
    bad = tmp_path / "bad.yaml"
    bad.write_text("policy: {bulk_threshold: lots}\n")
    out = subprocess.run([str(BIN / "dlp-gateway"), "check-config", "--config", str(bad)],
                         capture_output=True, text=True)
    assert out.returncode != 0
    assert f"{bad}: policy.bulk_threshold" in out.stderr
    assert "Traceback" not in out.stderr


def test_serve_refuses_to_start_on_a_bad_configuration(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("server: {tls_cert: /nonexistent.pem, tls_key: /nonexistent.key}\n")
    out = subprocess.run([str(BIN / "dlp-gateway"), "serve", "--config", str(bad)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert f"{bad}: server" in out.stderr and "does not exist" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path / "absent.yaml")
    assert "absent.yaml: cannot read the file" in error.value.problems[0]
