"""`dlp-gateway`: serve, scan, check-config and quarantine, for people at a terminal.

Errors are one or two lines saying what is wrong and what to do, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from email.parser import BytesHeaderParser
from email.utils import getaddresses
from pathlib import Path

from gateway.config import Config, ConfigError, effective_yaml, load_config
from gateway.message import Envelope, SenderHistory, decode_header_value

EXIT_OK = 0
EXIT_UNREADABLE = 2


def _config(args: argparse.Namespace) -> Config:
    try:
        return load_config(args.config)
    except ConfigError as e:
        print("dlp-gateway: the configuration has errors; nothing was started:", file=sys.stderr)
        for problem in e.problems:
            print(f"  {problem}", file=sys.stderr)
        raise SystemExit(EXIT_UNREADABLE) from None


def cmd_check_config(args: argparse.Namespace) -> int:
    config = _config(args)
    sys.stdout.write(effective_yaml(config))
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    config = _config(args)
    from gateway.server import serve

    try:
        asyncio.run(serve(config))
    except OSError as e:
        print(f"dlp-gateway: cannot start: {e.strerror or e} "
              "(is another process using the listen port? see server.smtp_listen / server.lmtp_listen)",
              file=sys.stderr)
        return 1
    return EXIT_OK


def envelope_from_headers(raw: bytes, sender: str | None, rcpts: list[str] | None) -> Envelope:
    """The envelope a scan uses: --sender/--rcpt, else From and To/Cc/Bcc from the headers."""
    headers = BytesHeaderParser().parsebytes(raw)

    def addresses(*names: str) -> list[str]:
        values = [decode_header_value(str(v)) for n in names for v in (headers.get_all(n) or [])]
        return [addr for _, addr in getaddresses(values) if addr]

    if sender is None:
        sender = next(iter(addresses("From")), "")
    if not rcpts:
        rcpts = list(dict.fromkeys(addresses("To", "Cc", "Bcc")))
    return Envelope(mail_from=sender, rcpt_tos=tuple(rcpts), protocol="FILE")


def _history_for_scan(config: Config) -> Callable[[str], SenderHistory]:
    """The relay's recipient history, read-only, when its database already exists; else none.
    A dry run never creates the gateway's database."""
    from gateway.message import NO_HISTORY

    url = config.storage.database_url
    if not config.history.enabled or (url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists()):
        return lambda sender: NO_HISTORY
    from gateway.history import RecipientHistory

    history: RecipientHistory | None = None

    def lookup(sender: str) -> SenderHistory:
        nonlocal history
        try:
            if history is None:
                history = RecipientHistory(url, config.history.max_per_sender, config.history.expiry_days)
            return history.lookup(sender)
        except Exception as e:
            print(f"dlp-gateway scan: recipient history not read ({type(e).__name__}); "
                  "first-time and autocomplete checks are skipped", file=sys.stderr)
            return NO_HISTORY

    return lookup


def cmd_scan(args: argparse.Namespace) -> int:
    config = _config(args)
    from gateway.pipeline import Pipeline

    pipeline = Pipeline(config)
    history_of = _history_for_scan(config)
    status = EXIT_OK
    for name in args.files:
        try:
            raw = Path(name).read_bytes()
        except OSError as e:
            print(f"dlp-gateway scan: cannot read {name}: {e.strerror}", file=sys.stderr)
            status = EXIT_UNREADABLE
            continue
        envelope = envelope_from_headers(raw, args.sender, args.rcpt)
        inspection = pipeline.inspect(raw, envelope, history=history_of(envelope.mail_from))
        decision = inspection.decision
        record = {
            "file": name,
            "message_id": inspection.message_id,
            "verdict": decision.verdict.value,
            "recipients": [r.to_json() for r in decision.recipients],
            "findings": [f.to_json() for f in inspection.findings],
            "disclaimer": decision.disclaimer,
        }
        print(json.dumps(record, ensure_ascii=False), flush=True)
    return status


def _actor(args: argparse.Namespace) -> str:
    return args.actor or os.environ.get("SUDO_USER") or getpass.getuser()


