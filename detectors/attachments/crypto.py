"""Encrypted and signed files attached as files: OpenPGP (armoured or binary packets) and
S/MIME, PKCS #7 or CMS objects (.p7m, .p7s: DER, PEM, or a whole S/MIME entity).

Encrypted is decided from the structure, not the name: an OpenPGP message whose packets
start with an encrypted session key or encrypted data, or a CMS object of type
envelopedData, authEnvelopedData or encryptedData. A *signed* object is not encrypted:
its content (an OpenPGP literal-data packet, possibly compressed; the eContent of a CMS
signedData) comes back as a member and is read like any file. A detached signature has
nothing inside and is inspected.

libmagic names armoured OpenPGP "application/pgp-encrypted" (whether or not it is), but
binary OpenPGP and DER PKCS #7 only "application/octet-stream", and PEM or S/MIME text
"text/plain": so this module also reads unknown bytes (answering as the framework does
when they are neither), and `pgp_or_pkcs7_kind` lets the text extractor tell an
encrypted object from text. Bounded: decompression goes through the budget, nesting
of ASN.1 and packets is capped. Never writes, never decrypts.
"""

from __future__ import annotations

import base64
import binascii
import bz2
import email
import email.policy
import io
import re
import zlib
from dataclasses import dataclass

from detectors.attachments.core import Budget, Extraction, Limits, Unreadable, extractor

# ---------------------------------------------------------------------------------------
# Entry points

PGP_TYPES = ("application/pgp-encrypted", "application/pgp", "application/x-pgp")
PKCS7_TYPES = ("application/pkcs7-mime", "application/x-pkcs7-mime", "application/pkcs7",
               "application/x-pkcs7-signature", "application/pkcs7-signature")


@extractor(*PGP_TYPES, *PKCS7_TYPES)
def read_crypto(data: bytes, budget: Budget) -> Extraction:
    found = read_crypto_object(data, budget)
    if found is None:
        raise Unreadable("not an OpenPGP or PKCS #7 object")
    return found


@extractor("application/octet-stream")
def read_unknown_bytes(data: bytes, budget: Budget) -> Extraction:
    """Bytes libmagic cannot name: binary OpenPGP or DER PKCS #7 are read; anything else
    cannot be inspected, in the framework's own words."""
    found = read_crypto_object(data, budget)
    if found is None:
        return Extraction(incomplete="the gateway cannot read files of type application/octet-stream")
    return found


def pgp_or_pkcs7_kind(data: bytes) -> str | None:
    """Why `data` is (or holds) an encrypted OpenPGP or PKCS #7 / S/MIME object — e.g.
    "OpenPGP encrypted message" — or None when it is not one (signed-only objects and
    ordinary text are None). Cheap on text that is not one: a few substring searches."""
    try:
        found = read_crypto_object(data, Budget(_PROBE_LIMITS), probe=True)
    except Exception:
        return None
    return found.encrypted if found is not None and found.encrypted else None


def read_crypto_object(data: bytes, budget: Budget, probe: bool = False) -> Extraction | None:
    """An Extraction for an OpenPGP or PKCS #7 object in any of its forms, else None.
    Text that merely contains an armoured OpenPGP message is encrypted in part."""
    if data[:1] == b"\x30":
        kind = _cms_kind(data)
        if kind is not None:
            return _read_cms(data, kind, budget, probe)
    if data[:1] and data[0] & 0x80 and _is_openpgp(data):
        return _read_pgp(data, budget, probe)
    if b"-----BEGIN PGP MESSAGE-----" in data:
        binary = _dearmour(data)
        if binary is None:
            return Extraction(incomplete="damaged OpenPGP armour") if not probe else None
        return _read_pgp(binary, budget, probe)
    pem = _PEM.search(data)
    if pem:
        try:
            der = base64.b64decode(b"".join(pem.group(1).split()), validate=True)
        except (binascii.Error, ValueError):
            return None
        kind = _cms_kind(der)
        return _read_cms(der, kind, budget, probe) if kind is not None else None
    if _SMIME_ENTITY.search(data[:8192]):
        return _read_smime_entity(data, budget, probe)
    return None


# A probe reads structure, never content: a small budget is enough and protects the caller.
_PROBE_LIMITS = Limits(max_depth=2, max_members=10, max_expanded_bytes=16 << 20, max_seconds=5.0)

# ---------------------------------------------------------------------------------------
# OpenPGP (RFC 4880, RFC 9580)

