"""Encryption at rest of held mail: quarantine key files, and the format of a sealed file.

A key file is one line of base64 holding 32 random bytes (AES-256), readable by the
gateway's user only. A sealed file is a fixed header (magic, format version, key id,
nonce) then AES-GCM ciphertext with its tag; the associated data is that header and
the item's reference, so a file altered, damaged or moved to another item's name does
not open. This module never logs or returns key material, and never deletes anything.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32
KEY_ID_BYTES = 8
NONCE_BYTES = 12
# Not the start of any RFC 5322 message (0x89 cannot begin a header name), so a plain
# file written with no key configured is never mistaken for a sealed one.
MAGIC = b"\x89DLPQ\r\n\x1a"
VERSION = 1
HEADER_BYTES = len(MAGIC) + 1 + KEY_ID_BYTES + NONCE_BYTES
KEYGEN_HINT = "make one with 'dlp-gateway quarantine-keygen FILE'"


class KeyFileError(ValueError):
    """A key file cannot be used; the message names the file and says what to do."""


class SealError(Exception):
    """A sealed file cannot be opened; the message says why, without any content."""


@dataclass(frozen=True)
class QuarantineKey:
    path: str
    id: bytes                                      # first 8 bytes of SHA-256 of the key
    secret: bytes = field(repr=False)

    @property
    def hex_id(self) -> str:
        return self.id.hex()


def key_id(secret: bytes) -> bytes:
    return hashlib.sha256(secret).digest()[:KEY_ID_BYTES]


def load_key(path: str | os.PathLike[str]) -> QuarantineKey:
    """The key in `path`; KeyFileError if it is missing, unreadable, open to every user or not 32 bytes."""
    source = f"quarantine key file {path}"
    if not str(path):
        raise KeyFileError(f"names no file; give the path of a key file ({KEYGEN_HINT})")
    try:
        with open(path, "rb") as fh:
            mode = os.fstat(fh.fileno()).st_mode
            text = fh.read(4096)
    except OSError as e:
        hint = {2: f" ({KEYGEN_HINT})", 13: " (is it readable by the user the gateway runs as?)"}.get(e.errno or 0, "")
        raise KeyFileError(f"cannot read the {source}: {e.strerror}{hint}") from None
    if not stat.S_ISREG(mode):
        raise KeyFileError(f"the {source} is not a regular file")
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        raise KeyFileError(f"the {source} can be read or changed by every user (mode {stat.S_IMODE(mode):04o}); "
                           f"make it readable by the gateway's user only: chmod 600 {path}")
    try:
        secret = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyFileError(f"the {source} is not one line of base64 ({KEYGEN_HINT})") from None
    if len(secret) != KEY_BYTES:
        raise KeyFileError(f"the {source} holds {len(secret)} bytes; a quarantine key is {KEY_BYTES} random bytes "
                           f"in base64 ({KEYGEN_HINT})")
    return QuarantineKey(str(path), key_id(secret), secret)


def keygen(path: str | os.PathLike[str]) -> QuarantineKey:
    """A new random key written to `path` (mode 0600; its directory 0700 when created). Never overwrites:
    FileExistsError if `path` exists."""
    path = Path(path)
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700)
        os.chmod(path.parent, 0o700)  # mkdir's mode is filtered by the umask
    secret = os.urandom(KEY_BYTES)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, base64.b64encode(secret) + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    return QuarantineKey(str(path), key_id(secret), secret)


def sealed_key_id(blob: bytes) -> bytes | None:
    """The id of the key that sealed `blob`, or None for a plain (unencrypted) file."""
    if not blob.startswith(MAGIC):
        return None
    return blob[len(MAGIC) + 1:len(MAGIC) + 1 + KEY_ID_BYTES]


class KeyRing:
    """The configured keys: the first seals, every one opens."""

    def __init__(self, keys: Sequence[QuarantineKey] = ()):
        self.keys = tuple(keys)
        self._by_id = {k.id: k for k in self.keys}

    @classmethod
    def from_files(cls, paths: Sequence[str]) -> "KeyRing":
        return cls([load_key(p) for p in paths])

    @property
    def current(self) -> QuarantineKey | None:
        return self.keys[0] if self.keys else None

    def seal(self, data: bytes, item_id: str) -> bytes:
        """`data` encrypted under the current key and bound to `item_id`; plain `data` when no key is set."""
        key = self.current
        if key is None:
            return data
        nonce = os.urandom(NONCE_BYTES)
        header = MAGIC + bytes([VERSION]) + key.id + nonce
        return header + AESGCM(key.secret).encrypt(nonce, data, header + item_id.encode("utf-8"))

    def open(self, blob: bytes, item_id: str) -> bytes:
        """The plaintext of a file written by `seal` for `item_id` (a plain file as it is); SealError otherwise."""
        if not blob.startswith(MAGIC):
            return blob
        if len(blob) < HEADER_BYTES + 16:
            raise SealError("the file is cut short: it ends inside its encryption header")
        version = blob[len(MAGIC)]
        if version != VERSION:
            raise SealError(f"the file is in encryption format {version}, which this version of the gateway "
                            "does not read; use the version that wrote it")
        kid = blob[len(MAGIC) + 1:len(MAGIC) + 1 + KEY_ID_BYTES]
        key = self._by_id.get(kid)
        if key is None:
            configured = ", ".join(k.hex_id for k in self.keys) or "none"
            raise SealError(f"it is encrypted with key {kid.hex()}, which is not in quarantine.keys "
                            f"(configured: {configured}); add that key file back to quarantine.keys to read it")
        header, ciphertext = blob[:HEADER_BYTES], blob[HEADER_BYTES:]
        nonce = header[-NONCE_BYTES:]
        try:
            return AESGCM(key.secret).decrypt(nonce, ciphertext, header + item_id.encode("utf-8"))
        except InvalidTag:
            raise SealError(f"it does not decrypt with key {kid.hex()}: the file was altered or damaged, "
                            "or it is another item's file put in this one's place") from None
