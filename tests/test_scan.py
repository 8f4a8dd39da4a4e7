"""`dlp-gateway scan`: the dry-run contract of POLICY.md, exactly."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.support import BIN

DATA = Path(__file__).parent / "data" / "scan"


def scan(*args: str, config: Path | None = None) -> subprocess.CompletedProcess[str]:
    command = [str(BIN / "dlp-gateway"), "scan", *(["--config", str(config)] if config else []), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "org.yaml"
    path.write_text("organisation: {internal_domains: [council.example.gov.uk], trusted_domains: [nhs.net]}\n")
    return path


def test_one_json_object_per_message_with_the_contract_fields(tmp_path: Path) -> None:
    files = [DATA / "benign.eml", DATA / "nino-to-personal.eml", DATA / "official-sensitive.eml"]
    out = scan(*map(str, files), config=config_file(tmp_path))
    assert out.returncode == 0, out.stderr
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["file"] for r in records] == [str(f) for f in files]
    for r in records:
        assert set(r) == {"file", "message_id", "verdict", "recipients", "findings", "disclaimer"}
        for rcpt in r["recipients"]:
            assert set(rcpt) == {"address", "class", "action", "rules"}
        for f in r["findings"]:
            assert {"detector", "category", "location", "count"} <= set(f)
            assert f["category"] in {"personal_data", "protective_marking", "attachment", "misaddressed",
                                     "personal_forwarding"}
    benign, nino, marked = records
    assert benign["message_id"] == "<benign-1@council.example.gov.uk>"
    assert benign["verdict"] == "deliver" and benign["findings"] == [] and benign["disclaimer"] is True
    assert [(r["address"], r["class"]) for r in benign["recipients"]] == [
        ("sam@supplier.example.com", "external"), ("colleague@council.example.gov.uk", "internal")]
    assert nino["verdict"] == "reject"
    assert nino["recipients"] == [{"address": "someone@gmail.com", "class": "personal", "action": "reject",
                                   "rules": ["personal-data"]}]
    assert nino["findings"][0] | {"kind": None} == {"detector": "uk_nino", "category": "personal_data",
                                                    "location": "attachment:staff.csv", "count": 3, "kind": None}
    assert "AB123456C" not in out.stdout
    assert {r["address"]: r["action"] for r in marked["recipients"]} == {
        "gp@nhs.net": "deliver_tls", "partner@supplier.example.com": "reject"}
    assert marked["verdict"] == "reject" and marked["disclaimer"] is True


def test_sender_and_recipients_from_the_command_line_replace_the_headers(tmp_path: Path) -> None:
    out = scan("--sender", "x@council.example.gov.uk", "--rcpt", "a@council.example.gov.uk",
               "--rcpt", "b@nhs.net", str(DATA / "nino-to-personal.eml"), config=config_file(tmp_path))
    (record,) = [json.loads(line) for line in out.stdout.splitlines()]
    assert [(r["address"], r["action"]) for r in record["recipients"]] == [
        ("a@council.example.gov.uk", "deliver"), ("b@nhs.net", "deliver_tls")]


def test_a_malformed_message_is_evaluated_and_an_unreadable_file_exits_2(tmp_path: Path) -> None:
    out = scan(str(DATA / "malformed.eml"), str(tmp_path / "missing.eml"), str(DATA / "benign.eml"))
    assert out.returncode == 2
    records = [json.loads(line) for line in out.stdout.splitlines()]
    assert [Path(r["file"]).name for r in records] == ["malformed.eml", "benign.eml"]
    assert records[0]["verdict"] in ("reject", "quarantine")  # inspected on what could be read; never delivered
    assert "missing.eml" in out.stderr and "Traceback" not in out.stderr


def test_scan_works_with_no_config_file_at_all() -> None:
    out = scan(str(DATA / "benign.eml"))
    assert out.returncode == 0
    (record,) = [json.loads(line) for line in out.stdout.splitlines()]
    assert {r["class"] for r in record["recipients"]} == {"external"}