_PKESK, _SIG, _SKESK, _ONE_PASS, _SECRET_KEY, _PUBLIC_KEY, _SECRET_SUBKEY, _COMPRESSED = 1, 2, 3, 4, 5, 6, 7, 8
_SED, _MARKER, _LITERAL, _TRUST, _USER_ID, _PUBLIC_SUBKEY, _SEIPD, _AEAD = 9, 10, 11, 12, 13, 14, 18, 20
_ENCRYPTED_TAGS = {_PKESK, _SKESK, _SED, _SEIPD, _AEAD}
_PGP_TAGS = {_PKESK, _SIG, _SKESK, _ONE_PASS, _SECRET_KEY, _PUBLIC_KEY, _COMPRESSED, _SED, _MARKER, _LITERAL,
             _SEIPD, _AEAD}
_MAX_PACKETS = 10_000
_MAX_COMPRESSION_DEPTH = 4


@dataclass
class _Packet:
    tag: int
    body: bytes
    truncated: bool


# The first byte of each packet's body where RFC 4880 and RFC 9580 fix it: a version, an
# algorithm or a format. Unknown bytes that merely start with a packet-like byte fail these.
_FIRST_BYTES: dict[int, set[int]] = {
    _PKESK: {3, 6}, _SKESK: {4, 5, 6}, _SIG: {3, 4, 5, 6}, _ONE_PASS: {3, 6}, _SECRET_KEY: {3, 4, 5, 6},
    _PUBLIC_KEY: {3, 4, 5, 6}, _SECRET_SUBKEY: {3, 4, 5, 6}, _PUBLIC_SUBKEY: {3, 4, 5, 6}, _COMPRESSED: {0, 1, 2, 3},
    _LITERAL: set(b"btu1lm"), _MARKER: {ord("P")}, _SEIPD: {1, 2}, _AEAD: {1},
}


def _is_openpgp(data: bytes) -> bool:
    """Unknown bytes that are a whole OpenPGP message: every packet complete and well formed."""
    try:
        packets = _packets(data)
    except ValueError:
        return False
    return bool(packets) and all(
        not p.truncated and p.tag in _PGP_TAGS | {_USER_ID, _TRUST, _SECRET_SUBKEY, _PUBLIC_SUBKEY}
        and (p.tag not in _FIRST_BYTES or (p.body[:1] and p.body[0] in _FIRST_BYTES[p.tag])) for p in packets)


def _pgp_first_tag(data: bytes) -> int | None:
    b = data[0]
    if not b & 0x80:
        return None
    return b & 0x3F if b & 0x40 else (b >> 2) & 0x0F


def _packets(data: bytes) -> list[_Packet]:
    """The packets of an OpenPGP message; the last may be cut short (truncated)."""
    packets: list[_Packet] = []
    pos = 0
    while pos < len(data) and len(packets) < _MAX_PACKETS:
        b = data[pos]
        if not b & 0x80:
            raise ValueError("not an OpenPGP packet")
        pos += 1
        chunks: list[bytes] = []
        if b & 0x40:                                   # new format: lengths may be partial
            tag = b & 0x3F
            while True:
                if pos >= len(data):
                    packets.append(_Packet(tag, b"".join(chunks), True))
                    return packets
                o = data[pos]
                if o < 192:
                    length, pos = o, pos + 1
                    partial = False
                elif o < 224:
                    if pos + 2 > len(data):
                        packets.append(_Packet(tag, b"".join(chunks), True))
                        return packets
                    length, pos = ((o - 192) << 8) + data[pos + 1] + 192, pos + 2
                    partial = False
                elif o == 255:
                    length, pos = int.from_bytes(data[pos + 1:pos + 5], "big"), pos + 5
                    partial = False
                else:
                    length, pos = 1 << (o & 0x1F), pos + 1
                    partial = True
                chunks.append(data[pos:pos + length])
                pos += length
                if not partial:
                    break
        else:                                          # old format
            tag, kind = (b >> 2) & 0x0F, b & 0x03
            if kind == 3:
                length = len(data) - pos
            else:
                size = (1, 2, 4)[kind]
                length = int.from_bytes(data[pos:pos + size], "big")
                pos += size
            chunks.append(data[pos:pos + length])
            pos += length
        body = b"".join(chunks)
        packets.append(_Packet(tag, body, pos > len(data)))
    return packets


