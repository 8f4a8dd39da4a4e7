"""How well the detectors do on a labelled set of realistic council, social-care and NHS-partner
email snippets: tests/data/accuracy/labelled.tsv (its header says how it is written).

Every snippet is sent through the real pipeline (default configuration, every registered
detector) as a whole message: the snippet as the subject, the text/plain body, the text/html
body or one header. Per kind, counting snippets, not findings:

  pos snippet  TP if some finding has `detector == kind`, else FN
  neg snippet  FP if some finding has `detector == kind`

A finding that only says a detector crashed (signal INCOMPLETE) is not a finding of the kind,
and the crash is listed with the failures. Every strong identifier and protective markings must
reach precision >= 0.98 and recall >= 0.97; the weak signals in the set are reported only.
The per-kind table is printed to the terminal on every run, even with -q.
"""

from __future__ import annotations

import contextlib
import email.policy
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest

from detectors.base import Signal
from gateway.config import load_config
from gateway.message import Envelope
from gateway.pipeline import Pipeline
from tests.conftest import SENDER, make_message

LABELLED = Path(__file__).parent / "data" / "accuracy" / "labelled.tsv"

ASSERTED_KINDS = (
    "uk_nino",
    "uk_nhs_number",
    "payment_card",
    "uk_bank_account",
    "iban",
    "uk_passport",
    "uk_driving_licence",
    "protective_marking",
)
REPORTED_KINDS = ("email_address", "uk_phone", "person_name")  # weak signals: no threshold
MIN_PRECISION = 0.98
MIN_RECALL = 0.97
MIN_PER_LABEL = 300          # pos and neg snippets in the whole set
MIN_PER_KIND_AND_LABEL = 30  # pos and neg snippets for each asserted kind

PLACES = ("subject", "body", "html", "header")
# What fills the parts of the message a snippet does not stand in: nothing any detector reports.
NEUTRAL_SUBJECT = "Update"
NEUTRAL_BODY = "Please see the subject line.\n"
ENVELOPE = Envelope(SENDER, ("partner@supplier.example.com",))


@dataclass(frozen=True)
class Snippet:
    line: int       # line number in labelled.tsv, for people reading a failure
    kind: str
    label: str      # "pos" or "neg"
    where: str      # one of PLACES
    text: str       # unescaped

    def __str__(self) -> str:
        shown = self.text if len(self.text) <= 140 else self.text[:137] + "..."
        return f"line {self.line} ({self.label}, {self.where}): {shown!r}"


_ESCAPE = re.compile(r"\\(u[0-9a-fA-F]{4}|.)", re.DOTALL)
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\"}


def unescape(field: str) -> str:
    r"""The text a snippet stands for: `\n` newline, `\t` tab, `\\` backslash and `\uXXXX`
    any BMP character, so invisible and look-alike characters stay visible in the file.
    Any other backslash sequence is a mistake in the file and raises ValueError."""

    def replace(m: re.Match[str]) -> str:
        seq = m.group(1)
        if seq.startswith("u") and len(seq) == 5:
            return chr(int(seq[1:], 16))
        if seq in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[seq]
        raise ValueError(f"unknown escape \\{seq}")

    return _ESCAPE.sub(replace, field)


def load_snippets(path: Path = LABELLED) -> list[Snippet]:
    snippets = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        try:
            kind, label, where, text = line.split("\t")
            snippets.append(Snippet(number, kind, label, where, unescape(text)))
        except ValueError as e:
            raise ValueError(f"{path.name} line {number}: {e} (want kind<TAB>label<TAB>where<TAB>text)") from None
    return snippets


def make_html_message(markup: str, subject: str = NEUTRAL_SUBJECT) -> bytes:
    """Like conftest.make_message, with a text/html body only."""
    msg = EmailMessage()
    msg["From"] = f"Jane Doe <{SENDER}>"
    msg["To"] = "partner@supplier.example.com"
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain="council.example.gov.uk")
    msg.set_content(markup, subtype="html")
    return msg.as_bytes(policy=email.policy.SMTP)


def message_for(snippet: Snippet) -> bytes:
    if snippet.where == "subject":
        return make_message(subject=snippet.text, body=NEUTRAL_BODY)
    if snippet.where == "body":
        return make_message(subject=NEUTRAL_SUBJECT, body=snippet.text)
    if snippet.where == "html":
        return make_html_message(snippet.text)
    if snippet.where == "header":
        name, value = snippet.text.split(":", 1)
        return make_message(subject=NEUTRAL_SUBJECT, body=NEUTRAL_BODY, headers={name.strip(): value.strip()})
    raise ValueError(f"line {snippet.line}: unknown place {snippet.where!r}")


@dataclass
class Score:
    kind: str
    tp: int = 0
    fn: int = 0
    fp: int = 0
    tn: int = 0
    failures: list[str] = field(default_factory=list)

    @property
    def precision(self) -> float | None:
        found = self.tp + self.fp
        return self.tp / found if found else None

    @property
    def recall(self) -> float | None:
        real = self.tp + self.fn
        return self.tp / real if real else None


