"""Detectors: each finds one kind of thing in a message model. Pure: no I/O, no policy."""

from __future__ import annotations

from typing import TYPE_CHECKING

from detectors.base import Detector

if TYPE_CHECKING:
    from gateway.config import Config


def build_detectors(config: "Config") -> list[Detector]:
    """Every detector the gateway runs, constructed once per process."""
    from detectors.markings.protective_marking import ProtectiveMarkingDetector
    from detectors.personal_data.uk_nino import NinoDetector
    from detectors.structure import StructureDetector

    return [NinoDetector(), ProtectiveMarkingDetector(), StructureDetector()]
