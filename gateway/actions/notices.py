"""What the gateway tells a sender in words: the human part of a bounce, the notice that a
message is held for review, and the notice that a held message was released or deleted.

Rendered from Jinja2 templates (`bounce.templates`, by default config/templates/),
loaded and test-rendered once when the configuration is read, so a broken template
is a configuration error, never a failure per message. A template sees only kinds,
counts and locations of what was found, rule titles and guidance: never the matched
data, the body or the attachments.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from email import policy as email_policy
from email.message import EmailMessage, MIMEPart
from email.parser import BytesHeaderParser
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from detectors.base import Category, Finding, MarkingLevel, Signal
from gateway.config import Condition, Config, Rule
from gateway.decision import Action, RecipientClass, RecipientDecision
from gateway.disclaimer import TEMPLATES as DEFAULT_TEMPLATES
from gateway.pipeline import Inspection
from gateway.policy import deciding_rules

if TYPE_CHECKING:
    from gateway.actions.quarantine import HeldMessage

TEMPLATE_FILES = (
    "bounce.txt.j2", "bounce.html.j2",
    "notice-held.txt.j2", "notice-held.html.j2",
    "notice-outcome.txt.j2", "notice-outcome.html.j2",
)
OUTCOMES = ("released", "deleted")

CLASS_WORDS = {
    RecipientClass.INTERNAL: "internal address",
    RecipientClass.TRUSTED: "secure partner address",
    RecipientClass.EXTERNAL: "external address",
    RecipientClass.PERSONAL: "personal email account",
}

# The rule condition each signal establishes, to show under a rule what made it fire.
_SIGNAL_FACTS = {
    Signal.ENCRYPTED: "encrypted_content",
    Signal.INCOMPLETE: "incomplete_inspection",
    Signal.AUTO_FORWARDED: "auto_forwarded",
    Signal.NAME_LIKENESS: "personal_forwarding",
    Signal.LOOKALIKE: "lookalike_domain",
    Signal.EXPOSED_RECIPIENTS: "exposed_recipients",
    Signal.GREETING_MISMATCH: "greeting_mismatch",
    Signal.AUTOCOMPLETE: "autocomplete_mistake",
    Signal.FIRST_TIME: "first_time_recipient",
}
# Told in a sentence of their own ("did you mean ...?", "first time") rather than as a finding.
_TOLD_APART = (Signal.LOOKALIKE, Signal.FIRST_TIME)
_LEVELS = list(MarkingLevel)


class TemplateError(ValueError):
    """A notice template cannot be used; the message names the file and says what is wrong."""


# --- wording ------------------------------------------------------------------------------

def location_words(location: str) -> str:
    if location == "subject":
        return "the subject line"
    if location == "body":
        return "the message text"
    if location == "message":
        return "the message"
    if location == "envelope":
        return "the recipient address"
    if location.startswith("attachment:"):
        return f"attachment '{location.split(':', 1)[1]}'"
    if location.startswith("header:"):
        return f"the {location.split(':', 1)[1]} header"
    return location


def plural(kind: str, count: int) -> str:
    """'3 email addresses', '2 NHS numbers', '1 IBAN'; kinds already plural stay as they are."""
    if count == 1:
        return kind
    if kind.endswith("a named person"):   # "health information about a named person"
        return kind.removesuffix("a named person") + "named people"
    if kind.endswith("person"):
        return kind.removesuffix("person") + "people"
    if kind.endswith(("ss", "sh", "ch", "x")):
        return kind + "es"
    return kind if kind.endswith("s") else kind + "s"


# --- what a template sees -----------------------------------------------------------------

@dataclass(frozen=True)
class Found:
    """What was found, without the data: "attachment 'referrals.xlsx': 27 National Insurance numbers"."""

    kind: str
    count: int
    location: str

    @property
    def what(self) -> str:
        return f"{self.count} {plural(self.kind, self.count)}"

    @property
    def where(self) -> str:
        return location_words(self.location)

    def __str__(self) -> str:
        return f"{self.where}: {self.what}"


@dataclass(frozen=True)
class RuleNote:
    name: str
    title: str
    guidance: str
    found: tuple[Found, ...]             # what made this rule fire, where the findings show it


@dataclass(frozen=True)
class Addressee:
    address: str
    kind: str                            # "personal email account"; "" when not known


@dataclass(frozen=True)
class Explanation:
    """One or more recipients that share an outcome and the reasons for it."""

    recipients: tuple[Addressee, ...]
    rules: tuple[RuleNote, ...]          # the rules that gave the outcome, to lead with
    also: tuple[RuleNote, ...]           # other rules that fired for these recipients, mentioned briefly
    suggestions: tuple[str, ...]         # "did you mean" addresses
    first_time: bool                     # the sender has not written to this address before
    diagnostic: str = ""                 # the next hop's reply, when it (not a rule) refused the recipient


@dataclass(frozen=True)
class Notice:
    """Everything a bounce or notice template may show."""

    organisation: str
    policy_name: str
    policy_url: str
    contact: str
    reference: str
    subject: str                         # the message's subject; "" when unknown or not safe to repeat
    message_id: str
    sent: str                            # when the gateway took the message, in words
    blocked: tuple[Explanation, ...] = ()
    held: tuple[Explanation, ...] = ()
    failed: tuple[Explanation, ...] = ()     # refused by the next hop
    released: tuple[Explanation, ...] = ()
    deleted: tuple[Explanation, ...] = ()
    reason: str = ""                     # the reviewer's reason, for released and deleted
    notify_outcome: bool = False         # the sender will be told when a held message is released or deleted

    def context(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class Rendered:
    text: str
    html: str


# --- templates ----------------------------------------------------------------------------

class NoticeTemplates:
    """The six templates of one directory, compiled and checked by rendering them once."""

    def __init__(self, directory: Path, environment: jinja2.Environment):
        self.directory = directory
        self.environment = environment

    @classmethod
    def load(cls, directory: str | Path = "") -> "NoticeTemplates":
        """Raises TemplateError naming the file for a missing directory or template, a syntax
        error, or a name the template uses that notices do not provide."""
        where = Path(directory) if str(directory) else DEFAULT_TEMPLATES
        if not where.is_dir():
            raise TemplateError(f"{where} is not a directory of templates ({', '.join(TEMPLATE_FILES)})")
        env = SandboxedEnvironment(
            loader=jinja2.FileSystemLoader(str(where)),
            autoescape=lambda name: bool(name) and name.endswith((".html.j2", ".html")),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        templates = cls(where, env)
        for name in TEMPLATE_FILES:
            if not (where / name).is_file():
                raise TemplateError(f"{where / name} is missing (copy it from {DEFAULT_TEMPLATES / name})")
        for sample in _samples():
            for name in TEMPLATE_FILES:
                templates._render(name, sample)
        return templates

    def _render(self, name: str, notice: Notice) -> str:
        try:
            return self.environment.get_template(name).render(notice.context())
        except jinja2.TemplateSyntaxError as e:
            raise TemplateError(f"{e.filename or self.directory / name}, line {e.lineno}: {e.message}") from None
        except jinja2.TemplateNotFound as e:
            raise TemplateError(f"{self.directory / name}: includes {e.name}, which is not in {self.directory}") from None
        except jinja2.TemplateError as e:
            raise TemplateError(f"{_template_line(e) or self.directory / name}: {e.message or e}") from None

    def render(self, stem: str, notice: Notice) -> Rendered:
        """`stem` is "bounce", "notice-held" or "notice-outcome"."""
        text = self._render(f"{stem}.txt.j2", notice)
        # Templates may be generous with blank lines; a reader sees at most one between paragraphs.
        text = re.sub(r"\n{3,}", "\n\n", re.sub(r"[ \t]+\n", "\n", text)).strip("\n") + "\n"
        return Rendered(text, self._render(f"{stem}.html.j2", notice))


def _template_line(error: BaseException) -> str:
    """"FILE, line N" of the innermost template frame of `error` (Jinja rewrites tracebacks to them)."""
    where = ""
    tb = error.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith(".j2"):
            where = f"{filename}, line {tb.tb_lineno}"
        tb = tb.tb_next
    return where


@lru_cache(maxsize=8)
def templates_in(directory: str) -> NoticeTemplates:
    """The loaded templates of `directory` ("" = the shipped ones), once per process."""
    return NoticeTemplates.load(directory)


def _samples() -> list[Notice]:
    """Notices that exercise every name a template may use, for checking templates at start-up."""
    found = (Found("National Insurance number", 27, "attachment:referrals.xlsx"),
             Found("OFFICIAL-SENSITIVE protective marking", 1, "subject"))
    rule = RuleNote("personal-data", "personal data about an identifiable person", "Use the secure email service.", found)
    other = RuleNote("first-time-recipient", "sensitive message to a new address", "Check the address.", ())
    full = Explanation((Addressee("someone@gmail.com", "personal email account"),
                        Addressee("other@example.com", "external address")),
                       (rule,), (other,), ("someone@nhs.net",), True)
    failed = Explanation((Addressee("nobody@example.com", ""),), (), (), (), False, "550 5.1.1 no such user")
    everything = Notice(
        organisation="Example Council", policy_name="the email policy", policy_url="https://example.org/policy",
        contact="it-security@example.org", reference="ABC123", subject="Minutes <b>", message_id="<m@example.org>",
        sent="4 March 2025 at 10:15 UTC", blocked=(full,), held=(full,), failed=(failed,), released=(full,),
        deleted=(full,), reason="checked with the sender", notify_outcome=True,
    )
    bare = Explanation((Addressee("someone@gmail.com", ""),), (), (), (), False)
    sparse = replace(everything, policy_url="", subject="", message_id="", blocked=(bare,), held=(bare,),
                     failed=(), released=(bare,), deleted=(bare,), reason="", notify_outcome=False)
    nothing = replace(sparse, blocked=(), held=(), released=(), deleted=())
    return [everything, sparse, nothing]


# --- explanations -------------------------------------------------------------------------

def _about(finding: Finding, address: str) -> bool:
    return not finding.recipients or address.lower() in (r.lower() for r in finding.recipients)


def _shows(condition: Condition, finding: Finding) -> bool:
    """Whether `finding` is part of why a rule with `condition` fired."""
    wanted = {name for name, value in condition.facts().items() if value} | set(condition.any_of or ())
    if finding.level is not None:
        if condition.marking and finding.level in condition.marking:
            return True
        sensitive = _LEVELS.index(finding.level) >= _LEVELS.index(MarkingLevel.OFFICIAL_SENSITIVE)
        return sensitive and "sensitive" in wanted
    if finding.category is Category.PERSONAL_DATA:
        return bool(wanted & {"personal_data", "bulk_personal_data", "sensitive"})
    if finding.category is Category.PERSONAL_FORWARDING and "personal_forwarding" in wanted:
        return True
    return finding.signal is not None and _SIGNAL_FACTS.get(finding.signal) in wanted


def _found(findings: Iterable[Finding]) -> tuple[Found, ...]:
    """One line per kind and place; the same kind found twice in one place counts once, at its largest."""
    out: dict[tuple[str, str], int] = {}
    for f in findings:
        if f.signal in _TOLD_APART:
            continue
        key = (f.kind, f.location)
        out[key] = max(out.get(key, 0), f.count)
    return tuple(Found(kind, count, location) for (kind, location), count in out.items())


def _suggestions(address: str, findings: Iterable[Finding]) -> tuple[str, ...]:
    local = address.rpartition("@")[0]
    out: dict[str, None] = {}
    for f in findings:
        detail = f.detail.strip().removeprefix("resembles ").strip()
        if not detail or any(c.isspace() for c in detail):
            continue
        if f.signal is Signal.LOOKALIKE and "@" not in detail and local:
            out.setdefault(f"{local}@{detail}")
        elif f.signal in (Signal.LOOKALIKE, Signal.AUTOCOMPLETE) and "@" in detail:
            out.setdefault(detail)
    out.pop(address, None)
    return tuple(out)


def explain(
    config: Config, address: str, rclass: RecipientClass | None, fired: Sequence[str], action: Action,
    findings: Sequence[Finding], diagnostic: str = "",
) -> Explanation:
    """Why `address` got `action`: the rules that gave it first, the others after; only findings about it."""
    relevant = [f for f in findings if _about(f, address)]
    by_name = {r.name: r for r in config.policy.rules}
    deciding = set(deciding_rules(config.policy.rules, rclass, fired, action))
    lead: list[RuleNote] = []
    also: list[RuleNote] = []
    for name in fired:
        rule: Rule | None = by_name.get(name)
        note = (RuleNote(name, name, "", ()) if rule is None  # renamed or removed since the message was held
                else RuleNote(rule.name, rule.title, rule.guidance,
                              _found(f for f in relevant if _shows(rule.when, f))))
        (lead if name in deciding else also).append(note)
    return Explanation(
        recipients=(Addressee(address, CLASS_WORDS.get(rclass, "") if rclass is not None else ""),),
        rules=tuple(lead),
        also=tuple(also),
        suggestions=_suggestions(address, relevant),
        first_time=any(f.signal is Signal.FIRST_TIME for f in relevant),
        diagnostic=diagnostic,
    )


def grouped(explanations: Iterable[Explanation]) -> tuple[Explanation, ...]:
    """Recipients with the same reasons told once, in the order they came."""
    groups: dict[tuple[object, ...], Explanation] = {}
    for e in explanations:
        key = (e.rules, e.also, e.suggestions, e.first_time, e.diagnostic)
        if key in groups:
            groups[key] = replace(groups[key], recipients=groups[key].recipients + e.recipients)
        else:
            groups[key] = e
    return tuple(groups.values())


# --- facts about the original message ----------------------------------------------------

def original_headers(raw: bytes) -> bytes:
    m = re.search(rb"\r?\n\r?\n", raw)
    return raw[: m.start()] if m else raw


_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def subject_of(raw: bytes, findings: Iterable[Finding], limit: int = 150) -> str:
    """The decoded subject, for the sender to recognise their message; "" if personal data was
    found in it (a notice never repeats data)."""
    if any(f.location == "subject" and f.category is Category.PERSONAL_DATA for f in findings):
        return ""
    try:
        headers = BytesHeaderParser(policy=email_policy.default).parsebytes(original_headers(raw) + b"\r\n\r\n")
        subject = str(headers.get("Subject", "") or "")
    except Exception:  # an unreadable subject is left out, never a reason to fail
        return ""
    subject = " ".join(_CONTROL.sub(" ", subject).split())
    return subject if len(subject) <= limit else subject[: limit - 1].rstrip() + "…"


def message_id_of(value: str) -> str:
    """`value` if it is a usable Message-ID for In-Reply-To, else ""."""
    value = value.strip()
    return value if re.fullmatch(r"<[!-;=?-~]{1,900}@[!-;=?-~]{1,250}>", value) else ""


def when(seconds: float) -> str:
    return time.strftime("%d %B %Y at %H:%M UTC", time.gmtime(seconds)).lstrip("0")


def base_notice(config: Config, reference: str, subject: str, message_id: str, at: float) -> Notice:
    b = config.bounce
    return Notice(
        organisation=config.organisation.name, policy_name=b.policy_name, policy_url=b.policy_url,
        contact=b.contact or b.postmaster, reference=reference, subject=subject,
        message_id=message_id_of(message_id), sent=when(at),
        # The quarantine sends release and delete notices when quarantine.notify_sender is on.
        notify_outcome=bool(getattr(getattr(config, "quarantine", None), "notify_sender", False)),
    )


# --- messages -----------------------------------------------------------------------------

def alternative(rendered: Rendered) -> MIMEPart:
    """A multipart/alternative part: the plain text first, the HTML after (clients show the last they can)."""
    part = MIMEPart(policy=email_policy.SMTP)
    part.set_content(rendered.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    part.add_alternative(rendered.html, subtype="html", charset="utf-8", cte="quoted-printable")
    return part


def _needs_utf8(address: str) -> bool:
    return not address.isascii()


def notice_message(config: Config, to: str, subject: str, reference: str, in_reply_to: str,
                   rendered: Rendered) -> bytes:
    """An ordinary automatic message from the postmaster (not a DSN): it must not be answered
    automatically, and nothing automatic should answer it."""
    domain = config.bounce.reporting_mta or config.hostname
    msg = EmailMessage(policy=email_policy.SMTPUTF8 if _needs_utf8(to) else email_policy.SMTP)
    msg["From"] = f"Email gateway <{config.bounce.postmaster}>"
    msg["To"] = f"<{to}>"
    msg["Subject"] = subject
    msg["Date"] = email.utils.formatdate(localtime=False)
    msg["Message-ID"] = email.utils.make_msgid(domain=domain)
    if message_id_of(in_reply_to):
        msg["In-Reply-To"] = in_reply_to.strip()
        msg["References"] = in_reply_to.strip()
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-DLP-Reference"] = reference
    msg.set_content(rendered.text, subtype="plain", charset="utf-8", cte="quoted-printable")
    msg.add_alternative(rendered.html, subtype="html", charset="utf-8", cte="quoted-printable")
    for part in msg.iter_parts():
        del part["MIME-Version"]  # the email package repeats it on parts; it belongs on the message only
    return msg.as_bytes()


def mail_options_for(to: str) -> tuple[str, ...]:
    """What a notice to `to` needs from the relay."""
    return ("SMTPUTF8",) if _needs_utf8(to) else ()


def build_held_notice(config: Config, inspection: Inspection, sender: str, raw: bytes,
                      held: Sequence[RecipientDecision]) -> bytes:
    """The notice telling `sender` which recipients their message is held for, why, and what happens next.
    The caller sends it with the null sender, only when bounce.should_bounce allows."""
    findings = inspection.findings
    explanations = [explain(config, r.address, r.rclass, r.rules, Action.QUARANTINE, findings) for r in held]
    notice = replace(base_notice(config, inspection.reference, subject_of(raw, findings), inspection.message_id,
                                 time.time()),
                     held=grouped(explanations))
    rendered = templates_in(config.bounce.templates).render("notice-held", notice)
    return notice_message(config, sender, f"Held for review: your message (reference {inspection.reference})",
                          inspection.reference, inspection.message_id, rendered)


def finding_from(record: dict[str, object]) -> Finding | None:
    """A finding as the quarantine index stores it (Finding.to_json), back as a Finding."""
    try:
        level = record.get("level")
        signal = record.get("signal")
        return Finding(
            detector=str(record.get("detector", "")),
            category=Category(str(record.get("category", Category.ATTACHMENT.value))),
            kind=str(record["kind"]),
            location=str(record.get("location", "message")),
            count=int(record.get("count", 1)),  # type: ignore[call-overload]
            signal=Signal(str(signal)) if signal else None,
            level=MarkingLevel(str(level)) if level else None,
            recipients=tuple(str(r) for r in record.get("recipients", ()) or ()),  # type: ignore[union-attr]
            detail=str(record.get("detail", "")),
        )
    except (KeyError, ValueError, TypeError):
        return None


def build_outcome_notice(config: Config, held: "HeldMessage", outcome: str, recipients: list[str], reason: str) -> bytes:
    """The notice telling the sender of a held message that the security team `outcome`
    ("released" or "deleted") it for `recipients`, with the reason they gave.

    The caller sends it with the null sender to held.sender through the relay route (with
    mail_options_for(held.sender)), and only when quarantine.notify_sender is on and
    bounce.should_bounce(held.sender, <the held bytes>) allows: nothing to the null sender
    or to automatic mail."""
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}, not {outcome!r}")
    findings = [f for f in (finding_from(r) for r in held.findings) if f is not None]
    wanted = {a.lower() for a in recipients}
    explanations = []
    for r in held.recipients:
        if r.address.lower() not in wanted:
            continue
        try:
            rclass: RecipientClass | None = RecipientClass(r.rclass)
        except ValueError:
            rclass = None
        explanations.append(explain(config, r.address, rclass, r.rules, Action.QUARANTINE, findings))
    known = {r.address.lower() for r in held.recipients}
    explanations += [explain(config, a, None, held.rules, Action.QUARANTINE, findings)
                     for a in recipients if a.lower() not in known]
    notice = replace(base_notice(config, held.id, "", held.message_id, held.created_at),
                     reason=" ".join(reason.split()), **{outcome: grouped(explanations)})
    rendered = templates_in(config.bounce.templates).render("notice-outcome", notice)
    subject = ("Released: your held message has been sent" if outcome == "released"
               else "Deleted: your held message was not sent")
    return notice_message(config, held.sender, f"{subject} (reference {held.id})", held.id, held.message_id,
                          rendered)
