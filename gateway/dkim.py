"""DKIM signing of the mail the gateway sends on (RFC 6376, relaxed/relaxed, with dkimpy), and key generation.

The signer chooses the key by the domain of the From: header, because that is the
domain DMARC checks a signature against; a message from a domain without a key leaves
unsigned, silently. Keys are read once, at start: a key that cannot be used is a
configuration error naming its file. Signing a message never raises; a message that
cannot be signed leaves unsigned with the reason, for the log.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses
from pathlib import Path

import dkim as dkimpy

RSA_SHA256 = "rsa-sha256"
ED25519_SHA256 = "ed25519-sha256"
ALGORITHMS = (RSA_SHA256, ED25519_SHA256)
MIN_RSA_BITS = 1024     # receivers ignore shorter keys (RFC 8301); keygen makes 2048
KEYGEN_RSA_BITS = 2048

# Signed once for each occurrence and once more, so a copy cannot gain a second one.
SIGNED_HEADERS = (
    "from", "sender", "reply-to", "subject", "date", "message-id", "to", "cc",
    "in-reply-to", "references", "mime-version", "content-type", "content-transfer-encoding",
)
# Signed even when absent, so none can be added: what a replayed message would change to
# mislead its reader. The others are not signed when absent: Postfix may add a missing
# Date, Message-ID or To when the gateway reinjects the message, and that must not break
# the signature. The gateway's own X-DLP-* headers are not signed: they are notes for
# systems downstream, which may rewrite or strip them; a recipient relies on none of them.
ALWAYS_SIGNED = ("from", "reply-to", "subject")


class DkimError(Exception):
    """A message could not be signed with the key given."""


class KeyFileError(ValueError):
    """A private key cannot be used; the message names the file and says what to do."""


@dataclass(frozen=True)
class SigningKey:
    algorithm: str          # rsa-sha256 or ed25519-sha256, from the key's type
    material: bytes         # as dkimpy takes it: PKCS#1 PEM for RSA, the base64 seed for Ed25519


@dataclass(frozen=True)
class DomainKey:
    domain: str
    selector: str
    key_file: str
    key: SigningKey


@dataclass(frozen=True)
class SignResult:
    raw: bytes                      # signed, or the input unchanged
    domain: str | None = None       # the d= of the signature, when signed
    reason: str | None = None       # why not signed


# --- keys -----------------------------------------------------------------------------------

def parse_private_key(data: bytes, source: str = "the key") -> SigningKey:
    """A PEM RSA or Ed25519 private key (PKCS#1, PKCS#8, or dkimpy's base64 Ed25519 seed)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    text = data.strip()
    if b"-----BEGIN" not in text:
        try:
            seed = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            seed = b""
        if len(seed) == 32:
            return SigningKey(ED25519_SHA256, base64.b64encode(seed))
        raise KeyFileError(f"{source} is not a PEM private key (it should start with '-----BEGIN')")
    try:
        key = serialization.load_pem_private_key(text, password=None)
    except TypeError:
        raise KeyFileError(f"{source} is protected by a passphrase; the gateway needs it without one (e.g. "
                           "'openssl pkey -in OLD -out NEW', then keep NEW readable by the gateway only)") from None
    except Exception as e:  # cryptography raises several kinds for damaged or unsupported keys
        raise KeyFileError(f"{source} is not a usable PEM private key ({e})") from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < MIN_RSA_BITS:
            raise KeyFileError(f"{source} is a {key.key_size}-bit RSA key; receivers ignore DKIM keys under "
                               f"{MIN_RSA_BITS} bits. Make a new one with 'dlp-gateway dkim-keygen'")
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
        return SigningKey(RSA_SHA256, pem)
    if isinstance(key, ed25519.Ed25519PrivateKey):
        seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                 serialization.NoEncryption())
        return SigningKey(ED25519_SHA256, base64.b64encode(seed))
    raise KeyFileError(f"{source} is a {type(key).__name__.removeprefix('_')} key; DKIM needs an RSA or Ed25519 key")


@lru_cache(maxsize=16)
def _parsed_key(data: bytes) -> SigningKey:
    return parse_private_key(data)  # parsing and checking an RSA key costs far more than signing with it


def load_private_key(path: str | os.PathLike[str]) -> SigningKey:
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise KeyFileError(f"cannot read the DKIM key file {path}: {e.strerror}"
                           + (" (is it readable by the user the gateway runs as?)" if e.errno == 13 else "")) from None
    return parse_private_key(data, f"the DKIM key file {path}")


