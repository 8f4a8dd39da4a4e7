"""Configuration: the embedded defaults in config/default.yaml, a file merged over them, validation.

Every error names the file and the dotted key it is about, so a person can fix
it without reading code. The gateway refuses to start on any error.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo,
                      field_validator, model_validator)

from detectors.base import MarkingLevel
from gateway.decision import Action, RecipientClass
from gateway.routes import RouteSpec, parse_route
from gateway.shipped import CONFIG_DIRECTORY

if TYPE_CHECKING:
    from detectors.attachments import Limits

DEFAULTS_FILE = Path(os.environ.get("DLP_GATEWAY_DEFAULTS", CONFIG_DIRECTORY / "default.yaml"))


class ConfigError(Exception):
    """The configuration cannot be used; `problems` are lines a person can act on."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def parse_listen(value: str) -> tuple[str, int] | None:
    """'host:port' or '[v6]:port' -> (host, port); '' -> None."""
    if value == "":
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("must be 'host:port' with a port from 1 to 65535, or \"\" to disable")
    host = host.strip("[]")
    if not host:
        raise ValueError("must name a host, e.g. '127.0.0.1:10025'")
    return host, int(port)


def _check_listen(value: str) -> str:
    parse_listen(value)
    return value


ListenAddress = Annotated[str, AfterValidator(_check_listen)]


class ServerSettings(_Section):
    smtp_listen: ListenAddress
    lmtp_listen: ListenAddress
    allowed_networks: list[str]
    max_message_size: int = Field(gt=0)
    max_recipients: int = Field(gt=0)
    max_connections: int = Field(gt=0)
    idle_timeout: float = Field(gt=0)
    transaction_timeout: float = Field(gt=0)
    hostname: str
    workers: int = Field(ge=0)
    inspection_timeout: float = Field(gt=0)
    tls_cert: str
    tls_key: str
    require_tls: bool

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, v: list[str]) -> list[str]:
        for net in v:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"{net!r} is not a network such as '127.0.0.0/8' or '::1/128'") from None
        return v

    @model_validator(mode="after")
    def _tls(self) -> "ServerSettings":
        if bool(self.tls_cert) != bool(self.tls_key):
            raise ValueError("tls_cert and tls_key must be set together")
        if self.require_tls and not self.tls_cert:
            raise ValueError("require_tls needs tls_cert and tls_key")
        for path in (self.tls_cert, self.tls_key):
            if path and not Path(path).is_file():
                raise ValueError(f"file {path!r} does not exist")
        return self

    @property
    def networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(n, strict=False) for n in self.allowed_networks]


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return False


class AdminSettings(_Section):
    # listen is declared last so its check sees the sign-in settings (the YAML order is the documented one).
    users: dict[str, str]
    proxy_user_header: str
    trusted_proxies: list[str]
    session_hours: float = Field(gt=0)
    secure_cookies: Literal[True, False, "auto"]
    listen: ListenAddress

    @field_validator("users")
    @classmethod
    def _users(cls, v: dict[str, str]) -> dict[str, str]:
        from gateway.web.passwords import PasswordHash, PasswordHashError

        for name, stored in v.items():
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}", name):
                raise ValueError(f"{name!r}: a user name is letters, digits and . _ @ - (at most 64)")
            try:
                PasswordHash.parse(str(stored))
            except PasswordHashError as e:
                raise ValueError(f"{name}: the value {e}") from None
        return v

    @field_validator("proxy_user_header")
    @classmethod
    def _header(cls, v: str) -> str:
        if v and not re.fullmatch(r"[A-Za-z0-9-]+", v):
            raise ValueError("must be a header name such as 'X-Remote-User', or \"\" for none")
        return v

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies(cls, v: list[str], info: ValidationInfo) -> list[str]:
        for net in v:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise ValueError(f"{net!r} is not a network such as '127.0.0.1/32' or '10.0.0.0/24'") from None
        if info.data.get("proxy_user_header") and not v:
            raise ValueError("must list the reverse proxy's addresses when proxy_user_header is set "
                             "(only they may name the signed-in user)")
        return v

    @field_validator("listen")
    @classmethod
    def _not_open(cls, v: str, info: ValidationInfo) -> str:
        address = parse_listen(v)
        if address is None or _is_loopback(address[0]):
            return v
        if not info.data.get("users") and not info.data.get("proxy_user_header"):
            raise ValueError(f"{v!r} is not a loopback address, and with neither admin.users nor "
                             "admin.proxy_user_header set the review UI would have no sign-in; add a user "
                             "(dlp-gateway admin-passwd NAME) or a proxy header, or listen on 127.0.0.1")
        return v

    @property
    def proxies(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(n, strict=False) for n in self.trusted_proxies]


