"""Attachment extraction benchmark: MB/s and peak memory of reading attachments, per format.

Run by hand from the repository root; never in CI:

    .venv/bin/python -m tests.bench.attachments_bench [--pipeline] [--repeat N] [--keep DIR]

It builds deterministic messages (fixed seeds, made-up people):

  xlsx     a 10,000-row spreadsheet (openpyxl)
  pdf      a 100-page text PDF (fpdf2)
  docx     a 50-page Word document with tables (python-docx)
  archive  a .tar.gz holding a ZIP of 20 CSVs (the archive extractors)
  mixed    a ~20 MB message: all of the above, a CSV, an attached email and a photo
  mixed/mime  the same message only taken apart (gateway.message.model_parts): MIME parsing
           and transfer decoding, no attachment read, to show what the extraction adds

and reads each in a FRESH Python process, so its peak RSS (VmHWM) is that case's alone:
`gateway.message.parse(raw, envelope, limits from config/default.yaml)` (the extraction),
or with --pipeline the whole `Pipeline.inspect` (extraction and every detector). One more
process imports the same modules and reads nothing: the idle baseline, subtracted to show
what reading the message itself cost (`+RSS`). The mixed message passes when that increment
is under 4 times the message's size.

A format whose extractor is still a placeholder is reported as such (its file "cannot be
read"), and its row measures nothing but the detection. The table is printed and the
results written to var/bench/attachments-<UTC timestamp>.json. Exit status 1 when the
mixed message fails its memory bound or a worker fails.
"""

from __future__ import annotations

import argparse
import csv
import email.policy
import io
import json
import os
import platform
import random
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from dataclasses import asdict, dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
RESULTS_DIR = REPO / "var" / "bench"
MB = 1 << 20
MIXED_TARGET = 20 * MB          # raw size of the mixed message
RSS_BOUND = 4.0                 # mixed message: peak RSS increment under this many times its size
SENDER = "jane.doe@council.example.gov.uk"
RECIPIENT = "partner@supplier.example.com"
WORKER_TIMEOUT = 600

# ---------------------------------------------------------------- made-up content

_FIRST = ["Jo", "Sam", "Alex", "Priya", "Tom", "Aisha", "Liam", "Chloe", "Mohammed", "Grace", "Owen", "Ruth"]
_LAST = ["Bloggs", "Smith", "Patel", "Jones", "Williams", "Khan", "Evans", "Taylor", "Brown", "Wilson"]
_TEAMS = ["Housing", "Adult Social Care", "Planning", "Revenues", "Highways", "Libraries", "Waste"]
_WORDS = ("the council will review the application and respond within twenty working days of receipt "
          "residents may appeal the decision in writing to the planning committee before the next meeting "
          "budget allocations for the financial year were agreed subject to the outcome of consultation").split()


def _nino(rng: random.Random) -> str:
    return f"{rng.choice('ABCEGHJKLMNPRSTWXYZ')}{rng.choice('ABCEGHJKLMNPRSTWXYZ')}{rng.randrange(10**6):06d}" \
           f"{rng.choice('ABCD')}"


def _sentence(rng: random.Random, words: int = 14) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(words)).capitalize() + "."


def staff_rows(rng: random.Random, n: int) -> list[list[Any]]:
    return [[f"{rng.choice(_FIRST)} {rng.choice(_LAST)}", _nino(rng), rng.choice(_TEAMS),
             f"07{rng.randrange(10**9):09d}", rng.randrange(18000, 65000), f"20{rng.randrange(10, 25)}-0"
             f"{rng.randrange(1, 10)}-1{rng.randrange(0, 9)}", f"SW{rng.randrange(1, 20)} {rng.randrange(1, 9)}AB",
             _sentence(rng, 8)] for _ in range(n)]


HEADER = ["Name", "NI number", "Team", "Mobile", "Salary", "Start date", "Postcode", "Notes"]