def _read_pgp(data: bytes, budget: Budget, probe: bool, depth: int = 0) -> Extraction:
    try:
        packets = _packets(data)
    except ValueError:
        if _pgp_first_tag(data) in _ENCRYPTED_TAGS:
            return Extraction(encrypted="OpenPGP encrypted message")
        return Extraction(incomplete="damaged OpenPGP data")
    tags = [p.tag for p in packets if p.tag != _MARKER]
    if tags and tags[0] in _ENCRYPTED_TAGS:
        return Extraction(encrypted="OpenPGP encrypted message")
    if any(t in _ENCRYPTED_TAGS for t in tags):
        return Extraction(encrypted="OpenPGP message with encrypted parts")
    if probe:
        return Extraction()             # signed or compressed: not encrypted (encryption is never inside)
    members: list[tuple[str, bytes]] = []
    problems: list[str] = []
    for p in packets:
        if p.tag == _COMPRESSED:
            if depth >= _MAX_COMPRESSION_DEPTH:
                problems.append("OpenPGP data compressed too many times")
                continue
            try:
                inner = _decompress(p.body, budget)
            except (ValueError, zlib.error, OSError, EOFError):
                problems.append("damaged OpenPGP compressed data")
                continue
            found = _read_pgp(inner, budget, probe, depth + 1)
            if found.encrypted:
                return found
            members += found.members
            if found.incomplete:
                problems.append(found.incomplete)
        elif p.tag == _LITERAL and len(p.body) >= 6:
            name_len = p.body[1]
            name = p.body[2:2 + name_len].decode("utf-8", errors="replace")
            content = p.body[2 + name_len + 4:]
            name = re.split(r"[\\/]", name)[-1].strip()
            if not name or name == "_CONSOLE":
                name = "signed-content"
            members.append((name, content))
        if p.truncated:
            problems.append("the OpenPGP data is cut short")
    if any(t in (_SECRET_KEY, _SECRET_SUBKEY) for t in tags) and not members:
        return Extraction(incomplete="an OpenPGP private key")
    return Extraction(members=members, incomplete="; ".join(dict.fromkeys(problems)))


def _decompress(body: bytes, budget: Budget) -> bytes:
    if not body:
        raise ValueError("empty")
    algorithm, payload = body[0], body[1:]
    if algorithm == 0:
        return payload
    if algorithm == 1:
        stream: io.RawIOBase | io.BufferedIOBase = _ZlibReader(payload, -15)
    elif algorithm == 2:
        stream = _ZlibReader(payload, 15)
    elif algorithm == 3:
        stream = bz2.BZ2File(io.BytesIO(payload))
    else:
        raise ValueError("unknown compression")
    return budget.read(stream, len(payload), "OpenPGP compressed data")  # type: ignore[arg-type]


class _ZlibReader(io.RawIOBase):
    """Raw deflate (RFC 1951) or zlib (RFC 1950) as a stream, for Budget.read."""

    def __init__(self, data: bytes, wbits: int) -> None:
        self._d = zlib.decompressobj(wbits)
        self._data = data

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        out = self._d.decompress(self._d.unconsumed_tail or self._data, max(n, 1))
        self._data = b""
        return out


_ARMOUR = re.compile(rb"-----BEGIN PGP MESSAGE-----\r?\n(.*?)-----END PGP MESSAGE-----", re.DOTALL)


def _dearmour(data: bytes) -> bytes | None:
    m = _ARMOUR.search(data)
    if m is None:                               # no END line: read what there is
        start = data.find(b"-----BEGIN PGP MESSAGE-----")
        block = data[start + 27:]
    else:
        block = m.group(1)
    lines = block.replace(b"\r", b"").split(b"\n")
    # Armour headers ("Version: ...") end at the first blank line, if there are any.
    if any(b":" in line for line in lines[:1]) and b"" in lines:
        lines = lines[lines.index(b"") + 1:]
    payload = b"".join(line.strip() for line in lines
                       if line.strip() and not line.startswith(b"=") and not line.startswith(b"-----"))
    try:
        return base64.b64decode(payload + b"=" * (-len(payload) % 4))
    except (binascii.Error, ValueError):
        return None


# ---------------------------------------------------------------------------------------
# CMS / PKCS #7 (RFC 5652), read with a small BER reader (definite and indefinite lengths)

_OID_PREFIX = bytes.fromhex("2a864886f70d01")           # 1.2.840.113549.1
_CMS_TYPES = {
    bytes.fromhex("2a864886f70d010701"): "data",
    bytes.fromhex("2a864886f70d010702"): "signedData",
    bytes.fromhex("2a864886f70d010703"): "envelopedData",
    bytes.fromhex("2a864886f70d010706"): "encryptedData",
    bytes.fromhex("2a864886f70d0109100117"): "authEnvelopedData",
    bytes.fromhex("2a864886f70d0109100109"): "compressedData",
}
_ENCRYPTED_CMS = {"envelopedData": "S/MIME (PKCS #7) encrypted message",
                  "authEnvelopedData": "S/MIME (PKCS #7) encrypted message",
                  "encryptedData": "PKCS #7 data encrypted with a password"}
_MAX_BER_DEPTH = 32
_PEM_LABEL = rb"(?:PKCS7|PKCS #7 SIGNED DATA|CMS)"
_PEM = re.compile(rb"-----BEGIN " + _PEM_LABEL + rb"-----(.*?)-----END " + _PEM_LABEL + rb"-----", re.DOTALL)
_SMIME_ENTITY = re.compile(rb"^content-type:\s*application/(?:x-)?pkcs7-mime", re.IGNORECASE | re.MULTILINE)