class RouteSettings(_Section):
    relay: str
    secure: str

    @field_validator("relay", "secure")
    @classmethod
    def _url(cls, v: str) -> str:
        parse_route(v)
        return v

    def spec(self, name: str) -> RouteSpec:
        return parse_route(getattr(self, name))


class DeliverySettings(_Section):
    timeout: float = Field(gt=0)
    helo_name: str
    connection_reuse_time: float = Field(ge=0)


class StorageSettings(_Section):
    database_url: str
    quarantine_dir: str
    timeout: float = Field(gt=0)

    @field_validator("database_url")
    @classmethod
    def _db(cls, v: str) -> str:
        if not v.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:", "postgres:")):
            raise ValueError("must be a sqlite:/// or postgresql:// URL")
        return v


def _check_quarantine_key(path: str) -> str:
    from gateway.quarantine_keys import load_key

    load_key(path)  # KeyFileError is a ValueError naming the file
    return path


QuarantineKeyFile = Annotated[str, AfterValidator(_check_quarantine_key)]


class QuarantineSettings(_Section):
    keys: list[QuarantineKeyFile]
    retention_days: int = Field(gt=0)
    expire_interval: float = Field(gt=0)
    notify_sender: bool

    @field_validator("keys")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        from gateway.quarantine_keys import load_key

        seen: dict[bytes, str] = {}
        for path in v:
            key = load_key(path)
            if key.id in seen:
                raise ValueError(f"{seen[key.id]} and {path} hold the same key ({key.hex_id}); list each key once")
            seen[key.id] = path
        return v


class HistorySettings(_Section):
    enabled: bool
    max_per_sender: int = Field(gt=0)
    expiry_days: float = Field(gt=0)
    frequent_min: int = Field(gt=0)


class AuditSettings(_Section):
    path: str


class BounceSettings(_Section):
    postmaster: str
    reporting_mta: str
    contact: str
    policy_name: str = Field(min_length=1)
    policy_url: str
    templates: str
    notify_held: bool

    @field_validator("postmaster")
    @classmethod
    def _addr(cls, v: str) -> str:
        if "@" not in v or any(c in v for c in " <>\r\n"):
            raise ValueError("must be a plain address such as 'postmaster@example.gov.uk'")
        return v

    @field_validator("policy_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if v and (not v.startswith(("https://", "http://")) or any(c.isspace() for c in v)):
            raise ValueError("must be an https:// (or http://) address, or \"\" for none")
        return v

    @field_validator("templates")
    @classmethod
    def _templates(cls, v: str) -> str:
        from gateway.actions.notices import NoticeTemplates

        NoticeTemplates.load(v)  # TemplateError is a ValueError naming the file
        return v


class HeadersSettings(_Section):
    verdict: bool
    reference: bool
    strip_for_external: bool


class NerSettings(_Section):
    model: str
    max_chars: int = Field(gt=0)
    preload: bool


class SpecialCategorySettings(_Section):
    max_unit_chars: int = Field(gt=0)


class PersonNameSettings(_Section):
    min_rows: int = Field(gt=0)


class MarkingSettings(_Section):
    namespaces: list[str]
    msip_labels: dict[str, dict[str, MarkingLevel]]
    legacy: dict[str, MarkingLevel]
    edge_lines: int = Field(ge=0)

    @model_validator(mode="after")
    def _usable(self) -> "MarkingSettings":
        from detectors.markings.protective_marking import ProtectiveMarkingDetector

        ProtectiveMarkingDetector(**self.model_dump())  # GUIDs and words are checked there
        return self


class DetectorSettings(_Section):
    ner: NerSettings
    special_category: SpecialCategorySettings
    person_name: PersonNameSettings
    markings: MarkingSettings


class AttachmentSettings(_Section):
    max_depth: int = Field(ge=0)
    max_members: int = Field(gt=0)
    max_expanded_bytes: int = Field(gt=0)
    max_ratio: float = Field(gt=1)
    max_seconds: float = Field(gt=0)

    @property
    def limits(self) -> "Limits":
        from detectors.attachments import Limits

        return Limits(**self.model_dump())


class DisclaimerSettings(_Section):
    enabled: bool
    text_template: str
    html_template: str

    @model_validator(mode="after")
    def _templates(self) -> "DisclaimerSettings":
        from gateway.disclaimer import load_disclaimer

        load_disclaimer(self.text_template, self.html_template)  # TemplateError is a ValueError naming the file
        return self


class DkimDomain(_Section):
    selector: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9.-]*$")
    key_file: str

    @field_validator("key_file")
    @classmethod
    def _key(cls, v: str) -> str:
        from gateway.dkim import load_private_key

        load_private_key(v)  # KeyFileError is a ValueError naming the file
        return v


