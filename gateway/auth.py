"""Authentication: hashed client secrets, operator tokens, failed-logon lockout, IP allow-lists.

Client secrets are stored as scrypt hashes (a slow KDF, so a stolen config does not give away
the secrets) and compared in constant time. Operator tokens for the admin plane are long random
strings, so a fast SHA-256 digest is enough; they are compared in constant time too.
The lockout counts failures per user in a sliding window and is pure state with time passed in.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1


def hash_secret(secret: str, *, n: int = SCRYPT_N, salt: bytes | None = None) -> str:
    """'scrypt$N$r$p$salt$hash' for a client secret (what goes in the config file)."""
    salt = salt or os.urandom(16)
    digest = hashlib.scrypt(secret.encode(), salt=salt, n=n, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${n}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_secret(stored: str, secret: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(secret.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r),
                             p=int(p), dklen=len(digest) // 2)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got.hex(), digest)


def check_secret_hash(stored: str) -> str | None:
    """None when ``stored`` looks like a hash from ``hash_secret``, else what is wrong."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return "expected 'scrypt$N$r$p$salt$hash' (make one with `fengkong hash-secret`)"
    try:
        int(parts[1]), int(parts[2]), int(parts[3]), bytes.fromhex(parts[4]), bytes.fromhex(parts[5])
    except ValueError:
        return "malformed scrypt hash"
    return None


def hash_token(token: str) -> str:
    return "sha256$" + hashlib.sha256(token.encode()).hexdigest()


def verify_token(stored: str, token: str) -> bool:
    return hmac.compare_digest(stored, hash_token(token))


def new_token() -> str:
    return secrets.token_urlsafe(32)


def ip_allowed(allow: list[str], address: str) -> bool:
    """Whether ``address`` is inside one of the networks in ``allow`` (empty list = any)."""
    if not allow:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(net, strict=False) for net in allow)


class Lockout:
    """Locks a user out after ``max_failures`` failed logons within ``window_ns``."""

    def __init__(self, max_failures: int, window_ns: int, lockout_ns: int) -> None:
        self.max_failures = max_failures
        self.window_ns = window_ns
        self.lockout_ns = lockout_ns
        self._failures: dict[str, list[int]] = {}
        self._locked_until: dict[str, int] = {}

    def locked(self, user: str, now: int) -> bool:
        until = self._locked_until.get(user)
        if until is None:
            return False
        if now >= until:
            del self._locked_until[user]
            return False
        return True

    def failed(self, user: str, now: int) -> bool:
        """Record a failure; True when it locks the user out."""
        recent = [t for t in self._failures.get(user, []) if t > now - self.window_ns]
        recent.append(now)
        if len(recent) >= self.max_failures:
            self._failures.pop(user, None)
            self._locked_until[user] = now + self.lockout_ns
            return True
        self._failures[user] = recent
        return False

    def succeeded(self, user: str) -> None:
        self._failures.pop(user, None)