@dataclass(frozen=True)
class _Tlv:
    tag: int
    start: int              # first byte of the value
    end: int                # one past the value (for indefinite length: before the end-of-contents)
    next: int               # where the next element starts


def _tlv(data: bytes, pos: int, depth: int = 0) -> _Tlv:
    if depth > _MAX_BER_DEPTH:
        raise ValueError("nested too deep")
    if pos + 2 > len(data):
        raise ValueError("truncated")
    tag = data[pos]
    if tag & 0x1F == 0x1F:
        raise ValueError("high tag numbers are not used by CMS")
    first = data[pos + 1]
    pos += 2
    if first == 0x80:                                   # indefinite: children up to 00 00
        if not tag & 0x20:
            raise ValueError("indefinite length on a primitive")
        start = pos
        while True:
            if pos + 2 > len(data):
                raise ValueError("truncated")
            if data[pos] == 0 and data[pos + 1] == 0:
                return _Tlv(tag, start, pos, pos + 2)
            pos = _tlv(data, pos, depth + 1).next
    if first & 0x80:
        size = first & 0x7F
        if size > 4 or pos + size > len(data):
            raise ValueError("bad length")
        length = int.from_bytes(data[pos:pos + size], "big")
        pos += size
    else:
        length = first
    if pos + length > len(data):
        raise ValueError("truncated")
    return _Tlv(tag, pos, pos + length, pos + length)


def _children(data: bytes, tlv: _Tlv) -> list[_Tlv]:
    out: list[_Tlv] = []
    pos = tlv.start
    while pos < tlv.end:
        child = _tlv(data, pos, 1)
        out.append(child)
        pos = child.next
    return out


def _cms_kind(data: bytes) -> str | None:
    """The content type of a ContentInfo, or None when `data` is not one."""
    try:
        outer = _tlv(data, 0)
        if outer.tag != 0x30:
            return None
        oid = _tlv(data, outer.start, 1)
        if oid.tag != 0x06:
            return None
        return _CMS_TYPES.get(data[oid.start:oid.end])
    except ValueError:
        return None


def _read_cms(data: bytes, kind: str, budget: Budget, probe: bool) -> Extraction:
    if kind in _ENCRYPTED_CMS:
        return Extraction(encrypted=_ENCRYPTED_CMS[kind])
    if kind != "signedData":
        return Extraction(incomplete=f"PKCS #7 {kind} not unpacked")
    if probe:
        return Extraction()
    try:
        content = _signed_content(data)
    except ValueError:
        return Extraction(incomplete="S/MIME signed data not unpacked (damaged)")
    if content is None:
        return Extraction()                             # a detached signature: nothing inside
    budget.take_bytes(len(content))
    name = "signed-content.eml" if _looks_like_mime(content) else "signed-content"
    return Extraction(members=[(name, content)])


def _signed_content(data: bytes) -> bytes | None:
    """The eContent OCTET STRING of a SignedData, or None for a detached signature."""
    outer = _tlv(data, 0)
    content_info = _children(data, outer)
    explicit = content_info[1]                          # [0] EXPLICIT SignedData
    signed = _children(data, explicit)[0]
    encap = _children(data, signed)[2]                  # version, digestAlgorithms, encapContentInfo
    parts = _children(data, encap)
    if len(parts) < 2:
        return None
    octets = _children(data, parts[1])[0]               # [0] EXPLICIT OCTET STRING
    return _octet_string(data, octets, 0)


def _octet_string(data: bytes, tlv: _Tlv, depth: int) -> bytes:
    if tlv.tag == 0x04:
        return data[tlv.start:tlv.end]
    if tlv.tag == 0x24 and depth < _MAX_BER_DEPTH:      # constructed: the concatenation of its parts
        return b"".join(_octet_string(data, child, depth + 1) for child in _children(data, tlv))
    raise ValueError("not an OCTET STRING")


def _looks_like_mime(content: bytes) -> bool:
    head = content[:2048].lower()
    return head.startswith((b"content-type:", b"mime-version:", b"content-transfer-encoding:")) or (
        b"\ncontent-type:" in head and b"\n\n" in content[:8192].replace(b"\r\n", b"\n"))


def _read_smime_entity(data: bytes, budget: Budget, probe: bool) -> Extraction | None:
    """A saved S/MIME part (headers, a blank line, base64) as a file."""
    part = email.message_from_bytes(data.lstrip(), policy=email.policy.compat32)
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        return None
    kind = _cms_kind(payload)
    if kind is None:
        smime_type = (part.get_param("smime-type") or "").lower()
        if smime_type in ("enveloped-data", "authenveloped-data"):
            return Extraction(encrypted="S/MIME (PKCS #7) encrypted message")
        return None
    return _read_cms(payload, kind, budget, probe)