class DkimSettings(_Section):
    domains: dict[str, DkimDomain]


def _check_domains(v: list[str]) -> list[str]:
    out = []
    for d in v:
        d = d.strip().lower()
        if not d or "@" in d or " " in d:
            raise ValueError(f"{d!r} is not a domain such as 'example.gov.uk' or '*.example.gov.uk'")
        out.append(d)
    return out


DomainList = Annotated[list[str], AfterValidator(_check_domains)]


class OrganisationSettings(_Section):
    name: str
    internal_domains: DomainList
    trusted_domains: DomainList
    personal_domains: DomainList


FACTS = (
    "personal_data", "bulk_personal_data", "encrypted_content", "auto_forwarded",
    "exposed_recipients", "incomplete_inspection", "has_attachment", "sensitive",
    "personal_forwarding", "lookalike_domain", "greeting_mismatch", "autocomplete_mistake",
    "first_time_recipient",
)


class Condition(_Section):
    """When a rule fires: every key given must hold."""

    marking: list[MarkingLevel] | None = None
    any_of: list[str] | None = None
    personal_data: bool | None = None
    bulk_personal_data: bool | None = None
    encrypted_content: bool | None = None
    auto_forwarded: bool | None = None
    exposed_recipients: bool | None = None
    incomplete_inspection: bool | None = None
    has_attachment: bool | None = None
    sensitive: bool | None = None
    personal_forwarding: bool | None = None
    lookalike_domain: bool | None = None
    greeting_mismatch: bool | None = None
    autocomplete_mistake: bool | None = None
    first_time_recipient: bool | None = None

    @field_validator("any_of")
    @classmethod
    def _facts(cls, v: list[str] | None) -> list[str] | None:
        for fact in v or []:
            if fact not in FACTS:
                raise ValueError(f"unknown fact {fact!r}; known: {', '.join(FACTS)}")
        return v

    @model_validator(mode="after")
    def _not_empty(self) -> "Condition":
        if not self.model_dump(exclude_none=True):
            raise ValueError("a rule needs at least one condition")
        return self

    def facts(self) -> dict[str, bool]:
        return {f: getattr(self, f) for f in FACTS if getattr(self, f) is not None}


class Rule(_Section):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    title: str = Field(min_length=1)
    when: Condition
    actions: dict[RecipientClass, Action]
    guidance: str = Field(min_length=1)


class PolicySettings(_Section):
    bulk_threshold: int = Field(gt=0)
    bcc_threshold: int = Field(gt=0)
    rules: list[Rule]

    @field_validator("rules")
    @classmethod
    def _unique(cls, v: list[Rule]) -> list[Rule]:
        names = [r.name for r in v]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rule names must be unique; repeated: {', '.join(dupes)}")
        return v


class Config(_Section):
    server: ServerSettings
    admin: AdminSettings
    routes: RouteSettings
    delivery: DeliverySettings
    storage: StorageSettings
    quarantine: QuarantineSettings
    history: HistorySettings
    audit: AuditSettings
    bounce: BounceSettings
    headers: HeadersSettings
    detectors: DetectorSettings
    attachments: AttachmentSettings
    disclaimer: DisclaimerSettings
    dkim: DkimSettings
    organisation: OrganisationSettings
    policy: PolicySettings

    @property
    def hostname(self) -> str:
        import socket

        return self.server.hostname or socket.getfqdn()


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([f"{path}: cannot read the file: {e.strerror}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError([f"{path}: not valid YAML{where}: {getattr(e, 'problem', e)}"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError([f"{path}: the top level must be a mapping of sections (server:, routes:, ...)"])
    return data


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """Mappings merge key by key; anything else in `over` replaces what `base` had."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _has_key(data: Any, loc: tuple[Any, ...]) -> bool:
    for part in loc:
        if isinstance(data, dict) and part in data:
            data = data[part]
        elif isinstance(data, list) and isinstance(part, int) and part < len(data):
            data = data[part]
        else:
            return False
    return True


def load_config(path: str | os.PathLike[str] | None = None) -> Config:
    """The defaults with `path` merged over them, validated; raises ConfigError."""
    data = _read_yaml(DEFAULTS_FILE)
    user: dict[str, Any] = {}
    if path is not None:
        user = _read_yaml(Path(path))
        data = merge(data, user)
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            key = ".".join(str(p) for p in loc) or "(top level)"
            source = path if path is not None and _has_key(user, loc[:1]) else DEFAULTS_FILE
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key (misspelt, or not a setting of this section)"
            problems.append(f"{source}: {key}: {msg}")
        raise ConfigError(problems) from None


def effective_yaml(config: Config) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True, width=100)