def build_xlsx(rows: int = 10_000) -> bytes:
    from openpyxl import Workbook

    wb = Workbook(write_only=True)
    ws = wb.create_sheet("Staff")
    ws.append(HEADER)
    for row in staff_rows(random.Random(1), rows):
        ws.append(row)
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def build_pdf(pages: int = 100) -> bytes:
    from fpdf import FPDF

    rng = random.Random(2)
    pdf = FPDF()
    pdf.set_font("Helvetica", size=10)
    for page in range(pages):
        pdf.add_page()
        pdf.cell(0, 8, f"Committee report, page {page + 1}", new_x="LMARGIN", new_y="NEXT")
        for _ in range(8):
            pdf.multi_cell(0, 5, " ".join(_sentence(rng) for _ in range(4)), new_x="LMARGIN", new_y="NEXT")
            pdf.ln(2)
    return bytes(pdf.output())


def build_docx(pages: int = 50) -> bytes:
    from docx import Document

    rng = random.Random(3)
    doc = Document()
    for page in range(pages):
        doc.add_heading(f"Section {page + 1}: {rng.choice(_TEAMS)}", level=1)
        for _ in range(5):
            doc.add_paragraph(" ".join(_sentence(rng) for _ in range(4)))
        table = doc.add_table(rows=1, cols=3)
        for cell, title in zip(table.rows[0].cells, ("Name", "NI number", "Team")):
            cell.text = title
        for row in staff_rows(rng, 5):
            cells = table.add_row().cells
            cells[0].text, cells[1].text, cells[2].text = row[0], row[1], row[2]
        doc.add_page_break()
    buf = io.BytesIO()
    doc.save(buf)
    return buf.getvalue()


def build_csv(rows: int, seed: int) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(HEADER)
    writer.writerows(staff_rows(random.Random(seed), rows))
    return out.getvalue().encode()


def build_archive() -> bytes:
    """A .tar.gz holding a ZIP of 20 CSVs (about 10 MB of text)."""
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w", zipfile.ZIP_DEFLATED) as z:
        for n in range(20):
            z.writestr(f"staff-{n:02d}.csv", build_csv(4_000, seed=100 + n))
    zipped = inner.getvalue()
    outer = io.BytesIO()
    with tarfile.open("staff.tar.gz", "w:gz", fileobj=outer) as t:
        info = tarfile.TarInfo("staff.zip")
        info.size = len(zipped)
        t.addfile(info, io.BytesIO(zipped))
    return outer.getvalue()


def build_photo(size: int) -> bytes:
    """Incompressible bytes behind a JPEG header: a photo, as far as libmagic and the gateway go."""
    return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + random.Random(4).randbytes(size)


def message(subject: str, attachments: list[tuple[str, bytes, str]]) -> bytes:
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = SENDER, RECIPIENT, subject
    msg.set_content("Please find the files attached.\n\nRegards,\nJane")
    for name, data, ctype in attachments:
        if ctype == "message/rfc822":
            from email import message_from_bytes

            msg.add_attachment(message_from_bytes(data, _class=EmailMessage), subtype="rfc822", filename=name)
            continue
        maintype, subtype = ctype.split("/")
        msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=name)
    return msg.as_bytes(policy=email.policy.SMTP)


XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


@dataclass
class Case:
    name: str
    description: str
    raw: bytes
    attachment_bytes: int
    formats: list[str]      # the attachment types this case is about (for placeholder notes)