def _reason(args: argparse.Namespace, doing: str) -> str:
    reason = (args.reason or "").strip()
    if not reason and sys.stdin.isatty():
        # The question goes to stderr: stdout may be the message itself (quarantine read > FILE).
        print(f"Reason for {doing} (recorded in the audit log): ", end="", file=sys.stderr, flush=True)
        reason = sys.stdin.readline().strip()  # "" at end of input (Ctrl-D): refused below
    if not reason:
        print(f"dlp-gateway: give a reason for {doing} with --reason; it is recorded with your name",
              file=sys.stderr)
        raise SystemExit(EXIT_UNREADABLE)
    return reason


def cmd_quarantine(args: argparse.Namespace) -> int:
    config = _config(args)
    from gateway.actions import build_routes
    from gateway.actions.quarantine import Quarantine, QuarantineError

    quarantine = Quarantine.from_config(config, build_routes(config))
    try:
        if args.qcmd == "list":
            status = None if args.status == "all" else args.status
            for held in quarantine.list(status=status, limit=args.limit):
                if args.json:
                    print(json.dumps(held.to_json(), ensure_ascii=False))
                else:
                    rcpts = ", ".join(r.address for r in held.recipients)
                    when = held.to_json()["created_at"]
                    print(f"{held.id}  {when}  {held.status:<8}  from {held.sender or '<>'} to {rcpts}  "
                          f"[{', '.join(held.rules)}]")
        elif args.qcmd == "show":
            held = quarantine.require(args.id)
            record = held.to_json()
            record["events"] = [e.__dict__ for e in quarantine.events(args.id)]
            print(json.dumps(record, indent=2, ensure_ascii=False))
        elif args.qcmd == "read":
            reason = _reason(args, "reading this message")
            sys.stdout.buffer.write(quarantine.read(args.id, _actor(args), reason))
        elif args.qcmd == "release":
            reason = _reason(args, "releasing this message")
            results = asyncio.run(
                quarantine.release(args.id, build_routes(config), _actor(args), reason, args.rcpt or None)
            )
            failed = False
            for address, result in results.items():
                print(f"{address}: {result.reply}")
                failed = failed or not result.ok
            return 1 if failed else EXIT_OK
        elif args.qcmd == "delete":
            reason = _reason(args, "deleting this message")
            quarantine.delete(args.id, _actor(args), reason)
            print(f"{args.id}: deleted")
        elif args.qcmd == "expire":
            report = quarantine.expire(dry_run=args.dry_run, detail=f"dlp-gateway quarantine expire, run by "
                                                                     f"{_actor(args)}")
            would = "would expire" if args.dry_run else "expired"
            for item_id in report.expired:
                print(f"{item_id}: {would}")
            for item_id in report.purged:
                print(f"{item_id}: left-over content {'would be ' if args.dry_run else ''}removed")
            cutoff = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(report.cutoff))
            print(f"{len(report.expired)} held message(s) from before {cutoff} {would}"
                  + (" (dry run: nothing was changed)" if args.dry_run else ""))
        elif args.qcmd == "rekey":
            rekeyed = quarantine.rekey(_actor(args))
            for item_id, problem in rekeyed.failed.items():
                print(f"dlp-gateway: {item_id} not re-encrypted: {problem}", file=sys.stderr)
            print(f"{len(rekeyed.rekeyed)} held message(s) re-encrypted under key {rekeyed.key_id}, "
                  f"{len(rekeyed.unchanged)} already under it, {len(rekeyed.failed)} failed")
            if rekeyed.failed:
                print("dlp-gateway: keep the old keys in quarantine.keys until every message is re-encrypted",
                      file=sys.stderr)
                return 1
    except QuarantineError as e:
        print(f"dlp-gateway: {e}", file=sys.stderr)
        return 1
    return EXIT_OK


def cmd_dkim_keygen(args: argparse.Namespace) -> int:
    from gateway.dkim import cmd_dkim_keygen as keygen

    return keygen(args.domain, args.selector, args.directory, args.algorithm)


def cmd_quarantine_keygen(args: argparse.Namespace) -> int:
    from gateway.quarantine_keys import keygen

    try:
        key = keygen(args.file)
    except FileExistsError:
        print(f"dlp-gateway: {args.file} already exists; nothing was changed. Give a new file name "
              "for a new key (see docs/quarantine.md on rotating keys).", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"dlp-gateway: cannot write the key file {args.file}: {e.strerror}", file=sys.stderr)
        return 1
    path = Path(key.path).resolve()
    print(f"""Quarantine key {key.hex_id} written to:
  {path}
It is readable by its owner only. If the gateway runs as another user, make that user its owner.
Keep a copy somewhere safe: held mail encrypted with it cannot be read without it.

To encrypt held mail with it, put it first in quarantine.keys, keeping any older keys after it:
  quarantine:
    keys: ["{path}"]
check with 'dlp-gateway check-config --config FILE', restart the gateway, and after a rotation
run 'dlp-gateway quarantine rekey' before removing an old key.""")
    return EXIT_OK


