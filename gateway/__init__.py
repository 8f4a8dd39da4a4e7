"""dlp-gateway: the relay, the message model, the policy and the actions. Detectors live in `detectors/`."""
