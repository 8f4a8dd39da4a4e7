"""Detectors about who a message goes to: mis-addressed recipients and personal-account forwarding."""
