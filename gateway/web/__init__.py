"""The review UI: the security team's quarantine review in the browser, on the admin listener.

`views.ReviewUI` holds the pages; `auth` signs reviewers in (local users with scrypt
hashes, or a trusted reverse proxy's header) and keeps their sessions in the database;
`passwords` makes and checks hashes with the standard library only (the configuration
and the CLI import it, so this package's __init__ imports nothing heavy).
"""