# --- signing ----------------------------------------------------------------------------------

def _line_ending(raw: bytes) -> bytes:
    head = raw[:raw.find(b"\n") + 1]
    return b"\r\n" if head.endswith(b"\r\n") or not head else b"\n"


def _include_headers(names: list[str]) -> list[bytes]:
    include: list[bytes] = []
    for name in SIGNED_HEADERS:
        n = names.count(name)
        if n or name in ALWAYS_SIGNED:
            include += [name.encode()] * (n + 1)
    return include


def sign_with(raw: bytes, domain: str, selector: str, key: SigningKey) -> bytes:
    """`raw` with a DKIM-Signature header prepended. Raises DkimError."""
    try:
        d = dkimpy.DKIM(raw, linesep=_line_ending(raw))
        names = [name.decode("ascii", "replace").lower() for name, _ in d.headers]
        if "from" not in names:
            raise DkimError("the message has no From: header")
        signature = d.sign(selector.encode("ascii"), domain.encode("ascii"), key.material,
                           signature_algorithm=key.algorithm.encode(), canonicalize=(b"relaxed", b"relaxed"),
                           include_headers=_include_headers(names))
    except dkimpy.DKIMException as e:
        raise DkimError(str(e)) from None
    except UnicodeEncodeError:
        raise DkimError(f"domain {domain!r} and selector {selector!r} must be ASCII (use the IDNA A-label)") from None
    return signature + raw


def sign(raw: bytes, domain: str, selector: str, private_key_pem: bytes, algorithm: str = RSA_SHA256) -> bytes:
    """`raw` signed for `domain` with the PEM key; `algorithm` must match the key's type. Raises DkimError."""
    if algorithm not in ALGORITHMS:
        raise DkimError(f"unknown algorithm {algorithm!r}; use one of {', '.join(ALGORITHMS)}")
    try:
        key = _parsed_key(private_key_pem)
    except KeyFileError as e:
        raise DkimError(str(e)) from None
    if key.algorithm != algorithm:
        raise DkimError(f"the key is for {key.algorithm}, not {algorithm}")
    return sign_with(raw, domain, selector, key)


def from_domain(raw: bytes) -> str | None:
    """The one domain of the From: addresses; None when there is none or several."""
    blank = re.search(rb"\n\r?\n", raw)
    headers = BytesHeaderParser(policy=compat32).parsebytes(raw[:blank.end()] if blank else raw)
    values = [str(v) for v in headers.get_all("From") or []]
    domains = {addr.rpartition("@")[2].strip().rstrip(".").lower() for _, addr in getaddresses(values) if "@" in addr}
    domains.discard("")
    if len(domains) != 1:
        return None
    domain = domains.pop()
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return None


class DkimSigner:
    """Signs with the key of the From: domain, or of its nearest parent domain that has one
    (DMARC's relaxed alignment accepts a parent's signature for a subdomain's mail)."""

    def __init__(self, keys: Iterable[DomainKey]):
        self._keys = {k.domain.lower().rstrip("."): k for k in keys}

    @classmethod
    def from_table(cls, table: Mapping[str, tuple[str, str | os.PathLike[str]]],
                   key_prefix: str = "dkim.domains") -> "DkimSigner":
        """From domain -> (selector, key file). Reads every key now; raises ConfigError naming each bad one."""
        from gateway.config import ConfigError

        keys, problems = [], []
        for domain, (selector, key_file) in table.items():
            where = f"{key_prefix}.{domain}"
            if not _valid_name(domain):
                problems.append(f"{where}: {domain!r} is not a domain name such as 'example.gov.uk'")
                continue
            if not _valid_name(selector):
                problems.append(f"{where}.selector: {selector!r} is not a selector such as 's2025'")
                continue
            try:
                key = load_private_key(key_file)
            except KeyFileError as e:
                problems.append(f"{where}.key_file: {e}")
                continue
            keys.append(DomainKey(domain.lower().rstrip("."), selector, str(key_file), key))
        if problems:
            raise ConfigError(problems)
        return cls(keys)

    def __bool__(self) -> bool:
        return bool(self._keys)

    def key_for(self, domain: str) -> DomainKey | None:
        labels = domain.lower().rstrip(".").split(".")
        for i in range(len(labels) - 1):
            key = self._keys.get(".".join(labels[i:]))
            if key is not None:
                return key
        return None

    def sign(self, raw: bytes) -> SignResult:
        """Never raises: a message that cannot be signed is returned unchanged with the reason."""
        try:
            domain = from_domain(raw)
        except Exception:
            return SignResult(raw, reason="the From: header cannot be read")
        if domain is None:
            return SignResult(raw, reason="no single From: domain")
        key = self.key_for(domain)
        if key is None:
            return SignResult(raw, reason=f"no DKIM key for {domain}")
        try:
            return SignResult(sign_with(raw, key.domain, key.selector, key.key), domain=key.domain)
        except DkimError as e:
            return SignResult(raw, reason=f"signing for {key.domain} failed: {e}")
        except Exception as e:  # dkimpy on a message it cannot parse; the message still goes, unsigned
            return SignResult(raw, reason=f"signing for {key.domain} failed: {type(e).__name__}: {e}")


