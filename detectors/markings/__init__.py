"""Protective-marking detectors: UK Government Security Classifications written as markings.

`grammar` reads markings in text and tells them from prose; `email_marking` and
`sensitivity_labels` parse the headers marking tools write; `protective_marking`
is the detector that reads them where senders and their tools put them.
"""
