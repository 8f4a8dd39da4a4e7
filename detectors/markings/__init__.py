"""Protective-marking detectors: UK Government Security Classifications written as markings."""