# --- key generation -------------------------------------------------------------------------------

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$", re.I)


def _valid_name(name: str) -> bool:
    name = name.rstrip(".")
    return bool(name) and len(name) <= 253 and all(_LABEL.match(label) for label in name.split("."))


def dns_txt_record(domain: str, selector: str, public_value: str) -> str:
    """The zone-file line; the value split into strings of at most 255 characters (RFC 1035)."""
    strings = " ".join(f'"{public_value[i:i + 255]}"' for i in range(0, len(public_value), 255))
    return f"{selector}._domainkey.{domain.rstrip('.')}. IN TXT {strings}"


def txt_value(record: str) -> bytes:
    """The TXT data a resolver returns for the record: its strings joined."""
    return "".join(re.findall(r'"([^"]*)"', record)).encode("ascii")


def keygen(domain: str, selector: str, directory: str | os.PathLike[str],
           algorithm: str = RSA_SHA256) -> tuple[Path, str]:
    """A new private key in DIRECTORY/DOMAIN.SELECTOR.key (mode 0600; the directory 0700 when created)
    and the DNS TXT record that publishes its public half. Never overwrites a key."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

    domain = domain.lower().rstrip(".")
    if not _valid_name(domain) or "." not in domain:
        raise ValueError(f"{domain!r} is not a domain name such as 'example.gov.uk'")
    if not _valid_name(selector):
        raise ValueError(f"{selector!r} is not a selector: use letters, digits and hyphens, e.g. 's2025'")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; use one of {', '.join(ALGORITHMS)}")
    directory = Path(directory)
    if not directory.exists():
        directory.mkdir(parents=True, mode=0o700)
        os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask
    path = directory / f"{domain}.{selector}.key"

    if algorithm == RSA_SHA256:
        key = rsa.generate_private_key(public_exponent=65537, key_size=KEYGEN_RSA_BITS)
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption())
        public = key.public_key().public_bytes(serialization.Encoding.DER,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
        value = f"v=DKIM1; k=rsa; p={base64.b64encode(public).decode()}"
    else:
        key = ed25519.Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        value = f"v=DKIM1; k=ed25519; p={base64.b64encode(public).decode()}"

    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # FileExistsError: never replace a key
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, pem)
        os.fsync(fd)
    finally:
        os.close(fd)
    return path, dns_txt_record(domain, selector, value)


def cmd_dkim_keygen(domain: str, selector: str, directory: str | os.PathLike[str],
                    algorithm: str = RSA_SHA256) -> int:
    """`dlp-gateway dkim-keygen DOMAIN SELECTOR`: make the key, say what to publish and what to do next."""
    try:
        path, record = keygen(domain, selector, directory, algorithm)
    except FileExistsError as e:
        print(f"dlp-gateway: {e.filename} already exists; nothing was changed. Keys are rotated by making "
              "one under a new selector (e.g. the year and month), publishing it, then switching to it.",
              file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"dlp-gateway: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"dlp-gateway: cannot write the key in {directory}: {e.strerror}", file=sys.stderr)
        return 1
    domain = domain.lower().rstrip(".")
    path = path.resolve()
    print(f"""DKIM key for {domain}, selector {selector}, written to:
  {path}
It is readable by its owner only. If the gateway runs as another user, make that user its owner.

1. Publish this TXT record in the DNS zone of {domain}:

{record}

2. Check that it is published (it may take a while to reach every resolver):
  dig +short TXT {selector}._domainkey.{domain}

3. Then add the key to the gateway configuration and restart the gateway:
  dkim:
    domains:
      {domain}: {{selector: "{selector}", key_file: "{path}"}}
  and check it with: dlp-gateway check-config --config FILE

Publish the record before the gateway signs with the key: until then receivers cannot verify
the signatures, and a domain with a strict DMARC policy may have its mail rejected.""")
    return 0
