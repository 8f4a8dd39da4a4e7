"""Runs Microsoft Presidio's AnalyzerEngine over texts, inside the benchmark's own virtualenv.

Started by tests/bench/presidio_bench.py with that venv's python, never imported by the
project (it needs presidio-analyzer and spaCy, which the project does not depend on):

    var/bench/presidio-venv/bin/python tests/bench/presidio_driver.py IN.json OUT.json

IN.json:  {"model": spaCy model package, "entities": [...], "warmup": N,
           "labelled": [{"id": ..., "text": ...}], "messages": [{"subject": ..., "body": ...}]}
OUT.json: versions, the recognizers Presidio registers by default and those added here,
          the engine's load time, every labelled text's results as [entity, score] pairs
          (score_threshold 0, Presidio's default: thresholds are applied by the caller), and
          the wall-clock and CPU time of analysing every message (subject and body, two calls).

It reads nothing from the network: tldextract (used by Presidio's e-mail recognizer) is given
its bundled public-suffix snapshot instead of fetching the list.
"""

from __future__ import annotations

import json
import sys
import time
from importlib import metadata


def _offline_tldextract() -> None:
    import tldextract

    tldextract.extract = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


def _engine(model: str):  # type: ignore[no-untyped-def]
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider

    provider = NlpEngineProvider(
        nlp_configuration={"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": model}]}
    )
    return AnalyzerEngine(nlp_engine=provider.create_engine(), supported_languages=["en"])


def _add_uk_recognizers(engine, wanted: set[str]) -> list[str]:  # type: ignore[no-untyped-def]
    """Presidio ships UK NINO, passport and driving-licence recognizers disabled; enable the wanted ones."""
    from presidio_analyzer import predefined_recognizers as pr

    present = {e for r in engine.registry.recognizers for e in r.supported_entities}
    added = []
    for cls_name, entity in (
        ("UkNinoRecognizer", "UK_NINO"),
        ("UkPassportRecognizer", "UK_PASSPORT"),
        ("UkDrivingLicenceRecognizer", "UK_DRIVING_LICENCE"),
    ):
        cls = getattr(pr, cls_name, None)
        if entity in wanted and entity not in present and cls is not None:
            engine.registry.add_recognizer(cls())
            added.append(f"{cls_name} ({entity})")
    return added


def main(in_path: str, out_path: str) -> None:
    job = json.loads(open(in_path, encoding="utf-8").read())
    _offline_tldextract()

    started = time.perf_counter()
    engine = _engine(job["model"])
    load_seconds = time.perf_counter() - started

    default = sorted(
        {f"{type(r).__name__}: {','.join(r.supported_entities)}" for r in engine.registry.recognizers}
    )
    default_entities = set(engine.get_supported_entities("en"))
    wanted = set(job["entities"])
    added = _add_uk_recognizers(engine, wanted)
    supported = set(engine.get_supported_entities("en"))
    entities = sorted(wanted & supported)

    def analyse(text: str) -> list:  # type: ignore[type-arg]
        if not text.strip():
            return []
        return engine.analyze(text=text, language="en", entities=entities, score_threshold=0)

    labelled = []
    for item in job["labelled"]:
        results = analyse(item["text"])
        labelled.append({"id": item["id"], "results": [[r.entity_type, round(float(r.score), 4)] for r in results]})

    messages = job["messages"]
    for m in messages[: job.get("warmup", 10)]:
        analyse(m["subject"])
        analyse(m["body"])
    wall = time.perf_counter()
    cpu = time.process_time()
    found = 0
    for m in messages:
        found += len(analyse(m["subject"])) + len(analyse(m["body"]))
    wall = time.perf_counter() - wall
    cpu = time.process_time() - cpu

    out = {
        "presidio_analyzer": metadata.version("presidio-analyzer"),
        "spacy": metadata.version("spacy"),
        "model": job["model"],
        "model_version": _model_version(job["model"]),
        "python": sys.version.split()[0],
        "default_recognizers": default,
        "default_entities": sorted(default_entities),
        "uk_nino_in_default_registry": "UK_NINO" in default_entities,
        "added_recognizers": added,
        "entities_analysed": entities,
        "entities_unsupported": sorted(wanted - supported),
        "load_seconds": load_seconds,
        "labelled": labelled,
        "throughput": {"messages": len(messages), "wall_seconds": wall, "cpu_seconds": cpu, "results": found},
    }
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(out, f)


def _model_version(model: str) -> str:
    for name in (model, model.replace("_", "-")):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "unknown"


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