def cmd_admin_passwd(args: argparse.Namespace) -> int:
    import re

    from gateway.web.passwords import hash_password

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}", args.name):
        print("dlp-gateway: a user name is letters, digits and . _ @ - (at most 64), starting with a letter or digit",
              file=sys.stderr)
        return EXIT_UNREADABLE
    try:
        password = getpass.getpass(f"New password for {args.name}: ")
        again = getpass.getpass("The same again: ")
    except EOFError:
        print("dlp-gateway: no password was typed; nothing was made", file=sys.stderr)
        return EXIT_UNREADABLE
    if password != again:
        print("dlp-gateway: the two passwords differ; nothing was made. Run it again.", file=sys.stderr)
        return 1
    if len(password) < 12:
        print("dlp-gateway: use a password of at least 12 characters; nothing was made.", file=sys.stderr)
        return 1
    print("# Put this under admin.users in the gateway's configuration (it holds a hash, never the password),\n"
          "# check it with 'dlp-gateway check-config --config FILE' and restart the gateway:\n"
          "admin:\n"
          "  users:\n"
          f'    {args.name}: "{hash_password(password)}"')
    return EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    config = _config(args)
    from gateway.history import RecipientHistory

    history = RecipientHistory(config.storage.database_url, config.history.max_per_sender, config.history.expiry_days)
    if args.hcmd == "show":
        known = history.lookup(args.sender)
        if args.json:
            print(json.dumps({
                "sender": args.sender.lower(),
                "correspondents": [c.__dict__ for c in known.correspondents],
                "personal_addresses": list(known.personal_addresses),
            }, ensure_ascii=False))
            return EXIT_OK
        if not known.correspondents and not known.personal_addresses:
            print(f"no history for {args.sender}")
        for c in known.correspondents:
            last = time.strftime("%Y-%m-%d", time.gmtime(c.last_seen))
            print(f"{c.count:6d}  last {last}  {c.address}" + (f"  ({c.display_name})" if c.display_name else ""))
        for address in known.personal_addresses:
            print(f"personal  {address}")
    elif args.hcmd == "forget":
        removed = history.forget(args.sender, args.address)
        print(f"{removed} entr{'y' if removed == 1 else 'ies'} removed")
    elif args.hcmd == "expire":
        removed = history.expire()
        print(f"{removed} entr{'y' if removed == 1 else 'ies'} unused for {config.history.expiry_days:g} days removed")
    elif args.hcmd == "personal":
        if args.pcmd == "add":
            added = history.add_personal(args.sender, args.address, _actor(args))
            print(f"{args.address} {'registered' if added else 'was already registered'} as a personal account "
                  f"of {args.sender}")
        elif args.pcmd == "remove":
            if not history.remove_personal(args.sender, args.address):
                print(f"dlp-gateway: {args.address} is not registered for {args.sender}", file=sys.stderr)
                return 1
            print(f"{args.address} removed")
        else:
            for sender, address, added_at, added_by in history.list_personal(args.sender):
                when = time.strftime("%Y-%m-%d", time.gmtime(added_at))
                print(f"{sender}  {address}  added {when} by {added_by}")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dlp-gateway", description="Outbound email data-loss-prevention gateway")
    parser.add_argument("--log-level", default=os.environ.get("DLP_GATEWAY_LOG_LEVEL", "INFO"),
                        help="DEBUG, INFO, WARNING or ERROR (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        p.add_argument("--config", metavar="FILE", help="YAML merged over the built-in defaults")
        return p

    def config_too(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
        """--config after a sub-command as well as before it (SUPPRESS: an absent one keeps the other)."""
        p.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS,
                       help="YAML merged over the built-in defaults")
        return p

    with_config(sub.add_parser("serve", help="run the SMTP/LMTP relay")).set_defaults(func=cmd_serve)
    with_config(sub.add_parser("check-config", help="validate and print the effective configuration")).set_defaults(
        func=cmd_check_config
    )
    scan = with_config(sub.add_parser("scan", help="evaluate messages against the policy without sending"))
    scan.add_argument("--sender", metavar="ADDR", help="envelope sender (default: the From header)")
    scan.add_argument("--rcpt", metavar="ADDR", action="append", help="envelope recipient (repeatable; "
                      "default: To, Cc and Bcc)")
    scan.add_argument("files", nargs="+", metavar="FILE.eml")
    scan.set_defaults(func=cmd_scan)

    keygen = sub.add_parser("dkim-keygen", help="make a DKIM signing key and print its DNS TXT record")
    keygen.add_argument("domain", help="the From: domain to sign for, e.g. example.gov.uk")
    keygen.add_argument("selector", help="the selector, e.g. s2025")
    keygen.add_argument("--directory", default="var/dkim", help="where the private key goes (default var/dkim)")
    keygen.add_argument("--algorithm", default="rsa-sha256", choices=["rsa-sha256", "ed25519-sha256"])
    keygen.set_defaults(func=cmd_dkim_keygen)

    h = with_config(sub.add_parser("history", help="recipient history and registered personal accounts"))
    h.set_defaults(func=cmd_history)
    hsub = h.add_subparsers(dest="hcmd", required=True)
    hs = config_too(hsub.add_parser("show", help="whom a sender writes to, most often first"))
    hs.add_argument("sender")
    hs.add_argument("--json", action="store_true")
    hf = config_too(hsub.add_parser("forget", help="erase a sender's history, or one address from it"))
    hf.add_argument("sender")
    hf.add_argument("address", nargs="?")
    config_too(hsub.add_parser("expire", help="remove entries unused for history.expiry_days now"))
    hp = config_too(hsub.add_parser("personal", help="a sender's known personal accounts (count as personal "
                                                     "forwarding)"))
    psub = hp.add_subparsers(dest="pcmd", required=True)
    for name, text in (("add", "register ADDRESS as SENDER's personal account"), ("remove", "unregister it")):
        pp = config_too(psub.add_parser(name, help=text))
        pp.add_argument("sender")
        pp.add_argument("address")
        pp.add_argument("--actor", help="who is registering it (default: your login name)")
    config_too(psub.add_parser("list", help="registered personal accounts")).add_argument("sender", nargs="?")

    q = with_config(sub.add_parser("quarantine", help="list, show, read, release, delete, expire or rekey held messages"))
    q.set_defaults(func=cmd_quarantine)
    qsub = q.add_subparsers(dest="qcmd", required=True)
    ql = qsub.add_parser("list", help="held messages, newest first")
    ql.add_argument("--status", default="held", choices=["held", "released", "deleted", "expired", "all"])
    ql.add_argument("--limit", type=int, default=100)
    ql.add_argument("--json", action="store_true", help="one JSON object per line")
    qsub.add_parser("show", help="the decision, findings and action log of one message").add_argument("id")
    for name, text in (("read", "print the held message itself (recorded)"),
                       ("release", "deliver held recipients through the route the decision required"),
                       ("delete", "delete the held content (the decision stays in the index)")):
        p = qsub.add_parser(name, help=text)
        p.add_argument("id")
        p.add_argument("--reason", help="why; recorded with your name (asked for if not given)")
        p.add_argument("--actor", help="who is acting (default: your login name)")
        if name == "release":
            p.add_argument("--rcpt", action="append", metavar="ADDR", help="release only to this recipient "
                           "(repeatable; default: every held recipient)")
    qe = qsub.add_parser("expire", help="expire now what is older than quarantine.retention_days")
    qe.add_argument("--dry-run", action="store_true", help="list what would expire; change nothing")
    qe.add_argument("--actor", help="who is running it (default: your login name)")
    qsub.add_parser("rekey", help="re-encrypt every held message under the first of quarantine.keys").add_argument(
        "--actor", help="who is acting (default: your login name)")

    ap = sub.add_parser("admin-passwd", help="make the password hash of a review UI user (for admin.users)")
    ap.add_argument("name", help="the reviewer's user name")
    ap.set_defaults(func=cmd_admin_passwd)

    qk = sub.add_parser("quarantine-keygen", help="make a key file for encrypting held mail (quarantine.keys)")
    qk.add_argument("file", help="where to write it; never overwritten")
    qk.set_defaults(func=cmd_quarantine_keygen)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # aiosmtpd logs every command line at INFO
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