def score(snippets: Iterable[Snippet], pipeline: Pipeline) -> dict[str, Score]:
    scores: dict[str, Score] = {}
    for snippet in snippets:
        s = scores.setdefault(snippet.kind, Score(snippet.kind))
        findings = pipeline.inspect(message_for(snippet), ENVELOPE).findings
        mine = [f for f in findings if f.detector == snippet.kind]
        crashed = any(f.signal is Signal.INCOMPLETE for f in mine)
        reported = any(f.signal is not Signal.INCOMPLETE for f in mine)
        if snippet.label == "pos":
            if reported and not crashed:
                s.tp += 1
            else:
                s.fn += 1
                s.failures.append(f"missed{' (detector crashed)' if crashed else ''}: {snippet}")
        elif reported or crashed:
            s.fp += 1
            s.failures.append(f"false positive{' (detector crashed)' if crashed else ''}: {snippet}")
        else:
            s.tn += 1
    return scores


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def table(scores: dict[str, Score], registered: set[str]) -> str:
    lines = [
        f"accuracy on {LABELLED.relative_to(Path(__file__).parents[1])} "
        f"(precision >= {MIN_PRECISION}, recall >= {MIN_RECALL} required for strong kinds and markings)",
        f"{'kind':<20} {'pos':>4} {'neg':>4} {'TP':>4} {'FN':>4} {'FP':>4} {'precision':>9} {'recall':>7}  status",
    ]
    for kind in (*ASSERTED_KINDS, *REPORTED_KINDS, *sorted(set(scores) - set(ASSERTED_KINDS) - set(REPORTED_KINDS))):
        s = scores.get(kind, Score(kind))
        if kind not in registered:
            status = "no detector registered"
        elif kind not in ASSERTED_KINDS:
            status = "reported only"
        else:
            ok = (s.precision is not None and s.precision >= MIN_PRECISION) and (s.recall or 0) >= MIN_RECALL
            status = "ok" if ok else "BELOW THRESHOLD"
        lines.append(
            f"{kind:<20} {s.tp + s.fn:>4} {s.fp + s.tn:>4} {s.tp:>4} {s.fn:>4} {s.fp:>4} "
            f"{_fmt(s.precision):>9} {_fmt(s.recall):>7}  {status}"
        )
    return "\n".join(lines)


@pytest.fixture(scope="module")
def snippets() -> list[Snippet]:
    return load_snippets()


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    return Pipeline(load_config())


@pytest.fixture(scope="module")
def scores(snippets: list[Snippet], pipeline: Pipeline, request: pytest.FixtureRequest) -> dict[str, Score]:
    result = score(snippets, pipeline)
    report = table(result, {d.name for d in pipeline.detectors})
    # Straight to the terminal, past output capture, so the table shows on passing runs too.
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if reporter is not None:
        with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
            reporter.write_line("")
            for line in report.splitlines():
                reporter.write_line(line)
    return result


def test_the_labelled_set_has_at_least_300_positives_and_300_negatives(snippets: list[Snippet]) -> None:
    labels = [s.label for s in snippets]
    assert labels.count("pos") >= MIN_PER_LABEL and labels.count("neg") >= MIN_PER_LABEL


@pytest.mark.parametrize("kind", ASSERTED_KINDS)
def test_every_asserted_kind_has_at_least_30_positives_and_30_negatives(kind: str, snippets: list[Snippet]) -> None:
    labels = [s.label for s in snippets if s.kind == kind]
    assert labels.count("pos") >= MIN_PER_KIND_AND_LABEL and labels.count("neg") >= MIN_PER_KIND_AND_LABEL


def test_every_snippet_names_a_known_kind_label_and_place(snippets: list[Snippet]) -> None:
    wrong = [
        str(s)
        for s in snippets
        if s.kind not in (*ASSERTED_KINDS, *REPORTED_KINDS) or s.label not in ("pos", "neg") or s.where not in PLACES
    ]
    assert not wrong, "\n".join(wrong)


def test_escapes_stand_for_invisible_and_look_alike_characters() -> None:
    assert unescape(r"AB\u200b12\u201334\tC\nD\\u") == "AB\u200b12\u201334\tC\nD\\u"
    with pytest.raises(ValueError):
        unescape(r"bad \x escape")


@pytest.mark.parametrize("kind", ASSERTED_KINDS)
def test_detector_reaches_the_required_precision_and_recall_on_the_labelled_set(
    kind: str, scores: dict[str, Score], pipeline: Pipeline
) -> None:
    s = scores[kind]
    registered = {d.name for d in pipeline.detectors}
    summary = (
        f"{kind}: precision {_fmt(s.precision)} (need {MIN_PRECISION}), recall {_fmt(s.recall)} "
        f"(need {MIN_RECALL}); TP {s.tp}, FN {s.fn}, FP {s.fp}"
        + ("" if kind in registered else "; no detector of this name is registered")
    )
    precise = s.precision is not None and s.precision >= MIN_PRECISION
    complete = s.recall is not None and s.recall >= MIN_RECALL
    if not (precise and complete):
        pytest.fail("\n  ".join([summary, *s.failures]), pytrace=False)