def build_cases() -> list[Case]:
    xlsx, pdf, docx, archive = build_xlsx(), build_pdf(), build_docx(), build_archive()
    cases = [
        Case("xlsx", "10,000-row XLSX", message("Staff list", [("staff.xlsx", xlsx, XLSX)]), len(xlsx), [XLSX]),
        Case("pdf", "100-page PDF", message("Report", [("report.pdf", pdf, "application/pdf")]), len(pdf),
             ["application/pdf"]),
        Case("docx", "50-page DOCX", message("Minutes", [("minutes.docx", docx, DOCX)]), len(docx), [DOCX]),
        Case("archive", "tar.gz > zip > 20 CSVs", message("Exports", [("staff.tar.gz", archive, "application/gzip")]),
             len(archive), ["application/gzip"]),
    ]
    staff_csv = build_csv(40_000, seed=5)
    inner_mail = message("Fwd: referral", [("referral.csv", build_csv(2_000, seed=6), "text/csv")])
    parts = [("staff.xlsx", xlsx, XLSX), ("report.pdf", pdf, "application/pdf"), ("minutes.docx", docx, DOCX),
             ("staff.tar.gz", archive, "application/gzip"), ("all-staff.csv", staff_csv, "text/csv"),
             ("referral.eml", inner_mail, "message/rfc822")]
    without_photo = len(message("Mixed", parts))
    photo = build_photo(max(0, (MIXED_TARGET - without_photo) * 3 // 4 - 4096))
    parts.append(("site-visit.jpg", photo, "image/jpeg"))
    mixed = message("Mixed", parts)
    cases.append(Case("mixed", f"{len(mixed) / MB:.0f} MB message, mixed attachments", mixed,
                      sum(len(p[1]) for p in parts), [XLSX, "application/pdf", DOCX]))
    return cases


# ---------------------------------------------------------------- the worker (a fresh process per case)


def _peak_rss() -> int:
    """This process's peak resident set size in bytes (VmHWM; ru_maxrss where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _warm_up() -> None:
    """Bring the process to the state of a gateway worker that has read a few messages: the
    extractors' libraries imported and libmagic's database loaded. Both the idle baseline and
    every measured case start from here, so the increment is what the message itself costs."""
    import charset_normalizer  # noqa: F401
    import olefile  # noqa: F401
    import py7zr  # noqa: F401
    import pypdf  # noqa: F401

    from gateway.message import detect_type

    detect_type(b"%PDF-1.4 warm-up")


def worker(path: str | None, pipeline: bool, repeat: int, mime_only: bool = False) -> dict[str, Any]:
    from detectors.attachments import Status
    from gateway.config import load_config
    from gateway.message import Envelope, model_parts, parse

    config = load_config()
    _warm_up()
    inspect = None
    if pipeline:
        from gateway.pipeline import Pipeline

        inspect = Pipeline(config).inspect
    if path is None:
        return {"peak_rss": _peak_rss()}
    raw = Path(path).read_bytes()
    if mime_only:  # the MIME structure taken apart and attachments decoded, none of them read
        started = time.perf_counter()
        parts = model_parts(raw)
        return {"seconds": time.perf_counter() - started, "all_seconds": [], "peak_rss": _peak_rss(),
                "text_chars": sum(len(t) for _, t in parts.texts), "reports": [], "incomplete": []}
    envelope = Envelope(SENDER, (RECIPIENT,))
    times = []
    message = None
    for _ in range(repeat):
        message = None  # the previous run's model goes before the next run starts
        started = time.perf_counter()
        if inspect is not None:
            inspect(raw, envelope)
        else:
            message = parse(raw, envelope, config.attachments.limits)
        times.append(time.perf_counter() - started)
    if message is None:  # --pipeline: parse once more, untimed, for the reports
        message = parse(raw, envelope, config.attachments.limits)
    reports = [{"location": r.location, "type": r.detected_type, "status": r.status.value, "reason": r.reason}
               for r in message.attachment_reports]
    return {
        "seconds": min(times),
        "all_seconds": times,
        "peak_rss": _peak_rss(),
        "text_chars": sum(len(s.text) for s in message.segments),
        "reports": reports,
        "incomplete": [r for r in reports if r["status"] == Status.INCOMPLETE.value],
    }


def run_worker(path: Path | None, pipeline: bool, repeat: int, mime_only: bool = False) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "tests.bench.attachments_bench", "--worker", str(path) if path else "-"]
    if pipeline:
        cmd.append("--pipeline")
    if mime_only:
        cmd.append("--mime-only")
    cmd += ["--repeat", str(repeat)]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=WORKER_TIMEOUT)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or ["(no output)"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- the table


@dataclass
class Row:
    case: str
    description: str
    message_mb: float
    attachments_mb: float
    seconds: float = 0.0
    mb_per_s: float = 0.0
    peak_rss_mb: float = 0.0
    rss_increment_mb: float = 0.0
    increment_per_message: float = 0.0
    text_chars: int = 0
    note: str = ""
    incomplete: list[dict[str, str]] = field(default_factory=list)
    error: str = ""


def _placeholder_note(case: Case, result: dict[str, Any]) -> str:
    missing = sorted({r["type"] for r in result.get("reports", [])
                      if r["reason"].startswith("the gateway cannot read files of type") and r["type"] in case.formats})
    return f"placeholder: no extractor for {', '.join(missing)}" if missing else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pipeline", action="store_true", help="time Pipeline.inspect (detectors too), not parse")
    parser.add_argument("--repeat", type=int, default=1, help="runs per case in its process; the fastest time is shown, and "
                        "peak RSS covers them all (so measure memory with the default, 1)")
    parser.add_argument("--keep", metavar="DIR", help="write the generated messages here and keep them")
    parser.add_argument("--worker", metavar="FILE", help=argparse.SUPPRESS)
    parser.add_argument("--mime-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker is not None:
        print(json.dumps(worker(None if args.worker == "-" else args.worker, args.pipeline, max(1, args.repeat),
                                args.mime_only)))
        return 0

    print("building inputs ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    cases = build_cases()
    print(f"built {len(cases)} messages in {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)

    baseline = run_worker(None, args.pipeline, 1)
    if "error" in baseline:
        print(f"idle worker failed: {baseline['error']}", file=sys.stderr)
        return 1
    idle = baseline["peak_rss"]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="attachments-bench-") as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        runs = [(case, False) for case in cases] + [(cases[-1], True)]  # and the mixed message's MIME alone
        for case, mime_only in runs:
            path = folder / f"{case.name}.eml"
            path.write_bytes(case.raw)
            label = f"{case.name}/mime" if mime_only else case.name
            print(f"  {label} ...", file=sys.stderr, flush=True)
            result = run_worker(path, args.pipeline, max(1, args.repeat), mime_only)
            row = Row(label, "MIME parsing and decoding only (model_parts)" if mime_only else case.description,
                      len(case.raw) / MB, case.attachment_bytes / MB)
            if "error" in result:
                row.error = result["error"]
            else:
                row.seconds = result["seconds"]
                row.mb_per_s = row.attachments_mb / row.seconds if row.seconds else 0.0
                row.peak_rss_mb = result["peak_rss"] / MB
                row.rss_increment_mb = max(0, result["peak_rss"] - idle) / MB
                row.increment_per_message = row.rss_increment_mb / row.message_mb
                row.text_chars = result["text_chars"]
                row.note = _placeholder_note(case, result)
                row.incomplete = result["incomplete"]
            rows.append(row)

    mixed = next(r for r in rows if r.case == "mixed")
    mixed_ok = not mixed.error and mixed.increment_per_message < RSS_BOUND
    print_table(rows, idle / MB, args.pipeline, mixed_ok)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"attachments-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    out.write_text(json.dumps({
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "measured": "Pipeline.inspect" if args.pipeline else "gateway.message.parse",
        "python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
        "idle_rss_mb": idle / MB,
        "mixed_bound": {"increment_per_message_below": RSS_BOUND, "passed": mixed_ok},
        "rows": [asdict(r) for r in rows],
    }, indent=2))
    print(f"\nresults: {out.relative_to(REPO)}")
    return 0 if mixed_ok and not any(r.error for r in rows) else 1


def print_table(rows: list[Row], idle_mb: float, pipeline: bool, mixed_ok: bool) -> None:
    print(f"\nmeasured: {'Pipeline.inspect' if pipeline else 'gateway.message.parse'}; "
          f"idle worker (gateway and extractor libraries loaded, libmagic warm): {idle_mb:.1f} MiB peak RSS\n")
    head = (f"{'case':<11} {'message MiB':>11} {'files MiB':>9} {'seconds':>8} {'MiB/s':>7} {'peak RSS':>9} "
            f"{'+RSS':>7} {'+RSS/msg':>8}  note")
    print(head)
    print("-" * len(head))
    for r in rows:
        if r.error:
            print(f"{r.case:<11} {r.message_mb:>11.1f} {r.attachments_mb:>9.1f}  worker failed: {r.error}")
            continue
        note = r.note or ("no attachment read" if r.case.endswith("/mime") else "")
        if r.incomplete and not note:
            note = f"{len(r.incomplete)} not inspected: {r.incomplete[0]['location']}: {r.incomplete[0]['reason']}"
        print(f"{r.case:<11} {r.message_mb:>11.1f} {r.attachments_mb:>9.1f} {r.seconds:>8.2f} {r.mb_per_s:>7.1f} "
              f"{r.peak_rss_mb:>9.1f} {r.rss_increment_mb:>7.1f} {r.increment_per_message:>8.2f}  {note}")
    print(f"\n{'PASS' if mixed_ok else 'FAIL'}: the mixed message's peak RSS increment is "
          f"{'under' if mixed_ok else 'not under'} {RSS_BOUND:g} times its size")


if __name__ == "__main__":
    sys.exit(main())
