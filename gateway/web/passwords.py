"""Password hashes for the review UI's local users: scrypt from the standard library.

A stored hash is one string holding everything needed to check it again:
"scrypt$n=32768,r=8,p=1$SALT$HASH" (salt and hash in unpadded base64). It never
holds or logs the password, and checking compares in constant time.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

SCHEME = "scrypt"
N, R, P = 2**15, 8, 1           # about 32 MiB and a tenth of a second per check on a server core
SALT_BYTES = 16
HASH_BYTES = 32
_MAX_N = 2**20                  # parameters beyond these are refused, so a bad config line cannot exhaust memory
_MAX_R = 32
_MAX_P = 16

_FORMAT = re.compile(r"scrypt\$n=(\d+),r=(\d+),p=(\d+)\$([A-Za-z0-9+/]+={0,2})\$([A-Za-z0-9+/]+={0,2})")


class PasswordHashError(ValueError):
    """A stored hash that cannot be used; the message says what form it should have."""


@dataclass(frozen=True)
class PasswordHash:
    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    def __str__(self) -> str:
        return f"{SCHEME}$n={self.n},r={self.r},p={self.p}${_b64(self.salt)}${_b64(self.digest)}"

    @classmethod
    def parse(cls, stored: str) -> "PasswordHash":
        m = _FORMAT.fullmatch(stored.strip())
        if m is None:
            raise PasswordHashError("is not a password hash from 'dlp-gateway admin-passwd NAME' "
                                    "(expected scrypt$n=...,r=...,p=...$SALT$HASH)")
        n, r, p = (int(m.group(i)) for i in (1, 2, 3))
        if n < 2 or n & (n - 1) or n > _MAX_N or not 1 <= r <= _MAX_R or not 1 <= p <= _MAX_P:
            raise PasswordHashError(f"has scrypt parameters n={n}, r={r}, p={p} outside what the gateway "
                                    f"accepts (n a power of 2 up to {_MAX_N}, r up to {_MAX_R}, p up to {_MAX_P})")
        salt, digest = _unb64(m.group(4)), _unb64(m.group(5))
        if len(salt) < 8 or len(digest) < 16:
            raise PasswordHashError("has a salt or hash too short to be one made by 'dlp-gateway admin-passwd'")
        return cls(n, r, p, salt, digest)

    def matches(self, password: str) -> bool:
        return hmac.compare_digest(_scrypt(password, self.salt, self.n, self.r, self.p, len(self.digest)),
                                   self.digest)


def hash_password(password: str) -> str:
    """The line to store for `password`, with a new random salt."""
    salt = secrets.token_bytes(SALT_BYTES)
    return str(PasswordHash(N, R, P, salt, _scrypt(password, salt, N, R, P, HASH_BYTES)))


def verify_password(stored: str, password: str) -> bool:
    """Whether `password` is the one `stored` was made from; False for a stored value that is not a hash."""
    try:
        return PasswordHash.parse(stored).matches(password)
    except PasswordHashError:
        return False


# Checked against when the user name is unknown, so a wrong name takes as long as a wrong password.
_DUMMY = PasswordHash(N, R, P, b"\0" * SALT_BYTES, b"\0" * HASH_BYTES)


def spend_equal_time(password: str) -> None:
    _DUMMY.matches(password)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, length: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=length,
                          maxmem=128 * r * (n + p + 2) + 1024 * 1024)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    text = text.rstrip("=")
    return base64.b64decode(text + "=" * (-len(text) % 4))
