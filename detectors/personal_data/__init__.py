"""Personal-data detectors: one module per kind of identifier, validator beside pattern."""
